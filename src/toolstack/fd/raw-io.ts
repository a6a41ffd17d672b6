/**
 * Exact-length reads and complete writes on raw fds (pipes, FIFOs, sockets, files), in a sync form
 * (fs.readSync / fs.writevSync: for the save/restore helper, which does nothing else while it moves
 * a record) and an async form (fs.read / fs.writev on libuv's thread pool: for the toolstack, whose
 * event loop also serves the helper's callbacks).
 *
 * Sizes. DESIGN.md ("Processes and fds") measured writes of about 16 KiB into a 64 KiB pipe at `cat`
 * speed and writes of 64 KiB or more several times slower (the pipe fills and both sides stall). So
 * `writeAll` cuts what it is given (a record's iovec: header, pfn array, pages, padding) into
 * write/writev calls of at most `WRITE_CHUNK` bytes in total (`chunkSize` to change it) and at most
 * `IOV_MAX` parts, and the readers read in pieces of at most `READ_PIECE` bytes (a read only takes
 * what is in the pipe, so a larger read costs nothing but can never get more than the pipe holds).
 * Caution: later runs of test/fd-throughput.test.ts on the same kind of machine (kernel 6.18, other
 * work running) measured the opposite, 16 KiB calls ~1.3 GB/s and 64 KiB calls ~2.3 GB/s into `cat`
 * (and `dd bs=16k` no faster than our 16 KiB calls); the default follows DESIGN.md until the two are
 * measured side by side on a quiet machine. The test prints both.
 *
 * Non-blocking fds. O_NONBLOCK belongs to the open file description, which is shared with every
 * process that has the fd: oclif makes fd 1 non-blocking when it creates process.stdout, libuv makes
 * a child's fds 0-2 blocking (and so ours too). These functions work on either: EAGAIN makes them
 * sleep a little (from 50 us, doubling, up to `maxWaitMs`) and try again; the sync form sleeps with
 * Atomics.wait, since Node cannot poll(2) a raw fd. Where a whole stream will cross a non-blocking
 * pipe, reopenBlocking() (fd-flags.ts) gives a blocking description of the same pipe instead.
 *
 * No Node stream is ever made over these fds: a stream reads ahead and would take bytes that belong
 * to the next holder of the fd (the helper, the toolstack, the other side of a checkpoint).
 */
import * as fs from 'node:fs'

import {FdError, errnoCode} from './errors.js'

/** Linux's IOV_MAX: a writev with more parts fails with EINVAL. */
export const IOV_MAX = 1024
/** Largest total of one write or writev call made by writeAll. */
export const WRITE_CHUNK = 16 * 1024
/** Largest single read made by readExact (a pipe holds 64 KiB by default). */
export const READ_PIECE = 64 * 1024

const DEFAULT_MAX_WAIT_MS = 10
const FIRST_WAIT_MS = 0.05

const sleepCell = new Int32Array(new SharedArrayBuffer(4))

/** Sleeps the whole thread (event loop included) for `ms` milliseconds; fractions are honoured. */
export function sleepSync(ms: number): void {
  if (ms > 0) Atomics.wait(sleepCell, 0, 0, ms)
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(1, ms)))
}

export interface RawIoOptions {
  /** What the bytes are, for error messages (`ready message`, `helper io_fd`). Default `fd N`. */
  readonly what?: string
  /** Longest sleep between retries after EAGAIN, in ms (default 10). */
  readonly maxWaitMs?: number
}

export interface ReadExactOptions extends RawIoOptions {
  /** Read into this buffer (at `intoOffset`) instead of a new one; the result is a view of it. */
  readonly into?: Buffer
  readonly intoOffset?: number
  /** Largest single read(2), default READ_PIECE. */
  readonly pieceSize?: number
  /**
   * At end of file before `length` bytes: `short` (default) returns what arrived (empty when
   * nothing did); `error` throws FdError 'eof'.
   */
  readonly eof?: 'short' | 'error'
}

export interface WriteAllOptions extends RawIoOptions {
  /** Largest total of one write call, default WRITE_CHUNK. */
  readonly chunkSize?: number
}

/** Retry bookkeeping for EAGAIN on a non-blocking fd. */
class Backoff {
  wait = FIRST_WAIT_MS
  waits = 0
  constructor(private readonly max: number) {}
  next(): number {
    const w = this.wait
    this.waits++
    this.wait = Math.min(this.max, this.wait * 2)
    return w
  }
  reset(): void {
    this.wait = FIRST_WAIT_MS
  }
}

/** What happened to one read or write attempt. */
const RETRY_NOW = -1
const RETRY_LATER = -2

function classify(err: unknown): number | undefined {
  const code = errnoCode(err)
  if (code === 'EINTR') return RETRY_NOW
  if (code === 'EAGAIN' || code === 'EWOULDBLOCK') return RETRY_LATER
  return undefined
}

function readTarget(length: number, opts: ReadExactOptions, what: string, fd: number): Buffer {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`${what}: cannot read ${length} bytes`)
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`${what}: fd ${fd} is not a file descriptor`)
  if (!opts.into) return Buffer.allocUnsafe(length)
  const at = opts.intoOffset ?? 0
  if (at < 0 || at + length > opts.into.length) {
    throw new RangeError(`${what}: ${length} bytes at ${at} do not fit a buffer of ${opts.into.length}`)
  }
  return opts.into.subarray(at, at + length)
}

function readFailed(err: unknown, what: string, fd: number, got: number, length: number): FdError {
  const errno = errnoCode(err)
  return new FdError('io', what, fd, `read failed after ${got} of ${length} bytes: ${errno ?? String(err)}`, {
    expected: length,
    done: got,
    ...(errno ? {errno} : {}),
    cause: err,
  })
}

function endedEarly(what: string, fd: number, got: number, length: number): FdError {
  return new FdError('eof', what, fd, `ended after ${got} of ${length} bytes`, {expected: length, done: got})
}

/**
 * Reads exactly `length` bytes from `fd` at its current position, never asking the kernel for a
 * byte beyond them. Fewer only at end of file (or FdError 'eof' with `eof: 'error'`).
 */
export function readExactSync(fd: number, length: number, opts: ReadExactOptions = {}): Buffer {
  const what = opts.what ?? `fd ${fd}`
  const buf = readTarget(length, opts, what, fd)
  const piece = Math.max(1, opts.pieceSize ?? READ_PIECE)
  const backoff = new Backoff(opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS)
  let got = 0
  while (got < length) {
    let n: number
    try {
      n = fs.readSync(fd, buf, got, Math.min(piece, length - got), null)
    } catch (err) {
      const retry = classify(err)
      if (retry === undefined) throw readFailed(err, what, fd, got, length)
      if (retry === RETRY_LATER) sleepSync(backoff.next())
      continue
    }
    if (n === 0) break
    got += n
    backoff.reset()
  }
  if (got === length) return buf
  if (opts.eof === 'error') throw endedEarly(what, fd, got, length)
  return buf.subarray(0, got)
}

function readOnce(fd: number, buf: Buffer, offset: number, length: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fs.read(fd, buf, offset, length, null, (err, n) => (err ? reject(err) : resolve(n)))
  })
}

/** readExactSync on libuv's thread pool: the event loop runs while the bytes come. */
export async function readExact(fd: number, length: number, opts: ReadExactOptions = {}): Promise<Buffer> {
  const what = opts.what ?? `fd ${fd}`
  const buf = readTarget(length, opts, what, fd)
  const piece = Math.max(1, opts.pieceSize ?? READ_PIECE)
  const backoff = new Backoff(Math.max(1, opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS))
  let got = 0
  while (got < length) {
    let n: number
    try {
      n = await readOnce(fd, buf, got, Math.min(piece, length - got))
    } catch (err) {
      const retry = classify(err)
      if (retry === undefined) throw readFailed(err, what, fd, got, length)
      if (retry === RETRY_LATER) await sleep(backoff.next())
      continue
    }
    if (n === 0) break
    got += n
    backoff.reset()
  }
  if (got === length) return buf
  if (opts.eof === 'error') throw endedEarly(what, fd, got, length)
  return buf.subarray(0, got)
}

/**
 * A cursor over a list of buffers that hands out the next batch for one write call: at most
 * `chunk` bytes and IOV_MAX parts, whole parts where they fit, views where a part is cut. After the
 * call, `advance(n)` with the bytes the kernel took (a partial write moves it part of the way).
 * writeAll and writeAllSync are its users; exported for tests.
 */
export class WriteCursor {
  readonly total: number
  done = 0
  #part = 0
  #offset = 0
  readonly #batch: Buffer[] = []
  #batchBytes = 0
  #endPart = 0
  #endOffset = 0

  constructor(
    private readonly parts: readonly Buffer[],
    private readonly chunk: number,
  ) {
    let total = 0
    for (const p of parts) total += p.length
    this.total = total
  }

  /** Fills the batch from the cursor; returns it (reused between calls). */
  batch(): Buffer[] {
    const out = this.#batch
    out.length = 0
    let bytes = 0
    let i = this.#part
    let o = this.#offset
    const parts = this.parts
    while (i < parts.length && bytes < this.chunk && out.length < IOV_MAX) {
      const p = parts[i]!
      const avail = p.length - o
      if (avail <= 0) {
        i++
        o = 0
        continue
      }
      const take = Math.min(avail, this.chunk - bytes)
      out.push(o === 0 && take === p.length ? p : p.subarray(o, o + take))
      bytes += take
      if (take === avail) {
        i++
        o = 0
      } else {
        o += take
      }
    }
    this.#batchBytes = bytes
    this.#endPart = i
    this.#endOffset = o
    return out
  }

  /** Moves the cursor past `n` bytes written from the current batch. */
  advance(n: number): void {
    this.done += n
    if (n === this.#batchBytes) {
      this.#part = this.#endPart
      this.#offset = this.#endOffset
      return
    }
    let left = n
    while (left > 0) {
      const p = this.parts[this.#part]!
      const avail = p.length - this.#offset
      if (left < avail) {
        this.#offset += left
        return
      }
      left -= avail
      this.#part++
      this.#offset = 0
    }
  }
}

function writeFailed(err: unknown, what: string, fd: number, g: WriteCursor): FdError {
  const errno = errnoCode(err)
  const details = {expected: g.total, done: g.done, ...(errno ? {errno} : {}), cause: err}
  if (errno === 'EPIPE' || errno === 'ECONNRESET') {
    return new FdError('closed', what, fd, `the reader has gone (${errno}) after ${g.done} of ${g.total} bytes`, details)
  }
  return new FdError('io', what, fd, `write failed after ${g.done} of ${g.total} bytes: ${errno ?? String(err)}`, details)
}

function checkWriteArgs(fd: number, what: string): void {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`${what}: fd ${fd} is not a file descriptor`)
}

/**
 * Writes every byte of `parts`, in order, in write/writev calls of at most `chunkSize` bytes
 * (default 16 KiB) and IOV_MAX parts; partial writes carry on where they stopped. Returns the bytes
 * written (the sum of the parts). The parts are not copied.
 */
export function writeAllSync(fd: number, parts: readonly Buffer[], opts: WriteAllOptions = {}): number {
  const what = opts.what ?? `fd ${fd}`
  checkWriteArgs(fd, what)
  const g = new WriteCursor(parts, Math.max(1, opts.chunkSize ?? WRITE_CHUNK))
  const backoff = new Backoff(opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS)
  while (g.done < g.total) {
    const batch = g.batch()
    let n: number
    try {
      n = batch.length === 1 ? fs.writeSync(fd, batch[0]!) : fs.writevSync(fd, batch)
    } catch (err) {
      const retry = classify(err)
      if (retry === undefined) throw writeFailed(err, what, fd, g)
      if (retry === RETRY_LATER) sleepSync(backoff.next())
      continue
    }
    g.advance(n)
    backoff.reset()
  }
  return g.total
}

function writeOnce(fd: number, batch: Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const done = (err: NodeJS.ErrnoException | null, n: number): void => (err ? reject(err) : resolve(n))
    if (batch.length === 1) fs.write(fd, batch[0]!, 0, batch[0]!.length, null, done)
    else fs.writev(fd, batch, null, done)
  })
}

/** writeAllSync on libuv's thread pool. The parts must not change until the promise settles. */
export async function writeAll(fd: number, parts: readonly Buffer[], opts: WriteAllOptions = {}): Promise<number> {
  const what = opts.what ?? `fd ${fd}`
  checkWriteArgs(fd, what)
  const g = new WriteCursor(parts, Math.max(1, opts.chunkSize ?? WRITE_CHUNK))
  const backoff = new Backoff(Math.max(1, opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS))
  while (g.done < g.total) {
    // A fresh array: the batch is handed to the thread pool while this function waits.
    const batch = g.batch().slice()
    let n: number
    try {
      n = await writeOnce(fd, batch)
    } catch (err) {
      const retry = classify(err)
      if (retry === undefined) throw writeFailed(err, what, fd, g)
      if (retry === RETRY_LATER) await sleep(backoff.next())
      continue
    }
    g.advance(n)
    backoff.reset()
  }
  return g.total
}
