/**
 * The programs the toolstack starts (src/toolstack/entry-points.ts): a bundle is started only while
 * it is not older than tsc's output, and each built bundle runs on its own (no module left outside,
 * no `require` shim that throws).
 */
import {spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {ENTRY_POINTS, currentFile, entryPointFile, entryPointFiles, type EntryPoint} from '../src/toolstack/entry-points.js'
import {REPO, ensureBuilt} from './support/build.js'

let dir: string

beforeAll(async () => {
  await ensureBuilt()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-ts-entry-points-'))
})

afterAll(() => fs.rmSync(dir, {recursive: true, force: true}))

describe('which file is started', () => {
  const at = (file: string, seconds: number): string => {
    fs.writeFileSync(file, '')
    fs.utimesSync(file, seconds, seconds)
    return file
  }

  it('the bundle when it is as new as tsc output or newer, or when there is no tsc output', () => {
    const built = path.join(dir, 'main.js')
    const bundle = path.join(dir, 'bundle.js')
    at(built, 1000)
    at(bundle, 1000)
    expect(currentFile(built, bundle)).toBe(bundle)
    at(bundle, 1001)
    expect(currentFile(built, bundle)).toBe(bundle)
    expect(currentFile(path.join(dir, 'no-such.js'), bundle)).toBe(bundle)
  })

  it('tsc output when the bundle is older or missing', () => {
    const built = at(path.join(dir, 'main2.js'), 1001)
    const bundle = at(path.join(dir, 'bundle2.js'), 1000)
    expect(currentFile(built, bundle)).toBe(built)
    expect(currentFile(built, path.join(dir, 'no-such.js'))).toBe(built)
  })

  it('the bundles in dist/bundle/ once built, next to the programs in dist/', () => {
    for (const name of Object.keys(ENTRY_POINTS) as EntryPoint[]) {
      const {built, bundle} = entryPointFiles(name)
      expect(built).toBe(path.join(REPO, 'dist', ENTRY_POINTS[name]))
      expect(bundle).toBe(path.join(REPO, 'dist', 'bundle', `${name}.js`))
      expect(entryPointFile(name)).toBe(bundle)
    }
  })
})

describe('each bundle runs', () => {
  const run = (name: EntryPoint, args: string[], input = ''): {status: number | null; stderr: string} => {
    const r = spawnSync(process.execPath, [entryPointFiles(name).bundle, ...args], {input, encoding: 'utf8', env: {...process.env, XL_TS_BACKEND: 'sim', XL_TS_ROOT: dir}})
    return {status: r.status, stderr: r.stderr}
  }

  it('save-helper: refuses a bad argv as libxl-save-helper does (255)', () => {
    expect(run('save-helper', ['--bad']).status).toBe(255)
  })

  it('domain-main: usage without a domain folder (2)', () => {
    expect(run('domain-main', [])).toEqual({status: 2, stderr: 'usage: domain-main <domain folder>\n'})
  })

  it('guardian-main: told "done", it exits 0 without doing anything', () => {
    expect(run('guardian-main', ['sender', '1', 'a', 'a--migratedaway'], 'D\n')).toEqual({status: 0, stderr: ''})
  })
})
