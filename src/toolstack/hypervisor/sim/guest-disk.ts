/**
 * The simulated guest's disk requests, on their way to its device model.
 *
 * The guest issues a write (a block filled with one byte, see workload.ts) in the step that decides
 * it; the device model carries it out later, one request at a time, in order. Like a real guest
 * blocked on its disk, the guest stops executing while `limit` requests are outstanding
 * (`backlogged`), so what it writes never depends on how fast the disk is, only when.
 *
 * Suspend and pause wait for `drained()`: a checkpoint's disk holds exactly the writes of the steps
 * its memory has run (QEMU's `stop` drains its block layer the same way). A failed write is counted
 * and the guest goes on (it would see an I/O error); it is not retried.
 */

/** Carries out one write: `pattern` repeated over `length` bytes at `offset`. */
export type DiskWriter = (offset: number, length: number, pattern: number) => Promise<void>

export interface GuestDiskStats {
  /** Writes the guest issued. */
  readonly issued: number
  /** Writes the device model completed. */
  readonly completed: number
  /** Writes the device model failed. */
  readonly failed: number
  /** Issued and not finished yet. */
  readonly pending: number
  /** The last failure's message. */
  readonly lastError?: string
  /** The longest time one write took, ms. */
  readonly maxLatencyMs: number
}

interface Request {
  readonly offset: number
  readonly length: number
  readonly pattern: number
}

export class GuestDiskQueue {
  readonly #queue: Request[] = []
  #busy = false
  #issued = 0
  #completed = 0
  #failed = 0
  #lastError: string | undefined
  #maxLatencyMs = 0
  #drainWaiters: (() => void)[] = []

  constructor(
    private readonly writer: DiskWriter,
    /** Outstanding requests at which the guest waits. */
    private readonly limit = 16,
    /** Called whenever a request finishes (the guest may run again). */
    private readonly onProgress: () => void = () => undefined,
  ) {}

  get pending(): number {
    return this.#queue.length + (this.#busy ? 1 : 0)
  }

  get backlogged(): boolean {
    return this.pending >= this.limit
  }

  stats(): GuestDiskStats {
    return {
      issued: this.#issued,
      completed: this.#completed,
      failed: this.#failed,
      pending: this.pending,
      maxLatencyMs: this.#maxLatencyMs,
      ...(this.#lastError !== undefined ? {lastError: this.#lastError} : {}),
    }
  }

  push(offset: number, length: number, pattern: number): void {
    this.#issued++
    this.#queue.push({offset, length, pattern})
    if (!this.#busy) void this.#pump()
  }

  /** Resolves once nothing is outstanding. */
  drained(): Promise<void> {
    if (this.pending === 0) return Promise.resolve()
    return new Promise((resolve) => this.#drainWaiters.push(resolve))
  }

  async #pump(): Promise<void> {
    this.#busy = true
    for (let r = this.#queue.shift(); r; r = this.#queue.shift()) {
      const t0 = performance.now()
      try {
        await this.writer(r.offset, r.length, r.pattern)
        this.#completed++
      } catch (err) {
        this.#failed++
        this.#lastError = err instanceof Error ? err.message : String(err)
      }
      this.#maxLatencyMs = Math.max(this.#maxLatencyMs, performance.now() - t0)
      if (this.#queue.length === 0) this.#busy = false
      this.onProgress()
    }
    this.#busy = false
    const waiters = this.#drainWaiters
    this.#drainWaiters = []
    for (const w of waiters) w()
  }
}
