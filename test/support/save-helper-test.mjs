#!/usr/bin/env node
// The save/restore helper for tests, run as LIBXL_SAVE_HELPER (hence executable, with libxl's
// argv): the test hooks of $XL_TS_TEST_HOOKS installed first (install-test-hooks.mjs), then the
// real helper's main (dist/toolstack/save-helper/main.js, tsc's output, not the bundle).
import {installTestHooksFromEnv} from './install-test-hooks.mjs'

installTestHooksFromEnv()
await import('../../dist/toolstack/save-helper/main.js')
