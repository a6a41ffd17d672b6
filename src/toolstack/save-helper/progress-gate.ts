/**
 * Which page progress the helper passes on to the toolstack. The save engine reports every record
 * (4 MiB); each message wakes the toolstack, which shares the CPUs with the page copy (on two cores,
 * 256 wake-ups per GiB cost a migration ~7% of its throughput). The start and the end of each pass
 * always go (the toolstack's lines and events are made of them), and in between at most one every
 * `intervalMs`: a progress bar still moves 20 times a second.
 */
export const PROGRESS_INTERVAL_MS = 50

export class ProgressGate {
  #last = -Infinity
  #prefix: string | undefined

  constructor(private readonly intervalMs = PROGRESS_INTERVAL_MS) {}

  /** Whether to pass on `done` of `total` for `prefix` at time `now` (ms). */
  pass(prefix: string, done: number, total: number, now: number): boolean {
    const edge = done === 0 || done >= total || prefix !== this.#prefix
    if (!edge && now - this.#last < this.intervalMs) return false
    this.#prefix = prefix
    this.#last = now
    return true
  }
}
