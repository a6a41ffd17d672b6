/**
 * Never two copies when the link or one process breaks (issue 22): Remus and COLO between two
 * simulated hosts over a stand-in ssh, with a witness folder both reach. At a random point after
 * the second checkpoint one process is killed (the transport, either side's CLI or helper) or a
 * whole host; then, once everything has ended, exactly one copy of the guest runs, its memory is
 * consistent (a Remus backup that went live holds exactly the primary's memory of the checkpoint it
 * failed over to), and a copy that must not run is paused and named `vm--stale`. The negative control:
 * without a witness, cutting the transport leaves two running copies (xl's behaviour, warned).
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {execa, type ResultPromise} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {listDomains, resolveDomain} from '../src/toolstack/libxl/index.js'
import {NODE, ensureBuilt, fakeSsh, guests, isRunning, markedProcesses, runMarker, sim, waitNoMarked, type FakeSsh, type GuestSpec} from './support/migrate.js'
import {cleanups, isBackupProcess, probeLines, setup, signal, sleep, untilCheckpoints} from './support/remus.js'
import {TEST_BIN, testHooksEnv} from './support/test-hooks.js'

let ssh: FakeSsh
beforeAll(async () => {
  await ensureBuilt()
  // Both sides run the test entry, so that the checkpoint probe records each side's memory.
  ssh = fakeSsh({bin: TEST_BIN})
})
afterAll(async () => {
  for (const c of cleanups.splice(0)) await c()
  ssh?.remove()
})

/** Runs per row: the issue asks for at least 8. */
const RUNS = 8

type Victim = 'transport' | 'primary-helper' | 'receiver' | 'primary-cli' | 'restore-helper' | 'primary-host' | 'secondary-host'
const VICTIMS: readonly Victim[] = ['transport', 'primary-helper', 'receiver', 'primary-cli', 'restore-helper', 'primary-host', 'secondary-host']

function startRun(s: {a: string; b: string; tmp: string}, mode: 'remus' | 'colo', witness: string | undefined, extra: string[] = []): ResultPromise<{reject: false}> {
  const modeArgs = mode === 'colo' ? ['-c', '-p', '--max-interval', '50'] : ['-i', '50']
  return execa(NODE, [TEST_BIN, '--root', s.a, 'remus', '--json', ...modeArgs, ...(witness ? ['--witness', witness] : []), ...extra, '-s', ssh.command, 'vm', s.b], {
    env: {XL_TS_BACKEND: 'sim', ...runMarker(s.tmp).env, TMPDIR: s.tmp, ...testHooksEnv({probe: {dir: s.tmp}})},
    reject: false,
    stdin: 'ignore',
    timeout: 120_000,
  }) as ResultPromise<{reject: false}>
}

/** The pids to kill for `victim` (the primary's CLI is `run`). */
async function victims(victim: Victim, s: {a: string; b: string; marker: string; domid: number}, run: ResultPromise<{reject: false}>): Promise<number[]> {
  const marked = markedProcesses(s.marker)
  const pick = (test: (cmd: string) => boolean) => marked.filter((p) => test(p.cmd)).map((p) => p.pid)
  // The primary's own command line names the stand-in ssh (-s) too.
  const isTransport = (cmd: string) => cmd.includes('fake-ssh.mjs') && !/ remus /.test(cmd)
  const domainPids = async (root: string): Promise<number[]> => {
    const hv = sim(root)
    try {
      return (await listDomains(hv)).filter((d) => d.domid !== 0).map((d) => hv.record(d.domid).pid)
    } finally {
      hv.close()
    }
  }
  switch (victim) {
    case 'transport':
      return pick(isTransport)
    case 'primary-helper':
      return pick((c) => c.includes('--save-domain'))
    case 'receiver':
      return pick((c) => c.includes(' migrate-receive') && !c.includes('fake-ssh') && !c.includes(' remus ') && !c.includes('guardian'))
    case 'primary-cli':
      return [run.pid!]
    case 'restore-helper':
      return pick((c) => c.includes('--restore-domain'))
    case 'primary-host':
      // The ssh client runs on the primary's host; the remote shell and all it runs on the backup's.
      return [run.pid!, ...pick((c) => !isBackupProcess(c)), ...(await domainPids(s.a))]
    case 'secondary-host':
      return [...pick(isBackupProcess), ...(await domainPids(s.b))]
  }
}

/** A deterministic spread of kill delays (ms after checkpoint 2). */
function delays(seed: number, n: number): number[] {
  let x = seed
  return Array.from({length: n}, () => {
    x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) | 0
    return ((x >>> 0) % 800) + 0
  })
}

describe.each(['remus', 'colo'] as const)('%s with a witness', (mode) => {
  for (const victim of VICTIMS) {
    const ds = delays(mode.length * 131 + victim.length * 17, RUNS)
    describe(`${victim} killed`, () => {
      ds.forEach((delay, i) => {
        it(`run ${i + 1}: ${delay} ms after checkpoint 2, exactly one copy runs`, {timeout: 120_000}, async () => {
          const g: GuestSpec = {name: 'vm', memMiB: 16, dirtyRate: 1500, workingSetMiB: 4, seed: 400 + i, nondeterminism: mode === 'colo' ? 0.001 : 0}
          const s = await setup(`sb${mode[0]}${victim.slice(0, 3)}${i}`, g)
          const witness = path.join(s.tmp, 'witness')
          fs.mkdirSync(witness)
          const run = startRun(s, mode, witness)
          await untilCheckpoints(run, 2)
          await sleep(delay)
          // All at once, as when a host dies: stopped first, so that none of them reacts to another's end.
          const pids = await victims(victim, s, run)
          for (const pid of pids) signal(pid, 'SIGSTOP')
          for (const pid of pids) signal(pid, 'SIGKILL')
          const r = await run
          expect(await waitNoMarked(s.marker, 30_000), 'every process of the run ended').toEqual([])
          const all = [...(await guests(s.a)).map((d) => ({...d, host: 'a'})), ...(await guests(s.b)).map((d) => ({...d, host: 'b'}))]
          const where = `${victim} killed after ${delay} ms; exit ${r.exitCode}; ${JSON.stringify(all.map((d) => [d.host, d.name, isRunning(d) ? 'running' : 'stopped']))}\n${String(r.stderr).slice(-1500)}`
          const running = all.filter(isRunning)
          expect(running.map((d) => d.name), where).toEqual(['vm'])
          // A copy that must not run is paused and says so by its name.
          for (const d of all.filter((x) => !isRunning(x))) expect(d.name, where).toBe('vm--stale')
          const live = running[0]!
          if (live.host === 'b' && mode === 'remus') {
            // A backup that went live holds exactly one whole checkpoint of the primary: its last.
            const failover = probeLines(path.join(s.tmp, 'secondary.ndjson')).find((p) => p.failover)
            const primary = new Map(probeLines(path.join(s.tmp, 'primary.ndjson')).map((p) => [p.checkpoint, p.checksum]))
            expect(failover, `${where}\nthe backup recorded its failover`).toBeDefined()
            expect(failover!.checksum, `${where}\ncheckpoint ${failover!.checkpoint}`).toBe(primary.get(failover!.checkpoint))
          }
          // (The primary going live, or a COLO secondary, runs on from its own state: later than the last checkpoint.)
          const hv = sim(live.host === 'a' ? s.a : s.b)
          try {
            const report = await hv.verifyIntegrity(await resolveDomain(hv, 'vm'))
            expect(report.ok, `${where}\n${JSON.stringify(report.bad)}`).toBe(true)
          } finally {
            hv.close()
          }
          await s.done()
        })
      })
    })
  }
})

describe('without a witness (negative control)', () => {
  it("cutting the transport leaves two running copies, as xl would: the check above can fail, and the start warned of it", {timeout: 120_000}, async () => {
    const g: GuestSpec = {name: 'vm', memMiB: 16, dirtyRate: 1500, workingSetMiB: 4, seed: 499}
    const s = await setup('sbneg', g)
    const run = startRun(s, 'remus', undefined)
    await untilCheckpoints(run, 2)
    for (const pid of markedProcesses(s.marker).filter((p) => p.cmd.includes('fake-ssh.mjs') && !/ remus /.test(p.cmd)).map((p) => p.pid)) signal(pid, 'SIGKILL')
    const r = await run
    expect(await waitNoMarked(s.marker, 30_000)).toEqual([])
    const all = [...(await guests(s.a)), ...(await guests(s.b))]
    const running = all.filter(isRunning)
    expect(running.map((d) => d.name), `${JSON.stringify(all.map((d) => [d.name, d.state]))}\n${String(r.stderr).slice(-2500)}`).toEqual(['vm', 'vm'])
    expect(String(r.stderr)).toMatch(/^xl-ts: warning: no --witness or --fence: if the link between the hosts breaks/m)
    await s.done()
  })
})

describe('with a fence', () => {
  /** Cuts the transport after checkpoint 2; the hosts' copies once everything has ended. */
  async function cutWith(tag: string, fence: string[]) {
    const g: GuestSpec = {name: 'vm', memMiB: 16, dirtyRate: 1500, workingSetMiB: 4, seed: 500 + tag.length}
    const s = await setup(tag, g)
    const run = startRun(s, 'remus', undefined, fence)
    await untilCheckpoints(run, 2)
    for (const pid of markedProcesses(s.marker).filter((p) => p.cmd.includes('fake-ssh.mjs') && !/ remus /.test(p.cmd)).map((p) => p.pid)) signal(pid, 'SIGKILL')
    const r = await run
    expect(await waitNoMarked(s.marker, 30_000)).toEqual([])
    const copies = [...(await guests(s.a)).map((d) => ['a', d.name, isRunning(d)]), ...(await guests(s.b)).map((d) => ['b', d.name, isRunning(d)])]
    return {s, r, copies}
  }

  it('goes live only where the command exits 0: here the secondary, the primary stays paused as vm--stale', {timeout: 120_000}, async () => {
    const {s, r, copies} = await cutWith('sbfok', ['--fence', 'test "$XL_TS_FENCE_SIDE" = secondary'])
    expect(copies, String(r.stderr)).toEqual([
      ['a', 'vm--stale', false],
      ['b', 'vm', true],
    ])
    expect(String(r.stderr)).toMatch(/^Remus: the backup went live first \(the fence command failed \(exit 1\)\); domain paused at primary as vm--stale/m)
    expect(r.exitCode).toBe(1)
    await s.done()
  })

  it('a failing command and a hanging one (timed out) keep both sides from going live', {timeout: 120_000}, async () => {
    const fence = 'if [ "$XL_TS_FENCE_SIDE" = primary ]; then sleep 30; else echo "no quorum" >&2; exit 3; fi'
    const t0 = performance.now()
    const {s, r, copies} = await cutWith('sbfno', ['--fence', fence, '--fence-timeout', '500'])
    expect(performance.now() - t0, 'the hanging fence did not hold the primary up').toBeLessThan(20_000)
    expect(copies, String(r.stderr)).toEqual([
      ['a', 'vm--stale', false],
      ['b', 'vm--stale', false],
    ])
    expect(String(r.stderr)).toMatch(/the fence command did not finish within 500 ms/)
    await s.done()
  })
})
