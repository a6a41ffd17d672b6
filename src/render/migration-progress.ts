/**
 * How a live migration shows what it does (the events of toolstack/xl/migration-events.ts):
 *
 * - `tty`: a one-line bar on stderr redrawn with CR (xl -t, or stderr is a terminal): the pass,
 *   pages done of total, bandwidth, the guest's dirty rate, the time left in the pass; each round
 *   and xl's lines scroll above it.
 * - `plain`: one line per precopy round and one for the result, no bar.
 * - `json`: NDJSON on stdout, one object per phase, round and the result (schema below); stderr
 *   keeps xl's lines.
 *
 * NDJSON schema, version 1 (every object has `"v": 1` and `"event"`; times in ms since the command
 * started, rates in MiB/s (2^20 bytes) and pages/s, pages of 4096 bytes):
 *
 *   {"v":1,"event":"phase","phase":"connect|banner|header|precopy|stop-and-copy|ready|go|report|resume","tMs":12.3}
 *   {"v":1,"event":"iteration","iteration":1,"pages":65536,"dirty":1200,"ms":310.2,"bandwidthMiBps":825.1,
 *    "dirtyRatePps":3868.5,"predictedDowntimeMs":5.7,"tMs":330.1}            (dirty* null when unknown)
 *   {"v":1,"event":"result","ok":true,"outcome":"migrated|resumed|not-suspended|undefined|untouched",
 *    "exitCode":0,"downtimeMs":41.2,"totalMs":1250.7,"bytes":270532608,"iterations":3,"pagesSent":66000,
 *    "pausedPages":120,"bandwidthMiBps":206.3,"error":"..."}                   (error only on failure)
 *
 * Pure presentation: it writes through the writers it is given.
 */
import type {IterationStats, MigrationEvent, MigrationResult, PassProgress} from '../toolstack/xl/index.js'

export const MIGRATION_JSON_VERSION = 1

export type ProgressMode = 'tty' | 'plain' | 'json'

export interface MigrationProgressOptions {
  readonly mode: ProgressMode
  /** stderr */
  readonly err: (text: string) => void
  /** stdout (NDJSON) */
  readonly out: (text: string) => void
  /** Width of the terminal line (tty), default 100. */
  readonly columns?: number
  /** Milliseconds between two redraws of the bar (default 100). */
  readonly redrawMs?: number
  /** What prefixes the round and result lines (default `migration sender: `). */
  readonly prefix?: string
  /** The clock for tMs (default: since this renderer was made). */
  readonly now?: () => number
}

export function formatMiB(bytes: number): string {
  const mib = bytes / (1024 * 1024)
  return mib >= 1024 ? `${(mib / 1024).toFixed(2)} GiB` : `${mib.toFixed(1)} MiB`
}

export function formatMs(ms: number): string {
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
}

/** `precopy iteration 2: 5120 pages in 41 ms (487.8 MiB/s), 310 dirty (7561 pages/s)` */
export function iterationLine(s: IterationStats): string {
  const dirty = s.dirty === null ? '' : `, ${s.dirty} dirty${s.dirtyRatePps === null ? '' : ` (${Math.round(s.dirtyRatePps)} pages/s)`}`
  return `precopy iteration ${s.iteration}: ${s.pages} pages in ${formatMs(s.ms)} (${s.bandwidthMiBps.toFixed(1)} MiB/s)${dirty}`
}

/** `migrated in 1.25 s: downtime 41 ms, 120 pages while paused, 3 iterations, 258.0 MiB (206.3 MiB/s)` */
export function resultLine(r: MigrationResult): string {
  const down = r.downtimeMs === null ? '' : `downtime ${formatMs(r.downtimeMs)}, `
  const body = `${down}${r.pausedPages} pages while paused, ${r.iterations} iteration${r.iterations === 1 ? '' : 's'}, ${formatMiB(r.bytes)} (${r.bandwidthMiBps.toFixed(1)} MiB/s)`
  return r.ok ? `migrated in ${formatMs(r.totalMs)}: ${body}` : `failed after ${formatMs(r.totalMs)} (${r.outcome}): ${body}`
}

/**
 * The bar's text, without CR, at most `width - 1` columns: `iteration 2 [#######.......]  48%
 * 2488/5120 pages  410.2 MiB/s  dirty 7561 p/s  ETA 32 ms`. When the line is too narrow the ETA,
 * then the dirty rate, then the bandwidth are left out, and the bar shrinks (never below 10).
 */
export function barText(p: PassProgress, width = 100): string {
  const pct = p.total > 0 ? Math.min(100, Math.floor((p.done * 100) / p.total)) : 100
  const label = p.pass === 'final' ? 'stop-and-copy' : p.pass
  const fixed = `${String(pct).padStart(3)}%  ${p.done}/${p.total} pages`
  const optional = [
    `${p.bandwidthMiBps.toFixed(1)} MiB/s`,
    ...(p.dirtyRatePps !== null ? [`dirty ${Math.round(p.dirtyRatePps)} p/s`] : []),
    ...(p.etaMs !== null ? [`ETA ${formatMs(p.etaMs)}`] : []),
  ]
  const max = Math.max(20, width - 1)
  const compose = (room: number, parts: readonly string[]): string => {
    const filled = p.total > 0 ? Math.round((room * Math.min(p.done, p.total)) / p.total) : room
    return [`${label} [${'#'.repeat(filled)}${'.'.repeat(room - filled)}] ${fixed}`, ...parts].join('  ')
  }
  for (let keep = optional.length; keep >= 0; keep--) {
    const parts = optional.slice(0, keep)
    const text = compose(30, parts)
    if (text.length <= max) return text
    const room = 30 - (text.length - max)
    if (room >= 10) return compose(room, parts)
  }
  return compose(10, []).slice(0, max)
}

type JsonValue = string | number | boolean | null

function round(n: number | null): number | null {
  return n === null ? null : Math.round(n * 10) / 10
}

/** The NDJSON object of an event, or undefined for events NDJSON does not carry. */
export function migrationJson(e: MigrationEvent, tMs: number): Record<string, JsonValue> | undefined {
  const v = MIGRATION_JSON_VERSION
  switch (e.kind) {
    case 'phase':
      return {v, event: 'phase', phase: e.phase, tMs: round(e.atMs)}
    case 'iteration':
      return {
        v,
        event: 'iteration',
        iteration: e.iteration,
        pages: e.pages,
        dirty: e.dirty,
        ms: round(e.ms),
        bandwidthMiBps: round(e.bandwidthMiBps),
        dirtyRatePps: round(e.dirtyRatePps),
        predictedDowntimeMs: round(e.predictedDowntimeMs),
        tMs: round(tMs),
      }
    case 'result':
      return {
        v,
        event: 'result',
        ok: e.ok,
        domain: e.domain,
        domid: e.domid,
        outcome: e.outcome,
        exitCode: e.exitCode,
        downtimeMs: round(e.downtimeMs),
        totalMs: round(e.totalMs),
        bytes: e.bytes,
        iterations: e.iterations,
        pagesSent: e.pagesSent,
        pausedPages: e.pausedPages,
        bandwidthMiBps: round(e.bandwidthMiBps),
        ...(e.error !== undefined ? {error: e.error} : {}),
      }
    default:
      return undefined
  }
}

/**
 * Renders migration events. Lines (xl's, logs) are not its business except that the bar must be
 * cleared before one is printed: call `beforeLine()` first.
 */
export class MigrationProgress {
  readonly #o: MigrationProgressOptions
  readonly #start = performance.now()
  #barShown = false
  #lastDraw = 0
  #pending: PassProgress | undefined

  constructor(opts: MigrationProgressOptions) {
    this.#o = opts
  }

  get #prefix(): string {
    return this.#o.prefix ?? 'migration sender: '
  }

  #now(): number {
    return this.#o.now ? this.#o.now() : performance.now() - this.#start
  }

  /** Clears the bar so that a line can be printed in its place. */
  beforeLine(): void {
    if (!this.#barShown) return
    this.#o.err('\r\x1b[K')
    this.#barShown = false
  }

  handle(e: MigrationEvent): void {
    const mode = this.#o.mode
    if (mode === 'json') {
      const o = migrationJson(e, this.#now())
      if (o) this.#o.out(`${JSON.stringify(o)}\n`)
      return
    }
    switch (e.kind) {
      case 'pages':
        if (mode === 'tty') this.#bar(e)
        return
      case 'iteration':
        this.beforeLine()
        this.#o.err(`${this.#prefix}${iterationLine(e)}\n`)
        this.#redrawPending()
        return
      case 'result':
        this.beforeLine()
        this.#pending = undefined
        // A failure is told by xl's lines; the numbers are only news when something moved.
        if (e.ok || e.pagesSent > 0) this.#o.err(`${this.#prefix}${resultLine(e)}\n`)
        return
      case 'phase':
        if (e.phase === 'ready' || e.phase === 'resume') {
          this.beforeLine()
          this.#pending = undefined
        }
        return
      default:
        return
    }
  }

  /** Removes the bar at the end. */
  finish(): void {
    this.beforeLine()
    this.#pending = undefined
  }

  #bar(p: PassProgress): void {
    // The suspended pass is short and ends the precopy: no bar left behind for it.
    if (p.total === 0 || (p.pass === 'final' && p.done >= p.total)) {
      this.#pending = undefined
      this.beforeLine()
      return
    }
    this.#pending = p.done >= p.total ? undefined : p
    const now = performance.now()
    const last = p.done >= p.total || p.done === 0
    if (!last && now - this.#lastDraw < (this.#o.redrawMs ?? 100)) return
    this.#lastDraw = now
    this.#o.err(`\r${barText(p, this.#o.columns ?? 100)}\x1b[K`)
    this.#barShown = true
  }

  #redrawPending(): void {
    if (this.#o.mode === 'tty' && this.#pending) {
      this.#o.err(`\r${barText(this.#pending, this.#o.columns ?? 100)}\x1b[K`)
      this.#barShown = true
    }
  }
}
