/**
 * The one place tests make sure dist/ is current: the CLI, the sim's domain program and the helper
 * all run from dist/, the last two (and the migration guardian) from their bundles in dist/bundle/
 * (scripts/bundle.mjs, run after tsc); the CLI finds its commands through oclif.manifest.json. src/toolstack/entry-points.ts starts a bundle only while it
 * is not older than tsc's output, so a stale one would quietly test the unbundled programs: current
 * means tsc's output, the bundles and the manifest. vitest's global setup calls it once before any test file
 * (`npm test` builds first anyway, so then it only checks); test files may call it again, which
 * costs a stat walk. Test files run in parallel: a lock folder keeps two of them from building at
 * once.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'

import {ENTRY_POINTS, entryPointFile, entryPointFiles, type EntryPoint} from '../../src/toolstack/entry-points.js'

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const LOCK = path.join(REPO, 'dist', '.build.lock')
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
/** The oclif dev tool would otherwise start a detached process that asks the registry for a newer oclif. */
export const NO_UPDATE_CHECK = {OCLIF_SKIP_NEW_VERSION_CHECK: 'true'}

function newestMtime(p: string): number {
  const st = fs.statSync(p)
  if (!st.isDirectory()) return st.mtimeMs
  let newest = 0
  for (const e of fs.readdirSync(p)) if (e !== '.build.lock') newest = Math.max(newest, newestMtime(path.join(p, e)))
  return newest
}

/** tsc's output is newer than every source. */
function compiled(): boolean {
  const dist = path.join(REPO, 'dist')
  return fs.existsSync(path.join(dist, 'cli', 'main.js')) && newestMtime(dist) >= newestMtime(path.join(REPO, 'src'))
}

/** Every program's bundle exists and is not older than tsc's output of it. */
function bundled(): boolean {
  return (Object.keys(ENTRY_POINTS) as EntryPoint[]).every((name) => entryPointFile(name) === entryPointFiles(name).bundle)
}

/**
 * oclif's manifest (the commands, their flags and help) is not older than the compiled commands: the
 * CLI finds its commands through it, so a stale one would hide a new command.
 */
function manifested(): boolean {
  const manifest = path.join(REPO, 'oclif.manifest.json')
  return fs.existsSync(manifest) && fs.statSync(manifest).mtimeMs >= newestMtime(path.join(REPO, 'dist', 'commands'))
}

const upToDate = (): boolean => compiled() && bundled() && manifested()

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
    const output: string[] = []
    for (const [file, args] of [
      ['npx', ['tsc', '-p', 'tsconfig.json']],
      [process.execPath, ['scripts/bundle.mjs']],
      [process.execPath, [path.join('node_modules', 'oclif', 'bin', 'run.js'), 'manifest']],
    ] as const) {
      // tsc emits despite type errors; the tests run on what it emitted, as before
      const r = await execa(file, args, {cwd: REPO, reject: false, all: true, env: NO_UPDATE_CHECK})
      output.push(r.all ?? '')
    }
    if (!upToDate()) throw new Error(`build failed:\n${output.join('\n')}`)
  } finally {
    fs.rmSync(LOCK, {recursive: true, force: true})
  }
}
