/**
 * What the save/restore tests share: the save helper processes a host's toolstack started (found by
 * their XL_TS_ROOT, since their argv names no folder), a full cleanup of a host including them, and
 * the records of a savefile as `xl-ts stream inspect --json` lists them.
 */
import * as fs from 'node:fs'
import {expect} from 'vitest'

import {entryPointFiles} from '../../src/toolstack/entry-points.js'
import {cleanupHost, leftovers, xl} from './cli.js'

/** Our helper's program, bundled or not. */
const HELPER_FILES: readonly string[] = Object.values(entryPointFiles('save-helper'))

/** Our save/restore helpers (dist/bundle/save-helper.js or dist/toolstack/save-helper/main.js) running for this host. */
export function helperProcesses(root: string): number[] {
  const pids: number[] = []
  for (const e of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(e) || Number(e) === process.pid) continue
    try {
      const cmdline = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8')
      if (!cmdline.split('\0').some((a) => HELPER_FILES.includes(a))) continue
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'latin1')
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue
      const environ = fs.readFileSync(`/proc/${e}/environ`, 'utf8').split('\0')
      if (environ.includes(`XL_TS_ROOT=${root}`) || environ.includes(`XL_TS_ROOT=${fs.existsSync(root) ? fs.realpathSync(root) : root}`)) pids.push(Number(e))
    } catch {
      // gone, or not ours to read
    }
  }
  return pids
}

/** cleanupHost, and any helper of the host killed first. */
export async function cleanupSaveHost(root: string): Promise<string[]> {
  const forced: string[] = []
  for (const pid of helperProcesses(root)) {
    try {
      process.kill(pid, 'SIGKILL')
      forced.push(`killed helper ${pid}`)
    } catch {
      // gone
    }
  }
  return [...forced, ...(await cleanupHost(root))]
}

/** Nothing of the host is left but Domain-0: no domain folder, memory file, domain process or helper. */
export async function expectOnlyDom0(root: string): Promise<void> {
  const listed = await xl(['list', '--json'], {root})
  expect(listed.exitCode, listed.stderr).toBe(0)
  expect((JSON.parse(listed.stdout) as {domid: number}[]).map(d => d.domid)).toEqual([0])
  expect(leftovers(root)).toEqual({folders: [], shm: [], processes: []})
  expect(helperProcesses(root)).toEqual([])
}

export interface InspectedRecord {
  event: string
  layer: string
  offset: number
  index?: number
  type?: string
  part?: string
  length: number
}

/** The headers and records of a savefile, from `xl-ts stream inspect --json --no-squash`. */
export async function inspectRecords(file: string): Promise<InspectedRecord[]> {
  const r = await xl(['stream', 'inspect', '--json', '--no-squash', file])
  expect(r.exitCode, r.stderr).toBe(0)
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map(l => JSON.parse(l) as InspectedRecord)
    .filter(e => e.event === 'record' || e.event === 'header')
}
