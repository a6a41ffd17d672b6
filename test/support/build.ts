/**
 * The one place tests make sure dist/ is current: the CLI, the sim's domain program and the helper
 * all run from dist/. vitest's global setup calls it once before any test file (`npm test` builds
 * first anyway, so then it only checks); test files may call it again, which costs a stat walk.
 * Test files run in parallel: a lock folder keeps two of them from running tsc at once.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const LOCK = path.join(REPO, 'dist', '.build.lock')
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function newestMtime(p: string): number {
  const st = fs.statSync(p)
  if (!st.isDirectory()) return st.mtimeMs
  let newest = 0
  for (const e of fs.readdirSync(p)) if (e !== '.build.lock') newest = Math.max(newest, newestMtime(path.join(p, e)))
  return newest
}

function upToDate(): boolean {
  const dist = path.join(REPO, 'dist')
  return fs.existsSync(path.join(dist, 'cli', 'main.js')) && newestMtime(dist) >= newestMtime(path.join(REPO, 'src'))
}

export async function ensureBuilt(): Promise<void> {
  if (upToDate()) return
  fs.mkdirSync(path.dirname(LOCK), {recursive: true})
  for (;;) {
    try {
      fs.mkdirSync(LOCK)
      break
    } catch {
      if (upToDate()) return
      let age = 0
      try {
        age = Date.now() - fs.statSync(LOCK).mtimeMs
      } catch {
        continue
      }
      if (age > 120_000) fs.rmSync(LOCK, {recursive: true, force: true})
      await sleep(200)
    }
  }
  try {
    if (upToDate()) return
    const r = await execa('npx', ['tsc', '-p', 'tsconfig.json'], {cwd: REPO, reject: false})
    if (!upToDate()) throw new Error(`build failed:\n${r.stdout}\n${r.stderr}`)
  } finally {
    fs.rmSync(LOCK, {recursive: true, force: true})
  }
}
