/**
 * Reads up to `length` bytes that are in a pipe or FIFO already (or arrive within `waitMs`),
 * without blocking for more: through a non-blocking reopen of the same pipe (/proc/self/fd/N opens
 * the pipe itself, with a file description of its own, so the caller's fd stays as it was). A
 * socket cannot be reopened that way: then nothing is read and `supported` is false.
 *
 * Used where a peer's framing must be told from the bytes it has sent in one go: Xen 4.18+'s COLO
 * secondary puts a 16-byte record header before its dirty pfn list (XEN-FACTS §12.1).
 */
import * as fs from 'node:fs'

import {sleepSync} from './raw-io.js'

export interface Available {
  readonly bytes: Buffer
  /** False when the fd could not be read without blocking (not a pipe or FIFO). */
  readonly supported: boolean
}

export function readAvailableSync(fd: number, length: number, waitMs: number): Available {
  let nb: number
  try {
    nb = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  } catch {
    return {bytes: Buffer.alloc(0), supported: false}
  }
  try {
    const out = Buffer.alloc(length)
    let got = 0
    const until = performance.now() + waitMs
    while (got < length) {
      let n = 0
      try {
        n = fs.readSync(nb, out, got, length - got, null)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err
      }
      if (n > 0) {
        got += n
        continue
      }
      // n === 0 with no error: the writer has gone; EAGAIN: nothing yet.
      if (performance.now() >= until) break
      sleepSync(1)
    }
    return {bytes: out.subarray(0, got), supported: true}
  } finally {
    fs.closeSync(nb)
  }
}
