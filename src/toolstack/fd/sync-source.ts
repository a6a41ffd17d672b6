/**
 * The save/restore helper's ByteSource: synchronous reads (fs.readSync, in pieces of at most 64 KiB)
 * into memory that is used again and again.
 *
 * Why not FdByteSource: it reads on libuv's thread pool (one thread hop per piece) and allocates a
 * fresh Buffer for every record. A fresh 4 MiB Buffer is fresh address space: each of its 1024 pages
 * is faulted in (and zeroed by the kernel) on first write, which costs several times what copying
 * the record does once the memory is mapped. The helper moves ~GB/s and does nothing else while it
 * reads a record, so it reads synchronously and recycles record buffers.
 *
 * The trade-off, and how it is handled: recycled memory is only safe once the consumer is done with
 * it. So reuse is explicit: a consumer that is done with a buffer returned by `read`/`readSync`
 * calls `release(buf)` (a PAGE_DATA record: after its pages are written to guest memory), and the
 * next large read of a similar size gets that memory back. Buffers never released are simply
 * garbage collected: forgetting `release` costs speed, never correctness; releasing too early is the
 * one mistake (the memory is overwritten by a later read). A Remus/COLO restore that buffers a whole
 * checkpoint holds many records at once; they go back to the pool when the checkpoint is applied,
 * and the pool keeps at most `maxIdle` of them (the rest are left to the GC).
 *
 * Small reads (record headers, below `poolMinSize`) come from Buffer.allocUnsafe, which for tiny
 * sizes carves Node's shared 8 KiB pool: cheap, no recycling needed.
 *
 * Measured (test/fd-throughput.test.ts, 2-core EPYC, Node 20; runs vary, compare within one): a
 * 4 MiB record read from tmpfs costs ~0.5-0.8 ms into recycled memory and ~2.3-2.6 ms into a fresh
 * Buffer (FdByteSource, async: ~1.8-2.0 ms); through a FIFO fed by writeAllSync the released pool
 * reads ~1.3 GB/s, as fast as the writer, against ~0.8-1.0 GB/s with a fresh Buffer per record.
 *
 * Considered and not taken: one large slab carved in order (needs frees in the same order, which
 * a buffering restore does not do), and one scratch buffer valid until the next read (what the
 * pool degenerates to with `maxIdle: 1`, but silently wrong for a consumer that keeps a record).
 */
import * as fs from 'node:fs'

import type {ByteSource} from '../stream/index.js'
import {FdError, errnoCode} from './errors.js'
import {kernelCopy, moveOrFail} from './kernel-copy.js'
import {READ_PIECE, sleepSync} from './raw-io.js'

export interface SyncFdSourceOptions {
  /** Stream offset of the first byte (default 0). */
  readonly offset?: number
  /** Largest single read(2) (default READ_PIECE, 64 KiB). */
  readonly pieceSize?: number
  /** Reads of at least this many bytes use pooled memory (default 64 KiB). */
  readonly poolMinSize?: number
  /** How many released buffers the pool keeps (default 4). */
  readonly maxIdle?: number
  /** Longest sleep between retries after EAGAIN, in ms (default 10). */
  readonly maxWaitMs?: number
  /** For error messages (default `fd N`). */
  readonly what?: string
}

export interface SyncFdSourceStats {
  /** read()/readSync() calls. */
  readonly reads: number
  /** read(2) calls that returned data. */
  readonly syscalls: number
  /** Pooled buffers allocated, and bytes in them. */
  readonly allocated: number
  readonly allocatedBytes: number
  /** Large reads served from released memory. */
  readonly reused: number
  /** Times a read found a non-blocking fd empty and slept. */
  readonly eagainWaits: number
  /** Buffers currently in the pool. */
  readonly idle: number
}

/** Pooled memory is allocated in multiples of this. */
const POOL_GRAIN = 64 * 1024

interface Slot {
  readonly memory: Buffer
  leased: boolean
}

export class SyncFdSource implements ByteSource {
  #offset: number
  readonly #piece: number
  readonly #poolMin: number
  readonly #maxIdle: number
  readonly #maxWait: number
  readonly #what: string
  /** Idle pooled memory, smallest first. */
  readonly #idle: Slot[] = []
  /** Every pooled allocation still reachable, by its ArrayBuffer (how a view finds its slot). */
  readonly #slots = new WeakMap<ArrayBufferLike, Slot>()
  #reads = 0
  #syscalls = 0
  #allocated = 0
  #allocatedBytes = 0
  #reused = 0
  #waits = 0

  constructor(
    /** The fd read from; this source never closes it. */
    readonly fd: number,
    opts: SyncFdSourceOptions = {},
  ) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd ${fd} is not a file descriptor`)
    this.#offset = opts.offset ?? 0
    this.#piece = Math.max(1, opts.pieceSize ?? READ_PIECE)
    this.#poolMin = Math.max(1, opts.poolMinSize ?? 64 * 1024)
    this.#maxIdle = Math.max(0, opts.maxIdle ?? 4)
    this.#maxWait = Math.max(0.05, opts.maxWaitMs ?? 10)
    this.#what = opts.what ?? `fd ${fd}`
    if (kernelCopy()) {
      this.moveTo = (to, offset, length) => {
        try {
          return Promise.resolve(this.moveToSync(to, offset, length))
        } catch (err) {
          return Promise.reject(err)
        }
      }
    }
  }

  /**
   * ByteSource: moves the next `length` bytes to `fd` at `offset` in the kernel (kernel-copy.ts),
   * never through our memory. Present only where the kernel copy module is built and loads.
   */
  readonly moveTo?: (fd: number, offset: number, length: number) => Promise<number>

  get offset(): number {
    return this.#offset
  }

  get stats(): SyncFdSourceStats {
    return {
      reads: this.#reads,
      syscalls: this.#syscalls,
      allocated: this.#allocated,
      allocatedBytes: this.#allocatedBytes,
      reused: this.#reused,
      eagainWaits: this.#waits,
      idle: this.#idle.length,
    }
  }

  /** ByteSource: readSync, as a promise (the work is done before it returns). */
  read(length: number): Promise<Buffer> {
    try {
      return Promise.resolve(this.readSync(length))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * Reads exactly `length` bytes; fewer only at end of file. Large results are views of pooled
   * memory: pass them to `release` when done with them.
   */
  readSync(length: number): Buffer {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`cannot read ${length} bytes`)
    this.#reads++
    if (length === 0) return Buffer.alloc(0)
    const buf = length >= this.#poolMin ? this.#lease(length) : Buffer.allocUnsafe(length)
    const got = this.#fill(buf, 0, length)
    return got === length ? buf : buf.subarray(0, got)
  }

  /** Reads up to `length` bytes straight into `target` at `offset`; returns how many (short at EOF). */
  readIntoSync(target: Buffer, offset: number, length: number): number {
    if (offset < 0 || length < 0 || offset + length > target.length) {
      throw new RangeError(`${length} bytes at ${offset} do not fit a buffer of ${target.length}`)
    }
    this.#reads++
    return this.#fill(target, offset, length)
  }

  /** moveTo, synchronously; throws where the kernel copy is not available. */
  moveToSync(fd: number, offset: number, length: number): number {
    const copy = kernelCopy()
    if (!copy) throw new Error(`${this.#what}: moving bytes in the kernel needs the kernel copy module`)
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`cannot move ${length} bytes`)
    this.#reads++
    const move = {inFd: this.fd, inOffset: -1, outFd: fd, outOffset: offset, length, share: false}
    const n = moveOrFail(copy, move, this.#what, this.fd, `moving ${length} bytes to fd ${fd} at stream offset ${this.#offset}`)
    this.#syscalls++
    this.#offset += n
    return n
  }

  /**
   * Gives back a buffer returned by read/readSync (or any view of it) for later reads. A buffer
   * that did not come from the pool is ignored; releasing the same one twice throws.
   */
  release(buf: Buffer): void {
    const slot = this.#slots.get(buf.buffer)
    if (!slot) return
    if (!slot.leased) throw new Error(`${this.#what}: buffer released twice`)
    slot.leased = false
    if (this.#idle.length >= this.#maxIdle) {
      // Keep the larger ones: a small read can use a large buffer, not the reverse.
      const smallest = this.#idle[0]
      if (!smallest || smallest.memory.length >= slot.memory.length) {
        this.#slots.delete(buf.buffer)
        return
      }
      this.#idle.shift()
      this.#slots.delete(smallest.memory.buffer)
    }
    const at = this.#idle.findIndex((s) => s.memory.length > slot.memory.length)
    this.#idle.splice(at < 0 ? this.#idle.length : at, 0, slot)
  }

  /** Drops the pooled memory (for the GC). */
  drain(): void {
    for (const s of this.#idle) this.#slots.delete(s.memory.buffer)
    this.#idle.length = 0
  }

  #lease(length: number): Buffer {
    // Smallest idle buffer that fits, unless it is more than 4x too big.
    const i = this.#idle.findIndex((s) => s.memory.length >= length)
    const fit = i >= 0 ? this.#idle[i] : undefined
    if (fit && fit.memory.length <= length * 4) {
      this.#idle.splice(i, 1)
      fit.leased = true
      this.#reused++
      return fit.memory.subarray(0, length)
    }
    const size = Math.ceil(length / POOL_GRAIN) * POOL_GRAIN
    const memory = Buffer.allocUnsafeSlow(size)
    const slot: Slot = {memory, leased: true}
    this.#slots.set(memory.buffer, slot)
    this.#allocated++
    this.#allocatedBytes += size
    return memory.subarray(0, length)
  }

  #fill(buf: Buffer, at: number, length: number): number {
    let got = 0
    let wait = 0.05
    while (got < length) {
      let n: number
      try {
        n = fs.readSync(this.fd, buf, at + got, Math.min(this.#piece, length - got), null)
      } catch (err) {
        const code = errnoCode(err)
        if (code === 'EINTR') continue
        if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
          this.#waits++
          sleepSync(wait)
          wait = Math.min(this.#maxWait, wait * 2)
          continue
        }
        throw new FdError('io', this.#what, this.fd, `read failed at stream offset ${this.#offset}: ${code ?? String(err)}`, {
          expected: length,
          done: got,
          ...(code ? {errno: code} : {}),
          cause: err,
        })
      }
      if (n === 0) break
      this.#syscalls++
      got += n
      this.#offset += n
      wait = 0.05
    }
    return got
  }
}
