/**
 * Test hooks from the tests' side: the entry programs that install them (src/toolstack/test-hooks.ts
 * has the hooks; the production programs never install any) and the configuration they read.
 *
 *   TEST_BIN     the CLI (bin/run.js) with the hooks of $XL_TS_TEST_HOOKS installed: use it for the
 *                sender or primary and for the receiver (receiverCommand's `bin`, fakeSsh's `bin`)
 *   TEST_HELPER  the save/restore helper with them, run as LIBXL_SAVE_HELPER (no prestart then)
 */
import * as path from 'node:path'

import type {FaultPoint} from '../../src/toolstack/test-hooks.js'
import {BIN, ROOT} from './cli.js'

export const TEST_BIN = path.join(ROOT, 'test', 'support', 'xl-ts-test.mjs')
export const TEST_HELPER = path.join(ROOT, 'test', 'support', 'save-helper-test.mjs')
/** The one variable the test entries read (install-test-hooks.mjs); nothing under src/ does. */
export const TEST_HOOKS_ENV = 'XL_TS_TEST_HOOKS'

export interface TestHookConfig {
  /** Migration fault points: pid notes in DIR/<side>.json, SIGSTOP at `stop` (migrate/fault-points.ts). */
  faults?: {dir: string; stop?: FaultPoint}
  /** The checkpoint probe: DIR/primary.ndjson, DIR/secondary.ndjson, every K-th checkpoint (remus/probe.ts). */
  probe?: {dir: string; every?: number}
  /** Negative control: the COLO secondary skips its disks' checkpoint. */
  coloSkipDiskCheckpoint?: boolean
  /** Negative control: the COLO primary's save helper drops set B (needs TEST_HELPER: set here). */
  coloIgnoreSecondaryDirty?: boolean
}

/** The environment that has the test entries install these hooks (and the save helper, when it needs them). */
export function testHooksEnv(config: TestHookConfig): Record<string, string> {
  return {[TEST_HOOKS_ENV]: JSON.stringify(config), ...(config.coloIgnoreSecondaryDirty ? {LIBXL_SAVE_HELPER: TEST_HELPER} : {})}
}

/** The CLI to run with this environment: TEST_BIN when it asks for hooks, else the production bin/run.js. */
export function cliFor(env?: Record<string, string>): string {
  return env?.[TEST_HOOKS_ENV] ? TEST_BIN : BIN
}
