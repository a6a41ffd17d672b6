/**
 * The files a device model keeps in its domain folder besides what its arguments name: `qemu.pid`
 * (`<pid> <start time>`, the identity of process/identity.ts, so a reused pid is never taken for our QEMU) and the
 * QMP socket. The pid file is written as soon as QEMU is spawned and removed when it has exited, so a
 * later run can find a QEMU that a dead toolstack left behind (`reapFolder`) and end it.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {isAlive, waitGone} from '../process/index.js'
import {PID_FILE, QMP_SOCKET, TOOLSTACK_QMP_SOCKET} from './args.js'
import {DeviceModelError} from './errors.js'

export interface PidRecord {
  readonly pid: number
  /** Field 22 of /proc/<pid>/stat. */
  readonly start: number
}

/** The pid file of `folder`: its record, `undefined` if there is none, `'malformed'` if it is not ours to read. */
export function readPidFile(folder: string): PidRecord | 'malformed' | undefined {
  let text: string
  try {
    text = fs.readFileSync(path.join(folder, PID_FILE), 'latin1')
  } catch {
    return undefined
  }
  const m = /^([1-9]\d{0,9}) (\d{1,15})\n?$/.exec(text)
  return m ? {pid: Number(m[1]), start: Number(m[2])} : 'malformed'
}

/** Writes the pid file whole (a temporary file renamed over it). */
export function writePidFile(folder: string, record: PidRecord): void {
  const file = path.join(folder, PID_FILE)
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, `${record.pid} ${record.start}\n`, {mode: 0o600})
  fs.renameSync(tmp, file)
}

/** Removes the pid file and the QMP socket of `folder`; returns the names it removed. */
export function removeDeviceModelFiles(folder: string): string[] {
  const removed: string[] = []
  for (const name of [PID_FILE, QMP_SOCKET, TOOLSTACK_QMP_SOCKET]) {
    try {
      fs.unlinkSync(path.join(folder, name))
      removed.push(name)
    } catch {
      // not there
    }
  }
  return removed
}

/** True when the pid file names a live process. */
export function pidFileIsLive(record: PidRecord | 'malformed' | undefined): record is PidRecord {
  return typeof record === 'object' && isAlive(record.pid, record.start)
}

export type ReapHow =
  | 'none' // no pid file: nothing ran here (a stray socket is still removed)
  | 'stale' // a pid file whose process is gone: the files are removed
  | 'stopped' // a device model of this process, stopped with stop()
  | 'sigterm' // a live QEMU of another (dead) toolstack, ended by SIGTERM
  | 'sigkill' // ... that needed SIGKILL

export interface ReapResult {
  readonly folder: string
  readonly how: ReapHow
  readonly pid?: number
  /** The files removed (`qemu.pid`, `qmp.sock`). */
  readonly removed: readonly string[]
}

export interface ReapOptions {
  /** How long QEMU has to exit after SIGTERM before SIGKILL (default 3 s). */
  readonly termTimeoutMs?: number
  /** How long after SIGKILL before giving up (default 3 s). */
  readonly killTimeoutMs?: number
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch {
    // gone in between
  }
}

/**
 * Ends the QEMU that `folder`'s pid file names, if it still runs (SIGTERM, then SIGKILL), and removes
 * the files. For a QEMU this process does not own: it cannot be waited for, only watched in /proc.
 */
export async function reapFolder(folder: string, options: ReapOptions = {}): Promise<ReapResult> {
  const record = readPidFile(folder)
  let how: ReapHow = record === undefined ? 'none' : 'stale'
  if (pidFileIsLive(record)) {
    const {pid, start} = record
    signal(pid, 'SIGTERM')
    how = 'sigterm'
    if (!(await waitGone(pid, start, options.termTimeoutMs ?? 3_000))) {
      signal(pid, 'SIGKILL')
      how = 'sigkill'
      if (!(await waitGone(pid, start, options.killTimeoutMs ?? 3_000))) {
        throw new DeviceModelError('stop-failed', folder, `QEMU pid ${pid} (${folder}) is still there after SIGKILL`, {pid})
      }
    }
  }
  const removed = removeDeviceModelFiles(folder)
  return {folder, how, ...(typeof record === 'object' ? {pid: record.pid} : {}), removed}
}
