/**
 * Where a shared fd stands. A file's position belongs to the open file description, which the
 * helper shares with us: after it has read or written its libxc stream, /proc/self/fdinfo/<fd>
 * (`pos:`) says where it stopped, so the libxl layer's offsets stay file offsets. A pipe, FIFO or
 * socket has no position: what the helper consumed there cannot be known.
 */
import * as fs from 'node:fs'

/** True when the fd is a regular file (its position is meaningful and shared). */
export function isSeekable(fd: number): boolean {
  try {
    return fs.fstatSync(fd).isFile()
  } catch {
    return false
  }
}

/** The fd's file position (`pos:` of /proc/self/fdinfo/<fd>); undefined when it has none to tell. */
export function fdPosition(fd: number): number | undefined {
  if (!isSeekable(fd)) return undefined
  try {
    const m = /^pos:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}
