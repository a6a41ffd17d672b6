/**
 * A network namespace as a host boundary for the simulated host, and a small driver script that
 * runs one host operation (from dist/) in a separate node process, e.g. under `ip netns exec`.
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {execa} from 'execa'

import {DIST_INDEX} from './sim-host.js'

export interface Netns {
  name: string
  /** Runs argv inside the namespace. */
  exec(argv: string[]): Promise<{stdout: string; stderr: string; exitCode: number | undefined}>
  /** Kills everything still running in the namespace and deletes it. Never throws. */
  remove(): Promise<void>
}

export async function addNetns(): Promise<Netns> {
  const name = `xlts-test-${crypto.randomBytes(4).toString('hex')}`
  await execa('ip', ['netns', 'add', name])
  return {
    name,
    async exec(argv) {
      const r = await execa('ip', ['netns', 'exec', name, ...argv], {reject: false})
      return {stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode}
    },
    async remove() {
      for (let round = 0; round < 10; round++) {
        const r = await execa('ip', ['netns', 'pids', name], {reject: false})
        const pids = r.stdout.split(/\s+/).filter(Boolean).map(Number)
        if (pids.length === 0) break
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL')
          } catch {
            // gone
          }
        }
        await new Promise((res) => setTimeout(res, 25))
      }
      await execa('ip', ['netns', 'delete', name], {reject: false})
    },
  }
}

/** The netns a process lives in (`ip netns identify`): '' for the default namespace. */
export async function netnsOf(pid: number): Promise<string> {
  return (await execa('ip', ['netns', 'identify', String(pid)])).stdout.trim()
}

/** The libxl layer in dist/, beside DIST_INDEX (the back ends). */
const DIST_LIBXL = path.join(path.dirname(DIST_INDEX), '..', 'libxl', 'index.js')

const DRIVER = `
import {createHypervisor} from ${JSON.stringify(DIST_INDEX)}
import {createDomainBuilt, destroyDomain, listDomains, renameDomain} from ${JSON.stringify(DIST_LIBXL)}
const [root, op, ...args] = process.argv.slice(2)
const json = (v) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? String(x) : x))
try {
  const hv = createHypervisor({backend: 'sim', root})
  const id = Number(args[0])
  let out
  switch (op) {
    case 'create': out = await createDomainBuilt(hv, JSON.parse(args[0]), JSON.parse(args[1])); break
    case 'list': out = await listDomains(hv); break
    case 'info': out = await hv.info(id); break
    case 'pause': out = await hv.pause(id); break
    case 'unpause': out = await hv.unpause(id); break
    case 'destroy': out = await destroyDomain(hv, id); break
    case 'rename': out = await renameDomain(hv, id, args[1]); break
    case 'checksum': out = await hv.checksum(id); break
    case 'runtime': out = await hv.runtime(id); break
    case 'record': out = hv.record(id); break
    case 'hostid': out = hv.hostId; break
    default: throw new Error('unknown op ' + op)
  }
  hv.close()
  process.stdout.write(json({ok: true, out}) + '\\n')
} catch (e) {
  process.stdout.write(json({ok: false, code: e.code, message: e.message}) + '\\n')
}
`

/** Writes the driver script into a fresh temporary folder; returns its path. */
export function writeDriver(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-driver-'))
  const file = path.join(dir, 'driver.mjs')
  fs.writeFileSync(file, DRIVER)
  return file
}

export interface DriverAnswer<T> {
  ok: boolean
  out?: T
  code?: string
  message?: string
}

/** Runs `node driver root op args...`, inside `ns` when given. */
export async function drive<T = unknown>(driver: string, root: string, op: string, args: unknown[] = [], ns?: Netns): Promise<DriverAnswer<T>> {
  const argv = [process.execPath, driver, root, op, ...args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a)))]
  const r = ns ? await ns.exec(argv) : await execa(argv[0]!, argv.slice(1), {reject: false})
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as DriverAnswer<T>
  } catch {
    throw new Error(`driver ${op} said: ${r.stdout}\n${r.stderr}`)
  }
}
