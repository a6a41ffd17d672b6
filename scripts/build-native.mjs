#!/usr/bin/env node
/**
 * Builds native/kernel-copy.c into dist/native/kernel-copy.node (`npm run build` runs it): the one
 * piece of C in xl-ts, which lets the save/restore helper move guest pages fd to fd inside the
 * kernel (copy_file_range, splice, sendfile; src/toolstack/fd/kernel-copy.ts loads it).
 *
 * It needs a C compiler (CC, else cc) and Node's own headers (node_api.h: next to the node binary,
 * in npm's nodedir, or /usr/include/node). Node-API is stable across Node versions, so the module
 * built here loads in any Node >= 20. Without compiler or headers the build goes on and says so:
 * xl-ts then copies pages in user space (slower, same bytes).
 */
import {spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SOURCE = path.join(ROOT, 'native', 'kernel-copy.c')
const OUT = path.join(ROOT, 'dist', 'native', 'kernel-copy.node')

const mtime = (f) => {
  try {
    return fs.statSync(f).mtimeMs
  } catch {
    return undefined
  }
}

function headersDir() {
  const candidates = [
    path.resolve(path.dirname(process.execPath), '..', 'include', 'node'),
    process.env.npm_config_nodedir ? path.join(process.env.npm_config_nodedir, 'include', 'node') : undefined,
    '/usr/include/node',
  ].filter(Boolean)
  return candidates.find((dir) => fs.existsSync(path.join(dir, 'node_api.h')))
}

function skip(why) {
  // An older module would not match its source any more: none is better than a stale one.
  fs.rmSync(OUT, {force: true})
  console.warn(`build-native: kernel-copy.node not built (${why}); xl-ts will copy guest pages in user space`)
  process.exit(0)
}

if ((mtime(OUT) ?? -1) > (mtime(SOURCE) ?? Infinity)) process.exit(0)
const include = headersDir()
if (!include) skip("Node's headers (node_api.h) were not found")
fs.mkdirSync(path.dirname(OUT), {recursive: true})
const tmp = `${OUT}.${process.pid}.tmp`
const cc = process.env.CC || 'cc'
const r = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', `-I${include}`, SOURCE, '-o', tmp], {encoding: 'utf8'})
if (r.error || r.status !== 0) {
  fs.rmSync(tmp, {force: true})
  skip(r.error ? `${cc}: ${r.error.message}` : `${cc} failed:\n${r.stderr.trim()}`)
}
fs.renameSync(tmp, OUT)
