/**
 * The libxc-level engines against the simulated host: a live save of a running guest into a
 * stream, restored into an empty domain on a second host, gives the same memory and vCPU state as
 * the source had at suspend; the stream is a valid libxc v3 stream; a checkpointed (Remus) stream
 * cut inside a checkpoint restores the last whole checkpoint, never a half-applied one, and a COLO
 * secondary whose primary goes away while it sends its dirty pages fails over. Where the
 * sink takes page data straight from the memory file, pages may leave by reference only while the
 * guest runs (a suspended guest's pages are copied: it runs again before the far side reads them).
 */
import * as fs from 'node:fs'

import {afterEach, beforeAll, describe, expect, test} from 'vitest'

import {FdError} from '../src/toolstack/fd/index.js'
import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {restoreDomain, type RestoreOptions} from '../src/toolstack/restore/index.js'
import {saveDomain, type RecordSink, type SaveEvent} from '../src/toolstack/save/index.js'
import {BufferSource, readMigrationStream} from '../src/toolstack/stream/index.js'
import {ensureBuilt, leftovers, NOTHING, tempRoot, wipeRoot} from './support/sim-host.js'
import {createDomainBuilt, destroyDomain, type LibxlDomainSpec} from '../src/toolstack/libxl/index.js'

const roots: string[] = []
beforeAll(ensureBuilt, 120_000)
afterEach(async () => {
  for (const r of roots.splice(0)) await wipeRoot(r)
})

function host(): SimHypervisor {
  const root = tempRoot('e')
  roots.push(root)
  return new SimHypervisor(root)
}

const spec = (name: string, memMiB = 64, dirtyRate = 5000): LibxlDomainSpec => ({
  name,
  type: 'hvm',
  maxMemKb: memMiB * 1024,
  vcpus: 1,
  config: {c_info: {name, type: 'hvm'}},
  workload: {dirtyRate, workingSetMiB: Math.min(memMiB, 16), seed: 42, nondeterminism: 0, packetRate: 100},
})

/**
 * A Remus save of `domid` into `sink`, its guest suspended and resumed as libxl does around each
 * checkpoint, stopped by the checkpoint callback after `checkpoints` of them (`intervalMs` apart).
 */
async function remusSave(
  hv: SimHypervisor,
  domid: number,
  sink: RecordSink,
  opts: {checkpoints: number; intervalMs?: number; afterSuspend?: () => void; beforeResume?: () => Promise<void>; afterResume?: () => void},
): Promise<void> {
  let taken = 0
  await saveDomain({
    hypervisor: hv,
    domid,
    sink,
    live: true,
    debug: false,
    streamType: 'remus',
    callbacks: {
      suspend: async () => {
        await hv.suspend(domid)
        opts.afterSuspend?.()
        return 1
      },
      postcopy: async () => {
        await opts.beforeResume?.()
        await hv.resume(domid, {cancel: true})
        opts.afterResume?.()
        return 1
      },
      checkpoint: async () => {
        taken++
        if (opts.intervalMs) await new Promise((r) => setTimeout(r, opts.intervalMs))
        return taken < opts.checkpoints ? 1 : 0
      },
    },
  }).catch((e: Error) => expect(e.message).toMatch(/stopped by the checkpoint callback/))
  expect(taken).toBe(opts.checkpoints)
}

/** Restores into `dst` and expects a failover after two whole checkpoints, with the second's memory. */
async function expectFailoverToSecond(
  b: SimHypervisor,
  dst: number,
  secondSum: string,
  opts: Pick<RestoreOptions, 'source' | 'streamType' | 'callbacks' | 'sendDirtyList'>,
): Promise<void> {
  const result = await restoreDomain({hypervisor: b, domid: dst, storeEvtchn: 1, consoleEvtchn: 2, ...opts})
  expect(result.failover).toBe(true)
  expect(result.checkpoints).toBe(2)
  expect(await b.checksum(dst)).toBe(secondSum)
}

class Collect {
  parts: Buffer[] = []
  write(p: readonly Buffer[]): void {
    for (const b of p) this.parts.push(Buffer.from(b))
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts)
  }
}

/** Two hosts, a small running guest on the first, and a sink for its stream: a checkpointed test's start. */
async function runningGuestAndSink(): Promise<{a: SimHypervisor; b: SimHypervisor; src: number; sink: Collect}> {
  const a = host()
  const b = host()
  const src = await createDomainBuilt(a, spec('vm', 32, 3000), {paused: false})
  return {a, b, src, sink: new Collect()}
}

describe('live save and restore through the engines', () => {
  test('memory and vCPU context equal the source at suspend; the stream is valid libxc v3', async () => {
    const a = host()
    const b = host()
    const src = await createDomainBuilt(a, spec('vm'), {paused: false})
    await new Promise((r) => setTimeout(r, 300)) // let the workload dirty pages
    const sink = new Collect()
    const events: SaveEvent[] = []
    await saveDomain({
      hypervisor: a,
      domid: src,
      sink,
      live: true,
      debug: false,
      streamType: 'plain',
      callbacks: {suspend: async () => (await a.suspend(src), 1)},
      onEvent: (e) => events.push(e),
    })
    const rounds = events.filter((e) => e.kind === 'round')
    expect(rounds.length).toBeGreaterThan(0)
    expect(events.some((e) => e.kind === 'milestone' && e.what === 'Domain now suspended')).toBe(true)

    const stream = sink.bytes()
    const kinds: string[] = []
    for await (const ev of readMigrationStream(new BufferSource(stream), {format: 'libxc', streamType: 'plain', p2mSize: 16384})) {
      if (ev.layer === 'libxc') kinds.push(ev.record.kind)
    }
    expect(kinds.slice(0, 3)).toEqual(['X86_CPUID_POLICY', 'X86_MSR_POLICY', 'STATIC_DATA_END'])
    expect(kinds.slice(-4)).toEqual(['X86_TSC_INFO', 'HVM_CONTEXT', 'HVM_PARAMS', 'END'])

    const dst = await createDomainBuilt(b, spec('vm'), {paused: true, forRestore: true})
    const result = await restoreDomain({
      hypervisor: b,
      domid: dst,
      source: new BufferSource(stream),
      streamType: 'plain',
      callbacks: {},
      storeEvtchn: 1,
      consoleEvtchn: 2,
    })
    expect(result.failover).toBe(false)
    expect(await b.checksum(dst)).toBe(await a.checksum(src))
    expect((await b.verifyIntegrity(dst)).ok).toBe(true)
    expect(await b.getVcpuContext(dst)).toEqual(await a.getVcpuContext(src))

    await destroyDomain(a, src)
    await destroyDomain(b, dst)
    for (const r of roots) expect(leftovers(r)).toEqual(NOTHING)
  })

  test('a Remus stream cut inside the third checkpoint restores the second, whole', async () => {
    const {a, b, src, sink} = await runningGuestAndSink()
    const boundaries: number[] = []
    const sums: string[] = []
    await remusSave(a, src, sink, {
      checkpoints: 3,
      intervalMs: 50,
      beforeResume: async () => void sums.push(await a.checksum(src)), // the state this checkpoint carries
      // After CHECKPOINT is written and the domain resumed: where this checkpoint ends.
      afterResume: () => void boundaries.push(sink.bytes().length),
    })
    expect(boundaries.length).toBe(3)

    // Cut the stream halfway through the third checkpoint's records.
    const cut = boundaries[1]! + Math.floor((boundaries[2]! - boundaries[1]!) / 2)
    const dst = await createDomainBuilt(b, spec('vm', 32, 3000), {paused: true, forRestore: true})
    await expectFailoverToSecond(b, dst, sums[1]!, {source: new BufferSource(sink.bytes().subarray(0, cut)), streamType: 'remus', callbacks: {checkpoint: async () => 1}})
    await destroyDomain(a, src)
    await destroyDomain(b, dst)
  })

  test('COLO: the primary gone while the secondary sends its dirty pfn list is a failover, not a failed restore', async () => {
    const {a, b, src, sink} = await runningGuestAndSink()
    const sums: string[] = []
    let taken = 0
    await saveDomain({
      hypervisor: a,
      domid: src,
      sink,
      live: true,
      debug: false,
      streamType: 'colo',
      readSecondaryDirty: async () => [],
      callbacks: {
        suspend: async () => (await a.suspend(src), 1),
        checkpoint: async () => (sums.push(await a.checksum(src)), 1),
        postcopy: async () => (await a.resume(src, {cancel: true}), 1),
        waitCheckpoint: async () => (++taken < 3 ? (await new Promise((r) => setTimeout(r, 30)), 1) : 0),
      },
    }).catch((e: Error) => expect(e.message).toMatch(/stopped by the wait_checkpoint callback/))
    expect(sums.length).toBe(3)

    // The secondary: every callback carries on, but the back channel's reader is gone when the
    // list after the second checkpoint is due (the primary killed after reading SVM_SUSPENDED).
    const dst = await createDomainBuilt(b, spec('vm', 32, 3000), {paused: true, forRestore: true})
    let lists = 0
    const one = async (): Promise<number> => 1
    let logDirty = false
    // As the secondary's toolstack: log-dirty from the first checkpoint on.
    const postcopy = async (): Promise<number> => {
      if (!logDirty) await b.logDirty(dst).enable()
      logDirty = true
      return 1
    }
    // The second checkpoint's state, applied whole (the sim's guest stays suspended: no callback ran it).
    await expectFailoverToSecond(b, dst, sums[1]!, {
      source: new BufferSource(sink.bytes()),
      streamType: 'colo',
      callbacks: {checkpoint: one, postcopy, waitCheckpoint: one, suspend: one, restoreResults: async () => {}},
      sendDirtyList: async () => {
        if (++lists === 2) throw new FdError('closed', 'the back channel', 4, 'the reader has gone (EPIPE) after 0 of 24 bytes', {errno: 'EPIPE'})
      },
    })
    await destroyDomain(a, src)
    await destroyDomain(b, dst)
  })

  test('pages from the memory file leave by reference only while the guest runs (Remus: never a checkpoint)', async () => {
    const a = host()
    const src = await createDomainBuilt(a, spec('vm', 32, 3000), {paused: false})
    const collect = new Collect()
    let suspended = false
    const calls: {share: boolean; suspended: boolean; bytes: number}[] = []
    // A sink as the helper's, but it reads the runs itself, so the stream can be checked whole.
    const sink: RecordSink = {
      write: (parts) => collect.write(parts),
      writeFromFile: (head, fd, runs, share) => {
        collect.write(head)
        let bytes = 0
        for (const run of runs) {
          const page = Buffer.alloc(run.length)
          expect(fs.readSync(fd, page, 0, run.length, run.offset)).toBe(run.length)
          collect.write([page])
          bytes += run.length
        }
        calls.push({share, suspended, bytes})
      },
    }
    // 100 ms between checkpoints: the guest (3000 pages/s) dirties pages for each of them.
    await remusSave(a, src, sink, {checkpoints: 3, intervalMs: 100, afterSuspend: () => (suspended = true), afterResume: () => (suspended = false)})
    expect(calls.filter((c) => !c.suspended).length).toBeGreaterThan(0)
    expect(calls.filter((c) => !c.suspended).every((c) => c.share)).toBe(true)
    expect(calls.filter((c) => c.suspended).length).toBeGreaterThan(0)
    expect(calls.filter((c) => c.suspended).every((c) => !c.share)).toBe(true)
    const kinds: string[] = []
    for await (const ev of readMigrationStream(new BufferSource(collect.bytes()), {format: 'libxc', streamType: 'remus', p2mSize: 8192})) {
      if (ev.layer === 'libxc') kinds.push(ev.record.kind)
    }
    expect(kinds.filter((k) => k === 'CHECKPOINT')).toHaveLength(3)
    expect(kinds.filter((k) => k === 'PAGE_DATA').length).toBe(calls.length)
    await destroyDomain(a, src)
  })
})
