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
