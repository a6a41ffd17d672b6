/**
 * Test hooks are out of an operator's reach (issue 21, point 5): the fault points, the checkpoint
 * probe and the negative controls that weaken replication are installed only by the tests' entry
 * programs (test/support/test-hooks.ts), never from the environment. With every variable that once
 * switched them on, and the one the test entries read now, set in the environment of the production
 * `xl-ts migrate`, `remus -c` and `migrate-receive`:
 *
 *   - nothing under src/ names an XL_TS_TEST_ variable, and nothing there installs hooks;
 *   - a migration passes its stop points without stopping and writes no hook files;
 *   - a COLO session takes its checkpoints with the secondary's set B, writes no probe or hook files
 *     and stops cleanly;
 *   - a COLO session whose only hook is the probe (the test entry; the production save helper, with
 *     XL_TS_TEST_COLO_IGNORE_SVM_DIRTY=1 in its environment) has equal copies at every checkpoint.
 *
 * That the controls still work where a test installs them is shown where they are used:
 * colo.test.ts (set B dropped), colo-devices.test.ts (disk checkpoint skipped), migrate-faults.test.ts.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BIN, ROOT} from './support/cli.js'
import {NODE, cleanupHost, createGuest, ensureBuilt, guests, isRunning, markedEnv, newHost, receiverCommand, scratchDir, waitNoMarked, type GuestSpec} from './support/migrate.js'
import {cleanups, events, probeLines, setup, startRemus, untilCheckpoints} from './support/remus.js'
import {TEST_HOOKS_ENV, testHooksEnv} from './support/test-hooks.js'

const dirs: string[] = []
const hosts: string[] = []

beforeAll(async () => {
  await ensureBuilt()
})

afterAll(async () => {
  for (const c of cleanups.splice(0)) await c()
  for (const h of hosts.splice(0)) await cleanupHost(h)
  for (const d of dirs.splice(0)) fs.rmSync(d, {recursive: true, force: true})
})

function scratch(tag: string): string {
  const d = scratchDir(tag)
  dirs.push(d)
  return d
}

/**
 * What an operator's environment might carry: the variables that switched the hooks on before, and
 * the one the test entries read now, all pointing into `dir` and asking for a stop at `stop`.
 */
function strayEnv(dir: string, stop: string, newStop: string): Record<string, string> {
  return {
    XL_TS_TEST_HOOK_DIR: dir,
    XL_TS_TEST_STOP: stop,
    XL_TS_TEST_REMUS_PROBE: dir,
    XL_TS_TEST_REMUS_PROBE_EVERY: '1',
    XL_TS_TEST_COLO_IGNORE_SVM_DIRTY: '1',
    XL_TS_TEST_COLO_SKIP_DISK_CHECKPOINT: '1',
    [TEST_HOOKS_ENV]: JSON.stringify({faults: {dir, stop: newStop}, probe: {dir}, coloIgnoreSecondaryDirty: true, coloSkipDiskCheckpoint: true}),
  }
}

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, {recursive: true, encoding: 'utf8'}).map((f) => path.join(dir, f))
}

/** A guest whose secondary takes its own path every few ms: a copy without set B is wrong (colo.test.ts). */
const DIVERGING: GuestSpec = {name: 'vm', memMiB: 32, dirtyRate: 3000, workingSetMiB: 8, seed: 22, nondeterminism: 0.05}

describe('test hooks are not switched on from the environment', () => {
  it('no file under src/ names an XL_TS_TEST_ variable; only test-hooks.ts mentions installTestHooks', () => {
    const src = path.join(ROOT, 'src')
    const files = filesUnder(src).filter((f) => fs.statSync(f).isFile())
    expect(files.length).toBeGreaterThan(50)
    const naming = files.filter((f) => fs.readFileSync(f, 'utf8').includes('XL_TS_TEST'))
    expect(naming.map((f) => path.relative(ROOT, f))).toEqual([])
    const installing = files.filter((f) => /\binstallTestHooks\b/.test(fs.readFileSync(f, 'utf8')))
    expect(installing.map((f) => path.relative(ROOT, f))).toEqual(['src/toolstack/test-hooks.ts'])
  })

  it('migrate and migrate-receive: no stop, no hook file; the migration completes', {timeout: 60_000}, async () => {
    const a = newHost('tha')
    const b = newHost('thb')
    hosts.push(a, b)
    // Precopy goes past its first round (the old stop point), as in the fault matrix.
    await createGuest(a, {name: 'vm', memMiB: 32, dirtyRate: 4000, workingSetMiB: 4, seed: 3})
    const hooks = scratch('th-hooks')
    const {env, marker} = markedEnv(scratch('th-tmp'))
    const r = await execa(NODE, [BIN, '--root', a, 'migrate', '-s', '', 'vm', receiverCommand(b)], {
      env: {XL_TS_BACKEND: 'sim', ...env, ...strayEnv(hooks, 'sender:precopy', 'receiver:banner')},
      reject: false,
      stdin: 'ignore',
      timeout: 45_000,
    })
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/precopy iteration 2:/)
    expect(filesUnder(hooks), 'hook files').toEqual([])
    expect(await waitNoMarked(marker)).toEqual([])
    expect(await guests(a)).toEqual([])
    expect((await guests(b)).map((d) => [d.name, isRunning(d)])).toEqual([['vm', true]])
  })

  it('remus -c and migrate-receive --colo: set B is sent, no probe or hook file, a clean stop', {timeout: 60_000}, async () => {
    const s = await setup('thc', DIVERGING)
    const hooks = scratch('th-colo')
    const run = execa(NODE, [BIN, '--root', s.a, 'remus', '--json', '-c', '-p', '--max-interval', '50', '-s', '', 'vm', receiverCommand(s.b, {args: ['--colo']})], {
      env: {XL_TS_BACKEND: 'sim', ...markedEnv(s.tmp).env, ...strayEnv(hooks, 'receiver:banner', 'receiver:header')},
      reject: false,
      stdin: 'ignore',
      timeout: 45_000,
    })
    await untilCheckpoints(run, 8)
    run.kill('SIGINT')
    const r = await run
    expect(r.exitCode, String(r.stderr)).toBe(0)
    const cps = events(r.stdout).filter((e) => e.event === 'checkpoint' && e.number !== 1)
    expect(cps.length).toBeGreaterThanOrEqual(7)
    // The helper read the secondary's set B and sent A u B (dropping it reads as B = 0 throughout).
    expect(cps.some((e) => (e.secondaryDirty as number) > 0), JSON.stringify(cps.slice(0, 3))).toBe(true)
    expect(cps.every((e) => (e.pages as number) >= Math.max(e.primaryDirty as number, e.secondaryDirty as number))).toBe(true)
    expect(filesUnder(hooks), 'probe or hook files').toEqual([])
    expect(await waitNoMarked(s.marker, 20_000)).toEqual([])
    expect((await guests(s.a)).map((d) => [d.name, isRunning(d)])).toEqual([['vm', true]])
    await s.done()
  })

  it('the production save helper with XL_TS_TEST_COLO_IGNORE_SVM_DIRTY=1: the copies are equal at every checkpoint', {timeout: 60_000}, async () => {
    const s = await setup('thp', DIVERGING)
    const hooks = scratch('th-probe')
    // The probe only (the test entry's hooks); everything else asked for by stray variables.
    const stray = strayEnv(hooks, 'receiver:after-ready', 'receiver:after-ready')
    delete stray[TEST_HOOKS_ENV]
    const run = startRemus(s.a, s.b, s.tmp, ['-c', '-p', '--max-interval', '50'], {...stray, ...testHooksEnv({probe: {dir: s.tmp}})})
    await untilCheckpoints(run, 12)
    run.kill('SIGINT')
    const r = await run
    expect(r.exitCode, String(r.stderr)).toBe(0)
    const primary = new Map(probeLines(path.join(s.tmp, 'primary.ndjson')).map((p) => [p.checkpoint, p.checksum]))
    const both = probeLines(path.join(s.tmp, 'secondary.ndjson')).filter((p) => primary.has(p.checkpoint))
    expect(both.length, 'checkpoints recorded on both sides').toBeGreaterThanOrEqual(10)
    expect(both.filter((p) => p.checksum !== primary.get(p.checkpoint)).map((p) => p.checkpoint), 'checkpoints where the secondary differs').toEqual([])
    expect(filesUnder(hooks), 'files from the stray variables').toEqual([])
    expect(await waitNoMarked(s.marker, 20_000)).toEqual([])
    await s.done()
  })
})
