/**
 * Running the built CLI as an operator does (`node bin/run.js ...`), on simulated hosts in temp
 * folders, and cleaning up after it: every domain destroyed, every domain process gone, every
 * /dev/shm/xl-ts-<hostId>-* memory file removed, the folder removed, also when a test failed.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'
import {expect} from 'vitest'

import {reapDeviceModels} from '../../src/toolstack/device-model/index.js'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const BIN = path.join(ROOT, 'bin', 'run.js')

export {ensureBuilt} from './build.js'

export interface Run {
  exitCode: number
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** The host: passed as XL_TS_ROOT (use `--root` in `args` to test the flag). */
  root?: string
  /** Run the CLI inside this network namespace (`ip netns exec NS`). */
  netns?: string
  env?: Record<string, string>
  input?: string
  timeout?: number
}

/** Runs `xl-ts ARGS` with the sim back end; never throws for a non-zero exit. */
export async function xl(args: readonly string[], opts: RunOptions = {}): Promise<Run> {
  const env: Record<string, string> = {XL_TS_BACKEND: 'sim', ...opts.env}
  if (opts.root !== undefined) env.XL_TS_ROOT = opts.root
  const [file, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, process.execPath, BIN, ...args]] : [process.execPath, [BIN, ...args]]
  const r = await execa(file as string, argv as string[], {
    cwd: ROOT,
    env,
    extendEnv: true,
    reject: false,
    stripFinalNewline: false,
    timeout: opts.timeout ?? 60_000,
    ...(opts.input !== undefined ? {input: opts.input} : {stdin: 'ignore'}),
  })
  return {exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr)}
}

/** The lines of some output, without the empty ones. */
export function lines(text: string): string[] {
  return text.split('\n').filter(l => l.length > 0)
}

/** Asserts that stderr holds exactly one line, with no stack trace, and returns it. */
export function oneErrorLine(r: Run): string {
  const l = lines(r.stderr)
  expect(l, `stderr: ${r.stderr}`).toHaveLength(1)
  expect(r.stderr).not.toMatch(/^\s+at /m)
  return l[0] as string
}

// ---- hosts ----------------------------------------------------------------------------------

/** A new simulated host: an empty state folder. Short, as its control sockets must fit sun_path. */
export function newHost(tag = 'h'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `xlts-${tag}-`))
}

/** The host's id (names its /dev/shm files), once the sim has written host.json. */
export function hostId(root: string): string | undefined {
  try {
    return (JSON.parse(fs.readFileSync(path.join(root, 'host.json'), 'utf8')) as {hostId?: string}).hostId
  } catch {
    return undefined
  }
}

/** The guest memory files of a host in /dev/shm. */
export function shmFiles(root: string): string[] {
  const id = hostId(root)
  if (!id) return []
  return fs
    .readdirSync('/dev/shm')
    .filter(f => f.startsWith(`xl-ts-${id}-`))
    .map(f => path.join('/dev/shm', f))
}

/** The domain folders of a host. */
export function domainFolders(root: string): string[] {
  try {
    return fs.readdirSync(path.join(root, 'domains')).map(d => path.join(root, 'domains', d))
  } catch {
    return []
  }
}

/** Processes whose command line names something inside the host folder (its domain processes). */
export function hostProcesses(root: string): number[] {
  const real = fs.existsSync(root) ? fs.realpathSync(root) : root
  const needles = [...new Set([path.resolve(root), real])].map(p => `${p}${path.sep}`)
  const pids: number[] = []
  for (const e of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(e) || Number(e) === process.pid) continue
    let cmdline: string
    try {
      cmdline = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8')
    } catch {
      continue
    }
    let state = ''
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'latin1')
      state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    } catch {
      continue
    }
    if (state === 'Z') continue
    const args = cmdline.split('\0')
    if (args.some(a => needles.some(n => `${a}${path.sep}`.startsWith(n) || a.startsWith(n)))) pids.push(Number(e))
  }
  return pids
}

/** What a host has left: domain folders, memory files, processes. */
export function leftovers(root: string): {folders: string[]; shm: string[]; processes: number[]} {
  return {folders: domainFolders(root), shm: shmFiles(root), processes: hostProcesses(root)}
}

/**
 * Destroys every domain of the host through the CLI, then makes sure: kills what still runs,
 * removes memory files and the folder. Returns what had to be cleaned by force (for diagnostics).
 */
export async function cleanupHost(root: string, opts: {netns?: string} = {}): Promise<string[]> {
  const forced: string[] = []
  if (!fs.existsSync(root)) return forced
  const listed = await xl(['list', '--json'], {root, ...opts}).catch(() => undefined)
  if (listed && listed.exitCode === 0) {
    try {
      const domains = JSON.parse(listed.stdout) as {domid: number}[]
      for (const d of domains) {
        if (d.domid === 0) continue
        await xl(['destroy', String(d.domid)], {root, ...opts}).catch(() => undefined)
      }
    } catch {
      // an unreadable listing: fall through to the forced cleanup
    }
  }
  const id = hostId(root)
  for (const folder of domainFolders(root)) {
    const pidText = (() => {
      try {
        return fs.readFileSync(path.join(folder, 'pid'), 'utf8')
      } catch {
        return undefined
      }
    })()
    const [pid, start] = (pidText ?? '').trim().split(' ').map(Number)
    // Only the process that wrote the pid file: a pid reused since is someone else's.
    if (pid !== undefined && pid > 0 && procStart(pid) === start && killQuietly(pid)) forced.push(`killed domain process ${pid}`)
  }
  for (const pid of hostProcesses(root)) if (killQuietly(pid)) forced.push(`killed process ${pid}`)
  // Device models die with their domain process (parent-death signal); one that did not is ended by its pid file.
  for (const r of await reapDeviceModels(root).catch(() => [])) if (r.how === 'sigterm' || r.how === 'sigkill') forced.push(`reaped QEMU in ${r.folder} (${r.how})`)
  if (id) {
    for (const f of shmFiles(root)) {
      fs.rmSync(f, {force: true})
      forced.push(`removed ${f}`)
    }
  }
  fs.rmSync(root, {recursive: true, force: true})
  return forced
}

/** Field 22 of /proc/<pid>/stat (start time), or undefined when there is no such live process. */
function procStart(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return rest[0] === 'Z' ? undefined : Number(rest[19])
  } catch {
    return undefined
  }
}

function killQuietly(pid: number): boolean {
  try {
    process.kill(pid, 'SIGKILL')
    return true
  } catch {
    return false
  }
}

// ---- config files ---------------------------------------------------------------------------

/** Writes a guest config file into `dir` and returns its path. */
export function writeConfig(dir: string, name: string, settings: Record<string, string | number>): string {
  const file = path.join(dir, `${name}.cfg`)
  const text = Object.entries(settings)
    .map(([k, v]) => `${k} = ${typeof v === 'number' ? v : JSON.stringify(v)}`)
    .join('\n')
  fs.writeFileSync(file, `${text}\n`)
  return file
}

/** A random suffix for names that must not clash between parallel runs. */
export function randomTag(): string {
  return Math.random().toString(36).slice(2, 8)
}
