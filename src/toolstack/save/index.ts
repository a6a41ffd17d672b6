/** The libxc-level save engine and its precopy policies. */
export {saveDomain, SaveError, type RecordSink, type SaveCallbacks, type SaveEvent, type SaveOptions} from './engine.js'
export {
  downtimePolicy,
  parseTuning,
  policyFor,
  PRECOPY_ENV,
  thresholdPolicy,
  xlPolicy,
  XL_DIRTY_THRESHOLD,
  XL_MAX_ITERATIONS,
  type PolicyDecision,
  type PrecopyPolicy,
  type PrecopyStats,
  type PrecopyTuning,
} from './policy.js'
