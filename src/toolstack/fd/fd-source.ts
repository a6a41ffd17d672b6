/**
 * A ByteSource over a raw fd: a file, a FIFO, a pipe, a socket or stdin (fd 0). It reads with
 * `fs.read` (libuv, off the event loop) at the fd's current position, in pieces of at most 64 KiB,
 * straight into one Buffer of the size asked for, and never asks the kernel for a byte beyond it:
 * the fd may be shared with another process that owns the bytes after ours (DESIGN.md, "Processes
 * and fds"). No Node stream is ever made over the fd, since a stream reads ahead.
 *
 * An fd in non-blocking mode (a pipe or TTY that some other program set O_NONBLOCK on; the flag
 * belongs to the open file description, so it is shared with whoever else has the fd) answers EAGAIN
 * when nothing is there yet: the read then waits a little and tries again, backing off from 1 ms up
 * to `maxWaitMs`, because Node has no way to poll(2) a raw fd.
 */
import * as fs from 'node:fs'

import type {ByteSource} from '../stream/index.js'

/** The largest single `read(2)` issued: a pipe holds 64 KiB by default. */
export const FD_READ_CHUNK = 64 * 1024

export interface FdByteSourceOptions {
  /** Stream offset of the first byte this source will read (default 0). */
  readonly offset?: number
  /** Largest single read, at most FD_READ_CHUNK (tests use small values). */
  readonly chunkSize?: number
  /** Longest wait between retries after EAGAIN, in ms (default 20). */
  readonly maxWaitMs?: number
}

function readOnce(fd: number, buffer: Buffer, offset: number, length: number): Promise<number> {
  return new Promise((resolve, reject) => {
    // position null: read(2) at the fd's own position, which moves for every holder of the fd.
    fs.read(fd, buffer, offset, length, null, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)))
  })
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function isRetryable(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR'
}

export class FdByteSource implements ByteSource {
  #offset: number
  #busy = false
  #waits = 0
  readonly #chunk: number
  readonly #maxWaitMs: number

  constructor(
    /** The fd read from; this source never closes it. */
    readonly fd: number,
    opts: FdByteSourceOptions = {},
  ) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd ${fd} is not a file descriptor`)
    this.#offset = opts.offset ?? 0
    this.#chunk = Math.max(1, Math.min(FD_READ_CHUNK, opts.chunkSize ?? FD_READ_CHUNK))
    this.#maxWaitMs = Math.max(1, opts.maxWaitMs ?? 20)
  }

  get offset(): number {
    return this.#offset
  }

  /** How many times a read found a non-blocking fd empty and waited (diagnostics, tests). */
  get eagainWaits(): number {
    return this.#waits
  }

  /**
   * Reads exactly `length` bytes; fewer only at end of file (a pipe or FIFO with no writer left),
   * none when the source ended before the first byte.
   */
  async read(length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`cannot read ${length} bytes`)
    if (this.#busy) throw new Error(`FdByteSource(fd ${this.fd}): a read is already in progress`)
    if (length === 0) return Buffer.alloc(0)
    this.#busy = true
    try {
      const buffer = Buffer.allocUnsafe(length)
      let got = 0
      let wait = 1
      while (got < length) {
        let n: number
        try {
          n = await readOnce(this.fd, buffer, got, Math.min(this.#chunk, length - got))
        } catch (err) {
          if (!isRetryable(err)) throw err
          if ((err as NodeJS.ErrnoException).code !== 'EINTR') {
            this.#waits++
            await sleep(wait)
            wait = Math.min(this.#maxWaitMs, wait * 2)
          }
          continue
        }
        if (n === 0) break // end of file
        got += n
        this.#offset += n
        wait = 1
      }
      return got === length ? buffer : buffer.subarray(0, got)
    } finally {
      this.#busy = false
    }
  }
}

/** A file opened for reading by path: its raw fd, what fstat says, and how to close it. */
export interface OpenedFile {
  readonly fd: number
  /** Size in bytes when it is a regular file. */
  readonly size?: number
  close(): Promise<void>
}

/**
 * Opens a path read-only (a file, a FIFO, a device) and returns the raw fd. Refuses a directory.
 * Errors are Node's ErrnoExceptions (ENOENT, EACCES, EISDIR, ...).
 */
export async function openForReading(path: string): Promise<OpenedFile> {
  const fd = await new Promise<number>((resolve, reject) => fs.open(path, 'r', (err, fd) => (err ? reject(err) : resolve(fd))))
  const close = () => new Promise<void>((resolve) => fs.close(fd, () => resolve()))
  try {
    const st = await new Promise<fs.Stats>((resolve, reject) => fs.fstat(fd, (err, s) => (err ? reject(err) : resolve(s))))
    if (st.isDirectory()) {
      throw Object.assign(new Error(`EISDIR: illegal operation on a directory, open '${path}'`), {code: 'EISDIR', syscall: 'open', path})
    }
    return {fd, ...(st.isFile() ? {size: st.size} : {}), close}
  } catch (err) {
    await close()
    throw err
  }
}

/** An errno error's text without Node's code prefix and syscall suffix: `no such file or directory`. */
export function errnoText(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const m = /^[A-Z][A-Z0-9_]*: (.*?)(?:, \w+(?: '.*')?)?$/s.exec(err.message)
  return m?.[1] ?? err.message
}
