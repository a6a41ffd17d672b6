#!/usr/bin/env node
// xl-ts for tests: bin/run.js with the test hooks of $XL_TS_TEST_HOOKS installed first
// (install-test-hooks.mjs). Tests run it where they need a fault point, the checkpoint probe or a
// negative control; as the receiver too (through -s '' or the fake ssh), which inherits the variable.
import {installTestHooksFromEnv} from './install-test-hooks.mjs'

installTestHooksFromEnv()
const {main} = await import('../../dist/cli/main.js')
await main(process.argv.slice(2), new URL('../../bin/run.js', import.meta.url).href)
