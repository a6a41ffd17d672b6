import {defineConfig} from 'vitest/config'

/**
 * Tests that measure time (`*.solo.test.ts`): run after the others, one file at a time, so that the
 * rest of the suite does not load the machine while they measure.
 */
export default defineConfig({
  test: {
    include: ['test/**/*.solo.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: false,
  },
})
