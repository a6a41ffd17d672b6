/**
 * Installs the test hooks of src/toolstack/test-hooks.ts in this process, from the configuration a
 * test gives in XL_TS_TEST_HOOKS (JSON, see test/support/test-hooks.ts: TestHookConfig). Only the
 * test entry programs beside it import this: the production ones (bin/run.js, the save helper, the
 * guardian, the sim domain) never do, so there this variable means nothing.
 *
 * It imports tsc's output (dist/), not the bundles: the hooks must be installed in the same module
 * instance the main it runs next uses.
 */
import {FaultHooks} from '../../dist/toolstack/testing/fault-points.js'
import {RemusProbe} from '../../dist/toolstack/testing/probe.js'
import {installTestHooks} from '../../dist/toolstack/test-hooks.js'

export const TEST_HOOKS_ENV = 'XL_TS_TEST_HOOKS'
const KNOWN = ['faults', 'probe', 'coloSkipDiskCheckpoint', 'coloIgnoreSecondaryDirty']

/** Installs what the configuration asks for (nothing when the variable is not set). */
export function installTestHooksFromEnv(env = process.env) {
  const text = env[TEST_HOOKS_ENV]
  if (!text) return
  const config = JSON.parse(text)
  // A misspelt hook would leave a negative control quietly off: refuse what is not known.
  const unknown = Object.keys(config).filter((k) => !KNOWN.includes(k))
  if (unknown.length > 0) throw new Error(`${TEST_HOOKS_ENV}: unknown hooks ${unknown.join(', ')} (known: ${KNOWN.join(', ')})`)
  const {faults, probe} = config
  installTestHooks({
    ...(faults ? {faultPoints: (side) => new FaultHooks(side, faults)} : {}),
    ...(probe ? {checkpointProbe: (hv, domid, side) => RemusProbe.open(hv, domid, side, probe)} : {}),
    coloSkipDiskCheckpoint: config.coloSkipDiskCheckpoint === true,
    coloIgnoreSecondaryDirty: config.coloIgnoreSecondaryDirty === true,
  })
}
