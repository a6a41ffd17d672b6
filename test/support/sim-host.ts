/**
 * Helpers for the simulated-host tests: building dist/ (the domain program runs from there), short
 * temporary state folders, finding and removing everything a host left behind (processes, shm
 * files, folders), waiting.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'

import type {DomainState} from '../../src/toolstack/hypervisor/port.js'

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const DIST_INDEX = path.join(REPO, 'dist', 'toolstack', 'backends', 'index.js')
export const DOMAIN_PROGRAM = path.join(REPO, 'dist', 'toolstack', 'hypervisor', 'sim', 'domain-main.js')

export {ensureBuilt} from './build.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** A fresh, short state folder (control socket paths must stay under 108 bytes). */
export function tempRoot(tag = 'h'): string {
  return fs.mkdtempSync(`/tmp/xlts-${tag}-`)
}

export function hostIdOf(root: string): string | undefined {
  try {
    return (JSON.parse(fs.readFileSync(path.join(root, 'host.json'), 'utf8')) as {hostId: string}).hostId
  } catch {
    return undefined
  }
}

/** Domain processes whose command line names this state folder. */
export function domainProcesses(root: string): number[] {
  const out: number[] = []
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue
    let cmd: string
    try {
      cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8')
    } catch {
      continue
    }
    const argv = cmd.split('\0')
    if (argv.some((a) => a.endsWith('domain-main.js')) && argv.some((a) => a.startsWith(path.join(root, 'domains') + '/'))) out.push(Number(e))
  }
  return out
}

export function shmFiles(hostId: string | undefined): string[] {
  if (!hostId) return []
  return fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`xl-ts-${hostId}-`))
}

export function domainFolders(root: string): string[] {
  try {
    return fs.readdirSync(path.join(root, 'domains'))
  } catch {
    return []
  }
}

export interface Leftovers {
  processes: number[]
  shm: string[]
  folders: string[]
}

export function leftovers(root: string, hostId = hostIdOf(root)): Leftovers {
  return {processes: domainProcesses(root), shm: shmFiles(hostId), folders: domainFolders(root)}
}

export const NOTHING: Leftovers = {processes: [], shm: [], folders: []}

/** Kills every domain process of the host, removes its shm files and the state folder. Never throws. */
export async function wipeRoot(root: string): Promise<void> {
  const hostId = hostIdOf(root)
  for (let round = 0; round < 20; round++) {
    const pids = domainProcesses(root)
    if (pids.length === 0) break
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
    await sleep(25)
  }
  for (const f of shmFiles(hostId)) fs.rmSync(path.join('/dev/shm', f), {force: true})
  fs.rmSync(root, {recursive: true, force: true})
}

/** xl list's state column: r b p s c d, '-' where a flag is off. */
export function stateLetters(s: DomainState): string {
  return [
    s.running ? 'r' : '-',
    s.blocked ? 'b' : '-',
    s.paused ? 'p' : '-',
    s.shutdown && s.shutdownReason !== 3 ? 's' : '-',
    s.shutdown && s.shutdownReason === 3 ? 'c' : '-',
    s.dying ? 'd' : '-',
  ].join('')
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined && v !== false) return v
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(10)
  }
}

export {sleep}
