/** The libxc-level restore engine. */
export {
  restoreDomain,
  RestoreError,
  XGR_SDD_MISSING_CPUID,
  XGR_SDD_MISSING_MSR,
  type RestoreCallbacks,
  type RestoreEvent,
  type RestoreOptions,
  type RestoreResult,
} from './engine.js'
export {XGR_CHECKPOINT} from '../helper/index.js'
