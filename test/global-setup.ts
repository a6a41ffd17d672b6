/** vitest global setup: dist/ is built once, before any test file runs. */
import {ensureBuilt} from './support/build.js'

export default async function setup(): Promise<void> {
  await ensureBuilt()
}
