/**
 * What the kernel says about our fds, read from /proc/self/fdinfo (Node has no fcntl): access mode,
 * O_NONBLOCK, close-on-exec. And reopenBlocking(), the way around a pipe someone made non-blocking.
 */
import * as fs from 'node:fs'

import {FdError, errnoCode} from './errors.js'

const O_ACCMODE = 0o3
const O_NONBLOCK = 0o4000
const O_CLOEXEC = 0o2000000

export interface FdFlags {
  readonly access: 'r' | 'w' | 'rw'
  /** O_NONBLOCK: on the open file description, so shared with every process holding it. */
  readonly nonBlocking: boolean
  /** FD_CLOEXEC (fdinfo shows it as O_CLOEXEC): the fd is closed when this process runs exec. */
  readonly cloexec: boolean
  /** The raw `flags:` value. */
  readonly flags: number
}

/** Reads /proc/self/fdinfo/FD. Throws Node's ENOENT when the fd is not open. */
export function fdFlags(fd: number): FdFlags {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1')
  const m = /^flags:\s*([0-7]+)$/m.exec(info)
  if (!m) throw new Error(`/proc/self/fdinfo/${fd} has no flags line`)
  const flags = parseInt(m[1]!, 8)
  const acc = flags & O_ACCMODE
  return {
    access: acc === 0 ? 'r' : acc === 1 ? 'w' : 'rw',
    nonBlocking: (flags & O_NONBLOCK) !== 0,
    cloexec: (flags & O_CLOEXEC) !== 0,
    flags,
  }
}

/** Our open fds, ascending. */
export function openFds(): number[] {
  const fds: number[] = []
  for (const name of fs.readdirSync('/proc/self/fd')) fds.push(Number(name))
  // One of them was the directory readdir had open; it is closed again by now.
  return fds.filter((fd) => {
    try {
      fs.fstatSync(fd)
      return true
    } catch {
      return false
    }
  }).sort((a, b) => a - b)
}

/**
 * Our fds that a child would inherit although nobody passed them: open and without close-on-exec.
 * Node opens everything with O_CLOEXEC, so these came from whoever started us (0-2 always do).
 */
export function inheritableFds(): number[] {
  return openFds().filter((fd) => {
    try {
      return !fdFlags(fd).cloexec
    } catch {
      return false
    }
  })
}

/**
 * A new, blocking open file description of the pipe or FIFO behind `fd` (its /proc/self/fd link
 * reopened with the same access mode), for when `fd` is non-blocking and something that expects a
 * blocking fd (Xen's helper, a tight sync loop) is to use it. The old fd is left as it is; the caller
 * closes the new one. The result has close-on-exec set, like every fd Node opens.
 *
 * Works for pipes, FIFOs and files; a socket cannot be reopened (FdError 'not-reopenable').
 * For a write end the reader must still be there (else 'not-reopenable', instead of blocking for
 * ever as opening a FIFO with no reader does). Reopening a read end whose writers are all gone
 * would block in open(2) until one comes; it is at end of file anyway, so do not.
 */
export function reopenBlocking(fd: number, what = `fd ${fd}`): number {
  let flags: FdFlags
  try {
    flags = fdFlags(fd)
  } catch (err) {
    throw new FdError('io', what, fd, `not an open fd (${errnoCode(err) ?? String(err)})`, {cause: err})
  }
  const link = `/proc/self/fd/${fd}`
  let target = ''
  try {
    target = fs.readlinkSync(link)
  } catch {
    // keep going: open() gives the real reason
  }
  if (target.startsWith('socket:')) {
    throw new FdError('not-reopenable', what, fd, `is a socket (${target}); only pipes, FIFOs and files can be reopened`)
  }
  const access = flags.access === 'r' ? fs.constants.O_RDONLY : flags.access === 'w' ? fs.constants.O_WRONLY : fs.constants.O_RDWR
  if (flags.access === 'w') {
    // Opening a FIFO for writing blocks until a reader exists; probe without blocking first.
    let probe: number
    try {
      probe = fs.openSync(link, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
    } catch (err) {
      const errno = errnoCode(err)
      const why = errno === 'ENXIO' ? 'its reader has gone' : `cannot reopen ${link}: ${errno ?? String(err)}`
      throw new FdError('not-reopenable', what, fd, why, {cause: err, ...(errno ? {errno} : {})})
    }
    fs.closeSync(probe)
  }
  try {
    return fs.openSync(link, access)
  } catch (err) {
    const errno = errnoCode(err)
    throw new FdError('not-reopenable', what, fd, `cannot reopen ${link} (${target || '?'}): ${errno ?? String(err)}`, {
      cause: err,
      ...(errno ? {errno} : {}),
    })
  }
}

/**
 * `fd` itself when it is blocking, else a blocking reopen of it (see reopenBlocking). `close()`
 * closes what was opened here, nothing when `fd` was returned as it is.
 */
export function blockingFd(fd: number, what = `fd ${fd}`): {readonly fd: number; readonly reopened: boolean; close(): void} {
  if (!fdFlags(fd).nonBlocking) return {fd, reopened: false, close: () => {}}
  const nfd = reopenBlocking(fd, what)
  let open = true
  return {
    fd: nfd,
    reopened: true,
    close: () => {
      if (open) fs.closeSync(nfd)
      open = false
    },
  }
}
