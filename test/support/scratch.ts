/**
 * A temporary folder for one test file (the tmp package's): made before its tests run and removed,
 * with all in it, after them (also when they fail). Every name it hands out is new, so no two tests
 * share a path.
 */
import {spawnSync} from 'node:child_process'
import * as path from 'node:path'
import * as tmp from 'tmp'
import {afterAll, beforeAll} from 'vitest'

export interface Scratch {
  /** The folder itself (valid once the file's tests run). */
  readonly dir: string
  /** A path in it that nothing has used: `<prefix>-<n>`. */
  name(prefix: string): string
  /** A new FIFO in it (mkfifo), by its path. */
  fifo(prefix?: string): string
}

/** Registers the folder's beforeAll / afterAll in the calling test file; `tag` names it in /tmp. */
export function scratchDir(tag: string): Scratch {
  let made: tmp.DirResult | undefined
  let dir = ''
  let n = 0
  beforeAll(() => {
    // A template, not a prefix: as short as mkdtemp's names, for socket paths made in it.
    made = tmp.dirSync({template: `xl-ts-${tag}-XXXXXX`, unsafeCleanup: true})
    dir = made.name
  })
  afterAll(() => {
    made?.removeCallback()
  })
  const name = (prefix: string): string => path.join(dir, `${prefix}-${n++}`)
  return {
    get dir() {
      return dir
    },
    name,
    fifo(prefix = 'fifo') {
      const p = name(prefix)
      const r = spawnSync('mkfifo', ['-m', '600', p], {encoding: 'utf8'})
      if (r.status !== 0) throw new Error(`mkfifo ${p} failed: ${r.stderr || r.error?.message}`)
      return p
    },
  }
}
