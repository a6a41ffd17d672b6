/**
 * Remus acceptance (issue 6), end to end through the CLI on two simulated hosts (`-s ''`: the host
 * string runs `migrate-receive -r` on the second host folder):
 *
 *   - no frame leaves the primary before the backup acknowledged the checkpoint that produced it
 *     (and the 30 s timing run in remus-timing.solo.test.ts, which runs alone);
 *   - the primary host killed (toolstack, helper, domain) at random moments in 20 runs: the backup
 *     takes over with memory equal to the last whole checkpoint; exactly one copy runs;
 *   - only the primary's toolstack killed: its guardian stops the guest there;
 *   - the backup killed: the primary runs on, unprotected, its held output released;
 *   - -b runs without a second host; unsafe flags without -F get xl's message.
 */
import * as path from 'node:path'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {resolveDomain} from '../src/toolstack/libxl/index.js'
import {BIN} from './support/cli.js'
import {NODE, ensureBuilt, guests, isRunning, markedProcesses, runMarker, sim, waitNoMarked, type GuestSpec} from './support/migrate.js'
import {cleanups, events, isBackupProcess, probeLines, setup, signal, sleep, startRemus, untilAcked} from './support/remus.js'
import {testHooksEnv} from './support/test-hooks.js'

beforeAll(async () => {
  await ensureBuilt()
})

afterAll(async () => {
  for (const c of cleanups.splice(0)) await c()
})

describe('remus', () => {
  describe.concurrent('the primary host dies at a random moment: the backup takes over with the last whole checkpoint', () => {
    // Seeded moments after the first acknowledged checkpoint, in ms.
    // mulberry32, seeded: the same moments every run, spread over 0..1.5 s.
    let seed = 20250611
    const rand = (): number => {
      seed = (seed + 0x6d2b79f5) | 0
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    }
    const moments = Array.from({length: 20}, () => Math.floor(rand() * 1500))
    moments.forEach((delay, i) => {
      it(`run ${i + 1}: killed ${delay} ms after the first acknowledgement`, {timeout: 90_000}, async () => {
        const g: GuestSpec = {name: 'vm', memMiB: 32, dirtyRate: 3000, workingSetMiB: 8, seed: 100 + i, packetRate: 100}
        const s = await setup(`k${i}`, g)
        const run = startRemus(s.a, s.b, s.tmp, ['-i', '50'], testHooksEnv({probe: {dir: s.tmp}}))
        await untilAcked(run, 1)
        await sleep(delay)
        // The whole primary host: its toolstack, its helper and guardian, the guest's process.
        const hv = sim(s.a)
        const domainPid = hv.record(s.domid).pid
        hv.close()
        // (The backup's processes, receiver, its helper and guardian, carry the marker too.)
        const primaryHelpers = markedProcesses(s.marker).filter((p) => !isBackupProcess(p.cmd)).map((p) => p.pid)
        for (const pid of [run.pid!, domainPid, ...primaryHelpers]) signal(pid, 'SIGKILL')
        await run
        expect(await waitNoMarked(s.marker, 20_000), 'the backup finished').toEqual([])

        const dst = await guests(s.b)
        const src = (await guests(s.a)).filter(isRunning)
        expect(src, 'nothing runs on the dead primary').toEqual([])
        expect(dst.map((d) => [d.name, isRunning(d)]), 'one copy, on the backup').toEqual([['vm', true]])
        // Its memory at the failover is exactly one whole checkpoint's: the last one it had.
        const failover = probeLines(path.join(s.tmp, 'secondary.ndjson')).find((p) => p.failover)
        expect(failover, 'the backup recorded its failover').toBeDefined()
        const primary = new Map(probeLines(path.join(s.tmp, 'primary.ndjson')).map((p) => [p.checkpoint, p.checksum]))
        expect(failover!.checkpoint).toBeGreaterThanOrEqual(1)
        expect(failover!.checksum, `checkpoint ${failover!.checkpoint}`).toBe(primary.get(failover!.checkpoint))
        const hvB = sim(s.b)
        try {
          const report = await hvB.verifyIntegrity(await resolveDomain(hvB, 'vm'))
          expect(report.ok, JSON.stringify(report.bad)).toBe(true)
        } finally {
          hvB.close()
        }
        await s.done()
      })
    })
  })

  it("only the primary's toolstack dies: its guardian stops the guest there, the backup takes over", {timeout: 90_000}, async () => {
    const g: GuestSpec = {name: 'vm', memMiB: 32, dirtyRate: 2000, workingSetMiB: 8, seed: 6, packetRate: 100}
    const s = await setup('tool', g)
    const run = startRemus(s.a, s.b, s.tmp, ['-i', '100'])
    await untilAcked(run, 3)
    signal(run.pid!, 'SIGKILL')
    await run
    expect(await waitNoMarked(s.marker, 20_000)).toEqual([])
    const src = await guests(s.a)
    const dst = await guests(s.b)
    expect(dst.map((d) => [d.name, isRunning(d)]), 'the backup runs it').toEqual([['vm', true]])
    expect(src.map((d) => [d.name, d.state.paused]), 'the primary keeps it paused, named as the stale one').toEqual([['vm--stale', true]])
    expect([...src, ...dst].filter(isRunning).length).toBe(1)
    await s.done()
  })

  it("destroying the domain at the primary forces a failover: xl's message, exit 0", {timeout: 90_000}, async () => {
    const g: GuestSpec = {name: 'vm', memMiB: 32, dirtyRate: 2000, workingSetMiB: 8, seed: 8}
    const s = await setup('dest', g)
    const run = startRemus(s.a, s.b, s.tmp, ['-i', '50'])
    await untilAcked(run, 3)
    const d = await execa(NODE, [BIN, '--root', s.a, 'destroy', 'vm'], {env: {XL_TS_BACKEND: 'sim'}, reject: false})
    expect(d.exitCode, d.stderr).toBe(0)
    const r = await run
    expect(r.exitCode, String(r.stderr)).toBe(0)
    expect(String(r.stderr).split('\n')).toContain('Remus: Primary domain has been destroyed.')
    expect(await waitNoMarked(s.marker, 20_000)).toEqual([])
    expect(await guests(s.a)).toEqual([])
    expect((await guests(s.b)).map((x) => [x.name, isRunning(x)])).toEqual([['vm', true]])
    await s.done()
  })

  it('the backup dies: the primary runs on, unprotected, with its held output released', {timeout: 90_000}, async () => {
    const g: GuestSpec = {name: 'vm', memMiB: 32, dirtyRate: 2000, workingSetMiB: 8, seed: 5, packetRate: 200}
    const s = await setup('sec', g)
    const run = startRemus(s.a, s.b, s.tmp, ['-i', '100'])
    await untilAcked(run, 3)
    // The backup host: its receiver (and with it the stream), its helper, its guest's process.
    for (const p of markedProcesses(s.marker).filter((p) => isBackupProcess(p.cmd))) signal(p.pid, 'SIGKILL')
    const r = await run
    const stderr = String(r.stderr)
    expect(r.exitCode, stderr).toBe(1)
    expect(stderr.split('\n')).toContain('Remus: Backup failed? resuming domain at primary.')
    const ev = events(r.stdout)
    const result = ev.find((e) => e.event === 'result')!
    expect(result.outcome).toBe('backup-failed')
    expect(result).toMatchObject({ok: false, domid: s.domid, exitCode: 1})
    expect(typeof result.domain).toBe('string')
    // Every frame the guest sent came out: held epochs released, the rest unbuffered.
    const released = ev.filter((e) => e.event === 'netbuf-release').reduce((n, e) => n + (e.frames as number), 0)
    const hv = sim(s.a)
    try {
      const rt = await hv.runtime(s.domid)
      expect(rt.running && !rt.paused && !rt.suspended, JSON.stringify(rt)).toBe(true)
      expect(released).toBeGreaterThan(0)
      expect(released).toBeLessThanOrEqual(rt.frames)
      // Frames sent after the end of replication go straight out (nothing is held any more).
      expect(ev.some((e) => e.event === 'netbuf-release' && e.epoch === null)).toBe(true)
    } finally {
      hv.close()
    }
    expect(await waitNoMarked(s.marker, 20_000)).toEqual([])
    expect((await guests(s.a)).map((d) => [d.name, isRunning(d)])).toEqual([['vm', true]])
    expect((await guests(s.b)).filter(isRunning)).toEqual([])
    await s.done()
  })

  it('-b replicates to /dev/null with no second host; an interrupt stops it, the guest runs on', {timeout: 60_000}, async () => {
    const g: GuestSpec = {name: 'vm', memMiB: 32, dirtyRate: 2000, workingSetMiB: 8, seed: 9}
    const s = await setup('bh', g)
    const run = execa(NODE, [BIN, '--root', s.a, 'remus', '--json', '-F', '-b', '-i', '50', 'vm', 'nowhere'], {
      env: {XL_TS_BACKEND: 'sim', ...runMarker(s.tmp).env},
      reject: false,
      stdin: 'ignore',
    })
    const out = {text: ''}
    run.stdout?.on('data', (d: Buffer) => (out.text += d.toString()))
    const end = Date.now() + 20_000
    while (events(out.text.slice(0, out.text.lastIndexOf('\n') + 1)).filter((e) => e.event === 'checkpoint').length < 5 && Date.now() < end) await sleep(20)
    run.kill('SIGINT')
    const r = await run
    expect(r.exitCode, String(r.stderr)).toBe(0)
    const ev = events(r.stdout)
    expect(ev.filter((e) => e.event === 'checkpoint').length).toBeGreaterThanOrEqual(5)
    expect(ev.filter((e) => e.event === 'ack')).toEqual([])
    expect((await guests(s.a)).map((d) => [d.name, isRunning(d)])).toEqual([['vm', true]])
    await s.done()
  })

  it("unsafe flags without -F are refused with xl's words; -c/-p conflicts as xl", {timeout: 60_000}, async () => {
    const g: GuestSpec = {name: 'vm', memMiB: 16, dirtyRate: 0, workingSetMiB: 1, seed: 1}
    const s = await setup('flags', g)
    const xl = (args: string[]) => execa(NODE, [BIN, '--root', s.a, 'remus', ...args], {env: {XL_TS_BACKEND: 'sim'}, reject: false})
    for (const flag of ['-b', '-n', '-d']) {
      const r = await xl([flag, 'vm', 'nowhere'])
      expect(r.exitCode, flag).toBe(1)
      expect(r.stderr).toContain('Unsafe mode must be enabled to replicate to /dev/null,disable network buffering and disk replication')
      expect(r.stderr.split('\n')).toContain('Remus: Backup failed? resuming domain at primary.')
    }
    const p = await xl(['-p', 'vm', 'nowhere'])
    expect(p.exitCode).toBe(255)
    expect(p.stderr).toContain('Option -p must be used in conjunction with -c')
    const c = await xl(['-c', '-i', '100', 'vm', 'nowhere'])
    expect(c.exitCode).toBe(255)
    expect(c.stderr).toContain('option -c is conflict with -i, -d, -n or -b')
    const one = await xl(['vm'])
    expect(one.exitCode).toBe(2)
    // Nothing was touched.
    expect((await guests(s.a)).map((d) => [d.name, isRunning(d)])).toEqual([['vm', true]])
    await s.done()
  })
})

