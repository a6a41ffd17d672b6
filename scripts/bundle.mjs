#!/usr/bin/env node
/**
 * Bundles each program the toolstack starts with `node <file>` (src/toolstack/entry-points.ts) into
 * one file, dist/bundle/<name>.js, from tsc's output: `npm run build` runs it after tsc. Node then
 * reads one file instead of resolving and loading each module (14 to 42 of them): measured to exit
 * at a bad argv, the helper starts in ~75 ms instead of ~160-180, the guardian in ~80 instead of
 * ~170, a sim domain in ~70 instead of ~85 (`node -e 0`: ~60). A bundle is only started while it
 * is not older than tsc's output of its program (entry-points.ts), so run this after every tsc.
 *
 * Each bundle is one file, dynamic imports included (the helper's save and restore engines are
 * inlined, evaluated only when imported): measured as fast as esbuild's code splitting, with no
 * chunk files to keep in step. Source maps are linked (<name>.js.map, through tsc's maps to src/):
 * `node --enable-source-maps` and profilers use them; they cost nothing at start-up otherwise.
 * Files appear by rename, so a program started meanwhile reads a whole old or a whole new bundle.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'

import * as esbuild from 'esbuild'

import {BUNDLE_DIR, ENTRY_POINTS, entryPointFiles} from '../dist/toolstack/entry-points.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

const result = await esbuild.build({
  absWorkingDir: ROOT,
  entryPoints: Object.fromEntries(Object.keys(ENTRY_POINTS).map((name) => [name, entryPointFiles(name).built])),
  outdir: BUNDLE_DIR,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'linked',
  sourcesContent: false,
  write: false,
  logLevel: 'warning',
})

fs.mkdirSync(BUNDLE_DIR, {recursive: true})
const written = new Set()
for (const out of result.outputFiles) {
  // Besides our modules the programs import only node: built-ins. A bundled package calling
  // require() would get esbuild's shim, which throws at run time: fail here, add a createRequire
  // banner then.
  if (out.path.endsWith('.js') && out.text.includes('Dynamic require of')) throw new Error(`${out.path}: a bundled module calls require()`)
  const tmp = `${out.path}.${process.pid}.tmp`
  fs.writeFileSync(tmp, out.contents)
  fs.renameSync(tmp, out.path)
  written.add(path.basename(out.path))
}
for (const f of fs.readdirSync(BUNDLE_DIR)) if (!written.has(f) && !f.endsWith('.tmp')) fs.rmSync(path.join(BUNDLE_DIR, f), {force: true})
