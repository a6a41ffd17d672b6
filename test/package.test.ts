/**
 * The package as npm ships it: packed, installed into an empty folder, and run from there with
 * nothing of the checkout around it (no src/, no devDependencies, no tsc).
 *
 * `npm pack` runs prepack, which rebuilds dist/ from nothing: not here, where other test files run
 * from dist/ meanwhile and the global setup has just built it (the build writes the oclif manifest
 * too). So: npm's own file list of the checkout (`npm pack --dry-run`, from package.json "files") is
 * copied to a staging folder, `oclif manifest` writes the manifest there afresh, as a build does,
 * and `npm pack --ignore-scripts` packs that folder.
 *
 * The install uses --prefer-offline, not --offline: `npm ci` fills npm's cache with the locked
 * tarballs but not with the registry's package documents, which npm needs to resolve the package's
 * dependency ranges; a clean CI machine fetches those (and only those) once, then has them cached.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {ENTRY_POINTS, type EntryPoint} from '../src/toolstack/entry-points.js'
import {cleanupHost, hostProcesses, lines, newHost, writeConfig} from './support/cli.js'
import {NO_UPDATE_CHECK, REPO, ensureBuilt} from './support/build.js'

interface PackResult {
  filename: string
  size: number
  unpackedSize: number
  entryCount: number
  files: {path: string; size: number}[]
}

let tmp: string
let app: string
let installed: string
let bin: string
let host: string | undefined
let pack: PackResult

/** npm's environment without what a parent `npm test` or `npm run` put there (prefix, global, dry run...). */
function npmEnv(): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {...process.env}
  for (const k of Object.keys(env)) if (/^npm_/i.test(k) && !/^npm_config_(cache|registry|userconfig|globalconfig)$/i.test(k)) delete env[k]
  return env
}

async function npm(args: readonly string[], cwd: string): Promise<string> {
  const r = await execa('npm', args, {cwd, env: npmEnv(), extendEnv: false, reject: false, all: true, timeout: 60_000})
  if (r.exitCode !== 0) throw new Error(`npm ${args.join(' ')} (in ${cwd}) exited ${r.exitCode}:\n${r.all}`)
  return String(r.stdout)
}

/**
 * The installed CLI, as an operator runs it: from the app folder, nothing of the checkout in reach,
 * and without vitest's NODE_ENV=test (with which oclif looks for TypeScript to run a command's
 * source, and warns that it cannot find it).
 */
async function xlts(args: readonly string[], env: Record<string, string> = {}) {
  const base = npmEnv()
  for (const k of Object.keys(base)) if (k === 'NODE_ENV' || k.startsWith('VITEST') || k.startsWith('XL_TS_') || k === 'LIBXL_SAVE_HELPER') delete base[k]
  const r = await execa(bin, args, {
    cwd: app,
    env: {...base, XL_TS_BACKEND: 'sim', XL_TS_CACHE_DIR: path.join(tmp, 'cache'), ...env},
    extendEnv: false,
    reject: false,
    timeout: 30_000,
    stdin: 'ignore',
  })
  return {exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr)}
}

async function ok(args: readonly string[], env?: Record<string, string>) {
  const r = await xlts(args, env)
  expect(r.exitCode, `xl-ts ${args.join(' ')}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0)
  return r
}

beforeAll(async () => {
  await ensureBuilt()
  const started = Date.now()
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-pkg-'))
  const stage = path.join(tmp, 'stage')
  const out = path.join(tmp, 'out')
  app = path.join(tmp, 'app')
  for (const d of [stage, out, app]) fs.mkdirSync(d)

  // What npm would pack from the checkout, copied as it is.
  const [listed] = JSON.parse(await npm(['pack', '--dry-run', '--json', '--ignore-scripts'], REPO)) as PackResult[]
  for (const f of listed!.files) {
    fs.mkdirSync(path.dirname(path.join(stage, f.path)), {recursive: true})
    fs.copyFileSync(path.join(REPO, f.path), path.join(stage, f.path))
    fs.chmodSync(path.join(stage, f.path), fs.statSync(path.join(REPO, f.path)).mode)
  }
  // the build's `oclif manifest`, with the checkout's modules to load the commands by
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(stage, 'node_modules'))
  await execa(process.execPath, [path.join(REPO, 'node_modules', 'oclif', 'bin', 'run.js'), 'manifest'], {cwd: stage, env: NO_UPDATE_CHECK})
  fs.rmSync(path.join(stage, 'node_modules'))

  const [packed] = JSON.parse(await npm(['pack', '--json', '--ignore-scripts', '--pack-destination', out], stage)) as PackResult[]
  pack = packed!
  const tgz = path.join(out, pack.filename)
  console.log(`xl-ts package: ${pack.filename}, ${(fs.statSync(tgz).size / 1024).toFixed(1)} kB packed, ${(pack.unpackedSize / 1024).toFixed(0)} kB unpacked, ${pack.entryCount} files (packed in ${Date.now() - started} ms)`)

  const t = Date.now()
  fs.writeFileSync(path.join(app, 'package.json'), `${JSON.stringify({name: 'xl-ts-package-test', version: '0.0.0', private: true}, null, 2)}\n`)
  await npm(['install', '--prefer-offline', '--no-audit', '--no-fund', '--no-update-notifier', tgz], app)
  console.log(`installed in ${Date.now() - t} ms`)
  installed = path.join(app, 'node_modules', 'xl-ts')
  bin = path.join(app, 'node_modules', '.bin', 'xl-ts')
}, 120_000)

afterAll(async () => {
  try {
    if (host) {
      const forced = await cleanupHost(host)
      if (forced.length > 0) console.log(`forced cleanup: ${forced.join('; ')}`)
    }
  } finally {
    if (tmp) fs.rmSync(tmp, {recursive: true, force: true})
  }
})

describe('the packed tarball', () => {
  it('holds the CLI, its build, the program bundles, the manifest, the man page and the netbuf script', () => {
    const files = pack.files.map(f => f.path)
    for (const f of [
      'package.json',
      'README.md',
      'bin/run.js',
      'dist/cli/main.js',
      'dist/commands/migrate-receive.js',
      'oclif.manifest.json',
      'man/xl-ts.1',
      'scripts/remus-netbuf-setup',
      ...Object.keys(ENTRY_POINTS).map(n => `dist/bundle/${n}.js`),
    ])
      expect(files).toContain(f)
    // every man page package.json names ("man") and bin it runs
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as {man?: string | string[]; bin: Record<string, string>}
    for (const f of [...[pkg.man ?? []].flat(), ...Object.values(pkg.bin)]) expect(files).toContain(path.posix.normalize(f))
  })

  it('holds nothing of the checkout besides', () => {
    const stray = pack.files
      .map(f => f.path)
      .filter(f => /^(src|test|bench|node_modules|\.cache|\.ci|\.git)\//.test(f) || (f.startsWith('scripts/') && f !== 'scripts/remus-netbuf-setup') || /(^|\/)(\.build\.lock|tsconfig[^/]*\.json|vitest[^/]*|[^/]*\.tmp|[^/]*\.tsbuildinfo)$/.test(f))
    expect(stray).toEqual([])
  })
})

describe('the installed package', () => {
  it('has no source beside dist/ and keeps the netbuf script executable', () => {
    expect(fs.existsSync(path.join(installed, 'src'))).toBe(false)
    expect(fs.statSync(path.join(installed, 'scripts', 'remus-netbuf-setup')).mode & 0o111).not.toBe(0)
  })

  it('prints its version and its help', async () => {
    const v = await ok(['--version'])
    expect(v.stdout).toMatch(/^xl-ts\/0\.1\.0 \S+ node-v\d+/)
    const h = await ok(['--help'])
    for (const word of ['create', 'migrate-receive', 'remus', 'autocomplete']) expect(h.stdout).toContain(word)
    expect(h.stderr).toBe('')
  })

  it('starts the bundled programs, whatever times npm gave the files', async () => {
    // npm writes the files at install time, in no fixed order: make every bundle older than tsc's
    // output of its program, as an unlucky install does.
    for (const [name, module] of Object.entries(ENTRY_POINTS)) {
      const built = fs.statSync(path.join(installed, 'dist', module)).mtime
      const older = new Date(built.getTime() - 10_000)
      fs.utimesSync(path.join(installed, 'dist', 'bundle', `${name}.js`), older, older)
    }
    const probe = `
      import {ENTRY_POINTS, entryPointFile} from ${JSON.stringify(path.join(installed, 'dist', 'toolstack', 'entry-points.js'))}
      console.log(JSON.stringify(Object.fromEntries(Object.keys(ENTRY_POINTS).map(n => [n, entryPointFile(n)]))))`
    const r = await execa(process.execPath, ['--input-type=module', '-e', probe], {cwd: app})
    const chosen = JSON.parse(String(r.stdout)) as Record<EntryPoint, string>
    for (const name of Object.keys(ENTRY_POINTS) as EntryPoint[]) expect(chosen[name]).toBe(path.join(installed, 'dist', 'bundle', `${name}.js`))
  })

  it('creates, lists, saves, restores and destroys a domain on a simulated host', async () => {
    host = newHost('pkg')
    const cfg = writeConfig(host, 'pkg', {name: 'pkg', type: 'pvh', memory: 32, vcpus: 1, sim_dirty_rate: 100, sim_seed: 3})
    const g = ['--root', host]

    await ok([...g, 'create', '-q', cfg])
    const listed = JSON.parse((await ok([...g, 'list', '--json'])).stdout) as {domid: number; name: string}[]
    const dom = listed.find(d => d.name === 'pkg')
    expect(dom).toBeDefined()

    // The domain's process runs the domain program's bundle from the installed package.
    const real = (p: string) => fs.realpathSync(p)
    const scripts = hostProcesses(host).map(pid => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[1] ?? '')
    expect(scripts.map(s => (fs.existsSync(s) ? real(s) : s))).toContain(real(path.join(installed, 'dist', 'bundle', 'domain-main.js')))

    // save and restore go through the save helper
    const saved = path.join(host, 'pkg.save')
    await ok([...g, 'save', 'pkg', saved])
    expect(fs.statSync(saved).size).toBeGreaterThan(0)
    await ok([...g, 'restore', saved])
    const again = JSON.parse((await ok([...g, 'list', '--json'])).stdout) as {domid: number; name: string}[]
    const restored = again.find(d => d.name === 'pkg')
    expect(restored).toBeDefined()

    await ok([...g, 'destroy', String(restored!.domid)])
    const after = JSON.parse((await ok([...g, 'list', '--json'])).stdout) as {domid: number}[]
    expect(after.filter(d => d.domid !== 0)).toEqual([])
    expect(hostProcesses(host)).toEqual([])
  })

  it('completes: the autocomplete plugin comes with it', async () => {
    const setup = await ok(['autocomplete', 'bash'])
    expect(setup.stdout).toContain('xl-ts autocomplete script bash')
    const script = await ok(['autocomplete', 'script', 'bash'])
    const file = path.join(tmp, 'cache', 'autocomplete', 'functions', 'bash', 'xl-ts.bash')
    expect(lines(script.stdout).join('\n')).toContain(path.join(tmp, 'cache', 'autocomplete', 'bash_setup'))
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^migrate-receive /m)
  })
})
