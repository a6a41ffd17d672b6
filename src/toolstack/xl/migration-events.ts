/**
 * What a live migration reports while it runs, as typed events: xl's own lines, the phases, one
 * event per precopy round with its numbers, page counts inside a pass (for a progress bar), and the
 * result. Commands render them (src/render/migration-progress.ts): a bar on a terminal, plain lines
 * otherwise, NDJSON with --json.
 *
 * The numbers come from the save helper's messages (XEN-FACTS §5.4, §6): `progress` with doing_what
 * `Frames iteration N: ` / `Frames final: ` and done/total every 4 MiB, milestones (`Domain now
 * suspended`) with 0/0, and our helper's DETAIL log `precopy round N: S pages sent in M ms, D dirty`.
 * PrecopyTracker turns them into rounds; Xen's own helper sends the progress messages too, so the
 * bar works with it (without the dirty counts).
 */
import type {HelperLogEvent, HelperProgressEvent} from '../helper/index.js'

export const PAGE_BYTES = 4096
const MiB = 1024 * 1024

export type MigrationPhase =
  | 'connect' // the transport is starting
  | 'banner' // the receiver answered
  | 'header' // the xl header and config are sent / read
  | 'precopy' // live rounds
  | 'stop-and-copy' // the guest is suspended, the last pages go
  | 'ready' // the receiver has the domain
  | 'go' // permission to start given / received
  | 'report' // the receiver said how its start went
  | 'resume' // resuming at the sender after a failure

/** One precopy pass, when it is over. */
export interface IterationStats {
  /** 1 = the first (full) pass. */
  readonly iteration: number
  /** Pages sent in the pass. */
  readonly pages: number
  /** Pages dirtied meanwhile (what the next pass has to send); null when the engine did not say. */
  readonly dirty: number | null
  readonly ms: number
  /** Stream bandwidth of the pass, MiB/s. */
  readonly bandwidthMiBps: number
  /** Pages per second the guest dirtied during the pass; null when unknown. */
  readonly dirtyRatePps: number | null
  /** Predicted stop-and-copy time if the sender stopped now: dirty pages at this bandwidth, ms. */
  readonly predictedDowntimeMs: number | null
}

/** Pages inside a pass, as it goes. */
export interface PassProgress {
  /** `iteration N` or `final` (the suspended pass). */
  readonly pass: string
  readonly iteration: number | null
  readonly done: number
  readonly total: number
  /** Bandwidth so far in this pass, MiB/s (0 at its start). */
  readonly bandwidthMiBps: number
  /** Time left in this pass at that bandwidth, ms; null when unknown. */
  readonly etaMs: number | null
  /** The last finished round's dirty rate, pages/s. */
  readonly dirtyRatePps: number | null
}

export type MigrationOutcome =
  /** The domain runs at the target; the source copy is destroyed. */
  | 'migrated'
  /** The migration failed and the domain runs at the source again. */
  | 'resumed'
  /** The guest never suspended (xl's failed_suspend): it runs at the source. */
  | 'not-suspended'
  /** xl's failed_badly: after GO the state is undefined; the source copy is kept `--migratedaway`. */
  | 'undefined'
  /** Nothing was touched (the receiver never answered, bad options). */
  | 'untouched'

export interface MigrationResult {
  readonly ok: boolean
  /** The domain migrated (its name and domid here, at the source). */
  readonly domain: string
  readonly domid: number
  readonly outcome: MigrationOutcome
  readonly exitCode: number
  /** From the start of the command's work to the end, ms. */
  readonly totalMs: number
  /** From the suspend to the target's report: the guest ran nowhere, ms. null if never suspended. */
  readonly downtimeMs: number | null
  /** Precopy rounds (live passes). */
  readonly iterations: number
  /** Pages sent, all passes. */
  readonly pagesSent: number
  /** Pages sent while the guest was suspended. */
  readonly pausedPages: number
  /** Bytes on the wire: xl header, the page records exactly, a small allowance for the rest. */
  readonly bytes: number
  /** Average bandwidth of the whole stream, MiB/s. */
  readonly bandwidthMiBps: number
  /** Why it failed, one line; absent on success. */
  readonly error?: string
}

export type MigrationEvent =
  /** A line xl prints (on stderr): `migration sender: Target has acknowledged transfer.` */
  | {readonly kind: 'line'; readonly text: string}
  /** A log line at a xentoollog level: shown by default from info up, with -v from detail. */
  | {readonly kind: 'log'; readonly level: 'error' | 'warning' | 'info' | 'detail' | 'verbose' | 'debug'; readonly text: string}
  | {readonly kind: 'phase'; readonly phase: MigrationPhase; readonly atMs: number}
  | ({readonly kind: 'iteration'} & IterationStats)
  | ({readonly kind: 'pages'} & PassProgress)
  | ({readonly kind: 'result'} & MigrationResult)

export type MigrationEventHandler = (e: MigrationEvent) => void

/** Bytes of the PAGE_DATA records that carry `pages` pages, 1024 to a record (XEN-FACTS §3.4). */
export function pageRecordBytes(pages: number): number {
  const records = Math.ceil(pages / 1024)
  return records * 16 + pages * (8 + PAGE_BYTES)
}

const ITERATION_RE = /^Frames iteration (\d+)/
const FINAL_RE = /^Frames final/
const ROUND_RE = /^precopy round (\d+): (\d+) pages sent in (\d+) ms, (\d+) dirty/

interface Pass {
  name: string
  iteration: number | null
  startedMs: number
  total: number
  done: number
  reported: boolean
}

/**
 * Turns the save helper's progress and log messages into iteration and page events, and keeps the
 * totals for the result.
 */
export class PrecopyTracker {
  #pass: Pass | undefined
  #lastDirtyRate: number | null = null
  iterations = 0
  pagesSent = 0
  pausedPages = 0
  /** Bytes of the PAGE_DATA records of every pass so far. */
  recordBytes = 0
  precopyStarted = false
  /** performance.now() of the first page of the suspended pass. */
  finalStartedMs: number | undefined

  constructor(private readonly emit: MigrationEventHandler) {}

  progress(p: HelperProgressEvent): void {
    const what = p.doingWhat
    const now = performance.now()
    const it = ITERATION_RE.exec(what)
    const isFinal = FINAL_RE.test(what)
    if (!it && !isFinal) return
    const name = it ? `iteration ${it[1]}` : 'final'
    if (!this.#pass || this.#pass.name !== name) {
      this.#closePass(null, now)
      this.#pass = {name, iteration: it ? Number(it[1]) : null, startedMs: now, total: p.total, done: 0, reported: false}
      if (it) {
        this.iterations = Math.max(this.iterations, Number(it[1]))
        this.precopyStarted = true
      } else {
        this.finalStartedMs = now
      }
    }
    const pass = this.#pass
    pass.total = p.total
    pass.done = p.done
    const elapsed = now - pass.startedMs
    const bw = elapsed > 0 ? (p.done * PAGE_BYTES) / MiB / (elapsed / 1000) : 0
    const rate = elapsed > 0 ? p.done / elapsed : 0
    this.emit({
      kind: 'pages',
      pass: name,
      iteration: pass.iteration,
      done: p.done,
      total: p.total,
      bandwidthMiBps: bw,
      etaMs: rate > 0 ? (p.total - p.done) / rate : null,
      dirtyRatePps: this.#lastDirtyRate,
    })
    if (p.done >= p.total) {
      if (isFinal) {
        this.pausedPages = p.total
        this.pagesSent += p.total
        this.recordBytes += pageRecordBytes(p.total)
        this.#pass = undefined
      }
      // A live pass is closed by its round log, or by the next pass when the engine sent none.
    }
  }

  log(l: HelperLogEvent): void {
    const m = ROUND_RE.exec(l.message)
    if (!m) return
    const [iteration, pages, ms, dirty] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])]
    if (this.#pass && this.#pass.iteration === iteration) this.#pass.reported = true
    this.#report(iteration, pages, dirty, ms)
    if (this.#pass && this.#pass.iteration === iteration) this.#pass = undefined
  }

  /** The stream is over (or failed): closes a pass that never got its round log. */
  finish(): void {
    this.#closePass(null, performance.now())
  }

  #closePass(dirty: number | null, now: number): void {
    const pass = this.#pass
    if (!pass || pass.reported || pass.iteration === null) return
    this.#pass = undefined
    if (pass.done < pass.total) return
    this.#report(pass.iteration, pass.total, dirty, now - pass.startedMs)
  }

  #report(iteration: number, pages: number, dirty: number | null, ms: number): void {
    this.pagesSent += pages
    this.recordBytes += pageRecordBytes(pages)
    const seconds = ms / 1000
    const bandwidthMiBps = seconds > 0 ? (pages * PAGE_BYTES) / MiB / seconds : 0
    const dirtyRatePps = dirty !== null && seconds > 0 ? dirty / seconds : null
    if (dirtyRatePps !== null) this.#lastDirtyRate = dirtyRatePps
    const pagesPerMs = ms > 0 ? pages / ms : 0
    this.emit({
      kind: 'iteration',
      iteration,
      pages,
      dirty,
      ms,
      bandwidthMiBps,
      dirtyRatePps,
      predictedDowntimeMs: dirty !== null && pagesPerMs > 0 ? dirty / pagesPerMs : null,
    })
  }
}
