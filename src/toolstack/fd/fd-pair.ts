/**
 * The fd pair between `xl-ts migrate` and its transport child (`sh -c RUNE`, usually ssh): what xl
 * makes with two pipe(2) calls, made here from two FIFOs because Node has no pipe(2) that gives raw
 * fds (its pipes are libuv stream handles, and a Node stream reads ahead).
 *
 *   FIFO A:  sendFd (ours, write)  ->  childStdin (the transport's fd 0, read)
 *   FIFO B:  childStdout (the transport's fd 1, write)  ->  recvFd (ours, read)
 *
 * Each FIFO is opened for reading and for writing at the same time (opening one end of a FIFO
 * blocks until the other end is opened: both opens run at once on libuv's thread pool). All four fds
 * are blocking and close-on-exec. The FIFOs live in a private directory (mode 0700, made by the tmp
 * package: `xl-ts-fdpair-<pid>-<random>`) that is removed, FIFOs and all, as soon as they are open,
 * and also when anything fails on the way: nothing is left on disk. (A SIGKILL in the few
 * milliseconds between mkfifo and the unlink would leave the empty directory behind; nothing can
 * prevent that.)
 *
 * The opens use fs.open, not fs.promises.open: a FileHandle that is garbage collected closes its fd,
 * and these fds are handed around as plain numbers.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {FdError, errnoCode} from './errors.js'

export interface FdPair {
  /** Read end of FIFO A: the transport child's stdin. Close it here once the child has it. */
  readonly childStdin: number
  /** Write end of FIFO B: the transport child's stdout. Close it here once the child has it. */
  readonly childStdout: number
  /** Write end of FIFO A: what we send to the other side. */
  readonly sendFd: number
  /** Read end of FIFO B: what the other side sends us. */
  readonly recvFd: number
  /** Closes childStdin and childStdout (after spawning the child, so EOF can reach us). */
  closeChildEnds(): void
  /** Closes sendFd: the transport sees end of file. */
  closeSend(): void
  /** Closes recvFd. */
  closeRecv(): void
  /** Closes every fd of the pair still open; safe to call more than once. */
  close(): void
}

export interface OpenFdPairOptions {
  /** Where the private directory is made (default os.tmpdir()). */
  readonly tmpDir?: string
}

function openFd(p: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(p, flags, (err, fd) => (err ? reject(err) : resolve(fd))))
}

function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return
  try {
    fs.closeSync(fd)
  } catch {
    // already closed
  }
}

/** Opens both ends of a FIFO at once: [read end, write end]. */
async function openBothEnds(fifo: string): Promise<[number, number]> {
  const opens = [openFd(fifo, fs.constants.O_RDONLY), openFd(fifo, fs.constants.O_WRONLY)] as const
  const first = await Promise.race(opens.map((p) => p.then(() => undefined, (err: unknown) => err)))
  if (first !== undefined) {
    // One open failed; the other is blocked waiting for a partner that will not come. An O_RDWR open
    // of a FIFO never blocks and counts as both a reader and a writer, so it releases it.
    let unblock: number | undefined
    try {
      unblock = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK)
    } catch {
      // nothing more to do: the FIFO is gone
    }
    const settled = await Promise.allSettled(opens)
    closeQuietly(unblock)
    for (const s of settled) if (s.status === 'fulfilled') closeQuietly(s.value)
    throw first
  }
  const [r, w] = await Promise.allSettled(opens)
  if (r.status === 'fulfilled' && w.status === 'fulfilled') return [r.value, w.value]
  // The second one failed after the first succeeded.
  if (r.status === 'fulfilled') closeQuietly(r.value)
  if (w.status === 'fulfilled') closeQuietly(w.value)
  throw r.status === 'rejected' ? r.reason : (w as PromiseRejectedResult).reason
}

/** Makes the two FIFOs, opens both ends of each, removes them; see the module comment. */
export async function openFdPair(opts: OpenFdPairOptions = {}): Promise<FdPair> {
  // execa and tmp are loaded here, not with this module: every command that imports the fd layer
  // would pay for them at start-up (measured after oclif has loaded: execa 47-55 ms, tmp ~2 ms),
  // and only the sides that make a pair use them.
  const [{execa}, tmp] = await Promise.all([import('execa'), import('tmp')])
  let made: {readonly name: string; readonly removeCallback: () => void}
  try {
    // The synchronous form: its removeCallback removes the folder before we go on (the other's is
    // fire-and-forget). Both are a few syscalls.
    made = tmp.dirSync({prefix: 'xl-ts-fdpair', mode: 0o700, unsafeCleanup: true, ...(opts.tmpDir === undefined ? {} : {tmpdir: opts.tmpDir})})
  } catch (err) {
    throw new FdError('fifo', 'fd pair', -1, `cannot make a private directory: ${errnoCode(err) ?? String(err)}`, {cause: err})
  }
  const dir = made.name
  const fifoA = path.join(dir, 'to-child')
  const fifoB = path.join(dir, 'from-child')
  let a: [number, number] | undefined
  let b: [number, number] | undefined
  try {
    // Whatever the umask took off tmp's 0700.
    await fs.promises.chmod(dir, 0o700)
    const fifos = await execa('mkfifo', ['-m', '600', fifoA, fifoB], {reject: false, stdin: 'ignore'})
    if (fifos.failed) {
      throw new FdError('fifo', 'fd pair', -1, `mkfifo failed: ${String(fifos.stderr || fifos.shortMessage).trim()}`)
    }
    a = await openBothEnds(fifoA)
    b = await openBothEnds(fifoB)
  } catch (err) {
    if (a) a.forEach((fd) => closeQuietly(fd))
    if (err instanceof FdError) throw err
    throw new FdError('fifo', 'fd pair', -1, `cannot open the FIFOs: ${errnoCode(err) ?? String(err)}`, {cause: err})
  } finally {
    made.removeCallback()
  }
  const [childStdin, sendFd] = a
  const [recvFd, childStdout] = b
  const open = new Set([childStdin, childStdout, sendFd, recvFd])
  const closeOne = (fd: number): void => {
    if (open.delete(fd)) closeQuietly(fd)
  }
  return {
    childStdin,
    childStdout,
    sendFd,
    recvFd,
    closeChildEnds() {
      closeOne(childStdin)
      closeOne(childStdout)
    },
    closeSend() {
      closeOne(sendFd)
    },
    closeRecv() {
      closeOne(recvFd)
    },
    close() {
      for (const fd of [...open]) closeOne(fd)
    },
  }
}
