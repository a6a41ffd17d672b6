/** Waiting, shell quoting and looking at processes through /proc. */
import * as fs from 'node:fs'

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
/** Blocks this thread (for clean-up that must run synchronously, as from 'exit'). */
export const sleepSync = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
/** `s` as one POSIX shell word. */
export const shellQuote = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`

/** A process that has not exited (a zombie not yet reaped by us has). */
export const alive = (pid) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat[stat.lastIndexOf(')') + 2] !== 'Z'
  } catch {
    return false
  }
}

/** Processes (not this one) whose command line or environment names one of `roots`. */
export function processesOf(roots) {
  const found = []
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue
    let cmd = ''
    let env = ''
    try {
      cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'latin1')
      env = fs.readFileSync(`/proc/${e}/environ`, 'latin1')
    } catch {
      // gone, or not ours to read
    }
    if (roots.some((r) => cmd.includes(r) || env.includes(r))) found.push({pid: Number(e), cmd: cmd.split('\0').join(' ').trim()})
  }
  return found
}
