/** Process identity on Linux: a pid plus its start time (so a reused pid is not taken for ours), and waits on it. */
import * as fs from 'node:fs'

export interface ProcState {
  /** The state letter of /proc/<pid>/stat (R, S, D, Z, ...). */
  state: string
  /** Field 22 of /proc/<pid>/stat: start time in clock ticks since boot. */
  start: number
}

export function procState(pid: number): ProcState | undefined {
  let stat: string
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
  } catch {
    return undefined
  }
  // "pid (comm) S ppid ..." where comm may hold spaces and parentheses: fields resume after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const state = rest[0] ?? '?'
  const start = Number(rest[19])
  return {state, start}
}

/** The start time of a live process, or undefined if there is none (or only a zombie). */
export function procStart(pid: number): number | undefined {
  const s = procState(pid)
  if (!s || s.state === 'Z' || s.state === 'X') return undefined
  return s.start
}

export function isAlive(pid: number, start: number): boolean {
  if (!(pid > 0)) return false
  const s = procState(pid)
  return !!s && s.state !== 'Z' && s.state !== 'X' && s.start === start
}

export function selfIdentity(): {pid: number; start: number} {
  return {pid: process.pid, start: procStart(process.pid) ?? 0}
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Waits until the process is gone; false if it is still there after `ms`. */
export async function waitGone(pid: number, start: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms
  for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
    if (!isAlive(pid, start)) return true
    if (Date.now() >= until) return false
    await sleep(wait)
  }
}

export function killHard(pid: number, start: number): void {
  if (!isAlive(pid, start)) return
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // gone already
  }
}
