/**
 * Precopy policies (XEN-FACTS §6): asked before and after every live round what to do next. The
 * stats are libxc's precopy_stats; `dirtyCount` is -1 when not known yet (right after a round).
 */
export type PolicyDecision = 'abort' | 'continue' | 'stop'

export interface PrecopyStats {
  /** Rounds sent so far. */
  readonly iteration: number
  /** Pages sent so far by the live rounds. */
  readonly totalWritten: number
  /** Pages dirty now, -1 when unknown. */
  readonly dirtyCount: number
  /** Pages per second the stream moved in the last round (0 before the first). */
  readonly sendRate: number
  /** Pages per second the guest dirtied during the last round (0 before the first). */
  readonly dirtyRate: number
}

export type PrecopyPolicy = (stats: PrecopyStats) => PolicyDecision

/** libxc's simple_precopy_policy, which is what xl uses: stop below 50 dirty pages or after 5 rounds. */
export const XL_MAX_ITERATIONS = 5
export const XL_DIRTY_THRESHOLD = 50

export function thresholdPolicy(maxIterations = XL_MAX_ITERATIONS, dirtyThreshold = XL_DIRTY_THRESHOLD): PrecopyPolicy {
  return (s) => ((s.dirtyCount >= 0 && s.dirtyCount < dirtyThreshold) || s.iteration >= maxIterations ? 'stop' : 'continue')
}

export const xlPolicy: PrecopyPolicy = thresholdPolicy()

/**
 * Stops when the pages still dirty could be sent within `maxDowntimeMs` at the rate the last round
 * achieved (the predicted stop-and-copy time), as QEMU's downtime limit does; gives up converging
 * after `maxIterations` rounds and stops anyway.
 */
export function downtimePolicy(maxDowntimeMs: number, maxIterations = 30): PrecopyPolicy {
  return (s) => {
    if (s.iteration >= maxIterations) return 'stop'
    if (s.dirtyCount < 0 || s.sendRate <= 0) return 'continue'
    const predictedMs = (s.dirtyCount / s.sendRate) * 1000
    return predictedMs <= maxDowntimeMs ? 'stop' : 'continue'
  }
}

/** Tuning a sender may pass to our helper (xl has none; Xen's helper ignores it). */
export interface PrecopyTuning {
  maxIterations?: number
  dirtyThreshold?: number
  maxDowntimeMs?: number
  /** Stream bandwidth cap, MiB/s. */
  bandwidthMiBps?: number
}

/** The environment variable carrying PrecopyTuning as JSON from the toolstack to our helper. */
export const PRECOPY_ENV = 'XL_TS_PRECOPY'

export function policyFor(t: PrecopyTuning): PrecopyPolicy {
  if (t.maxDowntimeMs !== undefined) return downtimePolicy(t.maxDowntimeMs, t.maxIterations ?? 30)
  return thresholdPolicy(t.maxIterations ?? XL_MAX_ITERATIONS, t.dirtyThreshold ?? XL_DIRTY_THRESHOLD)
}

/** Reads PrecopyTuning from its JSON form; throws on anything malformed. */
export function parseTuning(json: string): PrecopyTuning {
  const v = JSON.parse(json) as Record<string, unknown>
  const out: PrecopyTuning = {}
  for (const key of ['maxIterations', 'dirtyThreshold', 'maxDowntimeMs', 'bandwidthMiBps'] as const) {
    const x = v[key]
    if (x === undefined) continue
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) throw new Error(`${PRECOPY_ENV}: ${key} must be a positive number`)
    out[key] = x
  }
  return out
}
