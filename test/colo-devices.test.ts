/**
 * COLO with its devices in real QEMU (Debian's 7.2, never skipped): a sim guest with a COLO disk
 * writes it through its device model (HMP qemu-io on the quorum drive), QEMU replicates the writes
 * over NBD into the secondary's image, `xl-ts remus -c -p` drives replication at libxl's points;
 * colo-compare in the primary's device model compares the guests' frames.
 *
 *   - every sampled checkpoint: the two images are the same (sha256, taken while the primary is
 *     suspended / before the secondary runs again), and the secondary guest's view of its disk
 *     (through its active and hidden disks) holds what the image held: its own writes since the
 *     last checkpoint are gone. With the secondary's disk checkpoint skipped (a test switch) that
 *     view check fails, so it can. At the end `qemu-img compare` says the images are identical.
 *   - the secondary killed: the primary's writes go on completing, replication is torn down, and
 *     the primary's image holds every write its guest made (replayed from the workload).
 *   - the primary killed: the secondary fails over; its image holds exactly the last checkpoint's
 *     data plus its own writes since (the replay of its guest up to where it stands).
 *   - frames: divergent output makes a checkpoint within 100 ms of colo-compare's request, identical
 *     output is released (every frame, no checkpoint asked), and a frame released by a checkpoint
 *     is one that checkpoint covers, released after it.
 * Everything (QEMU, domains, sockets, images) goes with the host folders, also when a test fails.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {listDomains, resolveDomain} from '../src/toolstack/libxl/index.js'
import {initialGuestState} from '../src/toolstack/hypervisor/sim/context.js'
import {DISK_BLOCK_BYTES, diskWriteOffset, replayDiskWrites} from '../src/toolstack/hypervisor/sim/workload.js'
import {BIN} from './support/cli.js'
import {NODE, ensureBuilt, guests, isRunning, markedProcesses, sim, waitNoMarked, workloadOf, type GuestSpec} from './support/migrate.js'
import {cleanups, events, freePort, isBackupProcess, probeLines, setup, signal, sleep, startRemus, untilCheckpoints, type Event} from './support/remus.js'
import {testHooksEnv} from './support/test-hooks.js'

beforeAll(async () => {
  await ensureBuilt()
})

afterAll(async () => {
  for (const c of cleanups.splice(0)) await c()
})

const DISK_BYTES = 8 << 20

/** The guest these tests run: 16 MiB, 500 pages/s over 4 MiB. */
function smallGuest(seed: number): GuestSpec {
  return {name: 'vm', memMiB: 16, dirtyRate: 500, workingSetMiB: 4, seed}
}

/** A guest with one COLO disk (8 MiB raw, zeros, the same on both hosts), created paused. */
async function diskGuest(tag: string, over: Partial<GuestSpec> = {}) {
  const port = await freePort()
  const g: GuestSpec = {
    ...smallGuest(41),
    diskRate: 40,
    paused: true,
    disk: `format=raw,vdev=hda,access=rw,colo,colo-host=127.0.0.1,colo-port=${port},colo-export=colo1,active-disk=active.qcow2,hidden-disk=hidden.qcow2,target=disk.raw`,
    ...over,
  }
  // The images exist before the guest: on the primary its disk, on the secondary the operator's
  // copy of it (both zeros here). Relative disk paths are relative to each host's folder.
  const s = await setup(tag, g, async (root) => {
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(root, 'disk.raw'), String(DISK_BYTES)])
  })
  return {s, g}
}

/** The image a guest that ran `steps` steps from its start wrote (zeros plus its disk writes). */
function replayImage(g: GuestSpec, pages: number, steps: number): Buffer {
  const image = Buffer.alloc(DISK_BYTES)
  for (const w of replayDiskWrites(initialGuestState(workloadOf(g), pages), steps)) {
    image.fill(w.pattern, diskWriteOffset(w.index, DISK_BYTES), diskWriteOffset(w.index, DISK_BYTES) + DISK_BLOCK_BYTES)
  }
  return image
}

/** The guest named vm on `root`, paused (its disk requests drained): its step, pages and disk counters. */
async function pauseAndInspect(root: string) {
  const hv = sim(root)
  try {
    const domid = await resolveDomain(hv, 'vm')
    await hv.pause(domid)
    const r = await hv.runtime(domid)
    return {domid, step: r.step, pages: (await hv.info(domid)).pages, disk: r.disk}
  } finally {
    hv.close()
  }
}

async function diskCounters(root: string) {
  const hv = sim(root)
  try {
    return (await hv.runtime(await resolveDomain(hv, 'vm'))).disk
  } finally {
    hv.close()
  }
}

/** The domain logs of a host (for failure messages). */
function domainLogs(root: string): string {
  const dir = path.join(root, 'domains')
  if (!fs.existsSync(dir)) return ''
  return fs
    .readdirSync(dir)
    .map((d) => path.join(dir, d, 'domain.log'))
    .filter((f) => fs.existsSync(f))
    .map((f) => fs.readFileSync(f, 'utf8').slice(-3000))
    .join('\n')
}

function firstDifference(a: Buffer, b: Buffer): string {
  for (let i = 0; i < a.length; i += DISK_BLOCK_BYTES) {
    if (!a.subarray(i, i + DISK_BLOCK_BYTES).equals(b.subarray(i, i + DISK_BLOCK_BYTES))) return `block ${i / DISK_BLOCK_BYTES}: ${a[i]} vs expected ${b[i]}`
  }
  return 'none'
}

describe('COLO devices (real QEMU)', () => {
  it('disk writes are replicated: images equal at every checkpoint, the secondary’s own writes dropped', {timeout: 180_000}, async () => {
    for (const skip of [false, true]) {
      const {s} = await diskGuest(skip ? 'cdsk1' : 'cdsk0', {nondeterminism: 0.01})
      const run = startRemus(s.a, s.b, s.tmp, ['-c', '-p', '--max-interval', '150'], testHooksEnv({probe: {dir: s.tmp, every: 2}, ...(skip ? {coloSkipDiskCheckpoint: true} : {})}))
      await untilCheckpoints(run, skip ? 12 : 24)
      // The guest stops writing; the next checkpoints take the last of it; then a clean stop.
      const paused = await pauseAndInspect(s.a)
      await untilCheckpoints(run, 3)
      run.kill('SIGINT')
      const r = await run
      expect(r.exitCode, String(r.stderr).slice(-2000)).toBe(0)
      const primary = probeLines(path.join(s.tmp, 'primary.ndjson'))
      const secondary = probeLines(path.join(s.tmp, 'secondary.ndjson'))
      const views = secondary.filter((p) => p.view)
      if (skip) {
        // Without the secondary's disk checkpoint its own (diverged) writes stay in its view.
        expect(views.some((v) => v.view!.mismatches > 0), JSON.stringify(views)).toBe(true)
        await s.done()
        continue
      }
      const images = new Map(primary.filter((p) => p.disk).map((p) => [p.checkpoint, p.disk]))
      const both = secondary.filter((p) => p.disk && images.has(p.checkpoint))
      expect(both.length, 'sampled checkpoints with both images').toBeGreaterThanOrEqual(8)
      for (const p of both) expect(p.disk, `checkpoint ${p.checkpoint}: the images differ`).toBe(images.get(p.checkpoint))
      expect(new Set(both.map((p) => p.disk)).size, 'the disk changes between checkpoints').toBeGreaterThan(3)
      expect(views.length).toBeGreaterThanOrEqual(8)
      for (const v of views) expect(v.view, `checkpoint ${v.checkpoint}: the secondary's view`).toEqual({blocks: DISK_BYTES / DISK_BLOCK_BYTES, mismatches: 0})
      const cmp = await execa('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'raw', path.join(s.a, 'disk.raw'), path.join(s.b, 'disk.raw')], {reject: false})
      expect(cmp.stdout.trim(), cmp.stderr).toBe('Images are identical.')
      expect(paused.disk?.completed, 'the guest wrote its disk').toBeGreaterThan(50)
      expect(paused.disk?.failed).toBe(0)
      console.log(`colo disk: ${both.length} checkpoints compared, ${views.length} views checked, ${paused.disk?.completed} writes; max write ${paused.disk?.maxLatencyMs.toFixed(1)} ms`)
      await s.done()
    }
  })

  it('the secondary killed: the primary’s writes go on completing alone, none lost', {timeout: 120_000}, async () => {
    const {s, g} = await diskGuest('cdks', {diskRate: 50})
    const run = startRemus(s.a, s.b, s.tmp, ['-c', '-p', '--max-interval', '100'])
    await untilCheckpoints(run, 6)
    const hv = sim(s.b)
    const ids = (await listDomains(hv)).filter((d) => d.domid !== 0).map((d) => hv.record(d.domid).pid)
    hv.close()
    const backup = markedProcesses(s.marker).filter((p) => isBackupProcess(p.cmd))
    for (const p of [...backup.map((x) => x.pid), ...ids]) signal(p, 'SIGKILL')
    const r = await run
    const stderr = String(r.stderr)
    expect(r.exitCode, stderr.slice(-2000)).toBe(1)
    expect(stderr.split('\n')).toContain('COLO: Backup failed? resuming domain at primary.')
    expect(stderr).toContain('COLO: disk replication stopped; the guest writes its own disks alone')
    const before = (await diskCounters(s.a))!
    await sleep(1000)
    const after = (await diskCounters(s.a))!
    expect(after.completed - before.completed, 'writes completed in the second after').toBeGreaterThan(25)
    expect(after.failed).toBe(0)
    const end = await pauseAndInspect(s.a)
    const image = fs.readFileSync(path.join(s.a, 'disk.raw'))
    const expected = replayImage(g, end.pages, end.step)
    expect(image.equals(expected), `the primary's image vs its guest's writes: ${firstDifference(image, expected)}`).toBe(true)
    expect(await waitNoMarked(s.marker, 20_000)).toEqual([])
    await s.done()
  })

  it('the primary killed: the secondary’s disk is the last checkpoint plus its own writes since', {timeout: 120_000}, async () => {
    const {s, g} = await diskGuest('cdkp', {diskRate: 50})
    const run = startRemus(s.a, s.b, s.tmp, ['-c', '-p', '--max-interval', '100'])
    await untilCheckpoints(run, 6)
    await sleep(130)
    const hvA = sim(s.a)
    const pid = hvA.record(s.domid).pid
    hvA.close()
    const own = markedProcesses(s.marker).filter((p) => !isBackupProcess(p.cmd))
    for (const p of [run.pid!, pid, ...own.map((x) => x.pid)]) signal(p, 'SIGKILL')
    await run
    expect(await waitNoMarked(s.marker, 30_000), 'the secondary finished its failover').toEqual([])
    expect((await guests(s.b)).map((d) => [d.name, isRunning(d)])).toEqual([['vm', true]])
    await sleep(500)
    const end = await pauseAndInspect(s.b)
    expect(end.disk?.failed, `failed writes: ${end.disk?.lastError}\n${domainLogs(s.b)}`).toBe(0)
    const image = fs.readFileSync(path.join(s.b, 'disk.raw'))
    const expected = replayImage(g, end.pages, end.step)
    expect(image.equals(expected), `the secondary's image vs its guest's writes: ${firstDifference(image, expected)}`).toBe(true)
    await s.done()
  })

  it('frames: divergence makes a checkpoint within 100 ms; equal frames are released; none before its checkpoint', {timeout: 180_000}, async () => {
    for (const nondeterminism of [0.002, 0]) {
      const port = await freePort()
      const g: GuestSpec = {
        ...smallGuest(43),
        packetRate: 100,
        nondeterminism,
        vif: `mac=00:16:3e:00:00:02,colo_sock_compare_sec_in_ip=127.0.0.1,colo_sock_compare_sec_in_port=${port}`,
      }
      const s = await setup(`cfr${nondeterminism ? 1 : 0}`, g)
      const run = startRemus(s.a, s.b, s.tmp, ['-c', '-p', '--max-interval', '2000'])
      await untilCheckpoints(run, nondeterminism ? 12 : 3)
      run.kill('SIGINT')
      const r = await run
      expect(r.exitCode, String(r.stderr).slice(-2000)).toBe(0)
      const ev = events(r.stdout)
      const checkpoints = ev.filter((e) => e.event === 'checkpoint') as (Event & {number: number; atMs: number; step: number; reason: string; requestedAtMs?: number})[]
      const releases = ev.filter((e) => e.event === 'release') as (Event & {atMs: number; step: number; seq: number; via: string})[]
      const diverged = checkpoints.filter((c) => c.reason === 'divergence')
      if (nondeterminism) {
        expect(diverged.length, JSON.stringify(checkpoints.map((c) => c.reason))).toBeGreaterThanOrEqual(8)
        const latency = diverged.map((c) => c.atMs - c.requestedAtMs!).sort((a, b) => a - b)
        console.log(`colo frames: request -> suspend ms: median ${latency[latency.length >> 1]!.toFixed(1)}, max ${latency[latency.length - 1]!.toFixed(1)} over ${latency.length}`)
        for (const l of latency) expect(l).toBeLessThan(100)
      } else {
        expect(diverged, 'identical output asks for no checkpoint').toEqual([])
      }
      // Every frame released went out once, in the guest's order.
      const seqs = releases.map((x) => x.seq)
      expect(new Set(seqs).size, 'no frame released twice').toBe(seqs.length)
      expect(seqs, 'released in the order sent').toEqual([...seqs].sort((a, b) => a - b))
      expect(releases.filter((x) => x.via === 'match').length, 'equal frames released as they match').toBeGreaterThan(nondeterminism ? 20 : 100)
      // A frame a checkpoint released: sent before that checkpoint's suspend, released after it.
      for (const x of releases.filter((y) => y.via === 'checkpoint')) {
        const covering = checkpoints.filter((c) => c.atMs <= x.atMs && c.step >= x.step)
        expect(covering.length, `frame ${x.seq} (step ${x.step}) released at ${x.atMs.toFixed(1)} ms`).toBeGreaterThan(0)
      }
      await s.done()
    }
  })

  it('what an operator gets wrong is refused with a clear message, and a destroyed domain leaves no QEMU', {timeout: 120_000}, async () => {
    const {s} = await diskGuest('cdop')
    const xl = (root: string, args: string[]) => execa(NODE, [BIN, '--root', root, ...args], {env: {XL_TS_BACKEND: 'sim'}, reject: false})
    // A running guest with COLO disks: its writes before the first checkpoint would be lost to the
    // secondary. (Without -p as with it: the userspace proxy is used where the kernel one is missing.)
    expect((await xl(s.a, ['unpause', 'vm'])).exitCode).toBe(0)
    for (const p of [['-p'], []]) {
      const r = await xl(s.a, ['remus', '-c', ...p, 'vm', 'nohost'])
      expect(r.exitCode, r.stderr).toBe(1)
      expect(r.stderr).toContain('has COLO disks and is running')
    }
    // A QEMU per COLO domain, its pid where libxl keeps it (xenstore) and its log where an operator looks; destroy ends it.
    const hv = sim(s.a)
    const domid = await resolveDomain(hv, 'vm')
    const qemuPid = Number(await hv.store.read(`/local/domain/${domid}/image/device-model-pid`))
    hv.close()
    expect(fs.existsSync(`/proc/${qemuPid}`)).toBe(true)
    expect(fs.existsSync(path.join(s.a, 'log', 'qemu-dm-vm.log')), 'qemu-dm-vm.log').toBe(true)
    expect((await xl(s.a, ['destroy', 'vm'])).exitCode).toBe(0)
    for (let i = 0; i < 50 && fs.existsSync(`/proc/${qemuPid}`); i++) await sleep(50)
    expect(fs.existsSync(`/proc/${qemuPid}`), 'QEMU ended with its domain').toBe(false)
    // A disk image that is not there: the domain does not start, and says why.
    fs.rmSync(path.join(s.a, 'disk.raw'))
    const cfg = path.join(s.a, 'vm-cfg.cfg')
    const r = await xl(s.a, ['create', '-q', cfg])
    expect(r.exitCode).not.toBe(0)
    expect(r.stderr).toMatch(/cannot start the device model: .*Could not open '.*disk\.raw': No such file or directory/)
    await s.done()
  })
})

