/**
 * The simulated guest is deterministic: its page writes and frames are a function of its vCPU
 * context, not of timers. Two guests with one seed end equal at the same step; a copy of a guest's
 * memory and context in a domain built for restore carries on exactly as the original; and with
 * nondeterminism > 0 two copies drift apart, which shows in their frames.
 */
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type FrameCapture, type WorkloadSpec} from '../src/toolstack/hypervisor/index.js'
import {createHypervisor, hostNetworkOf, parseFrame, type SimHypervisor} from '../src/toolstack/backends/index.js'
import {ensureBuilt, leftovers, NOTHING, tempRoot, waitFor, wipeRoot} from './support/sim-host.js'
import {captureGuestOutput, createDomainBuilt, destroyDomain, type LibxlDomainSpec} from '../src/toolstack/libxl/index.js'

let root: string
let hv: SimHypervisor
const subs: FrameCapture[] = []

beforeAll(async () => {
  await ensureBuilt()
  root = tempRoot('det')
  hv = createHypervisor({backend: 'sim', root}) as SimHypervisor
})

afterAll(async () => {
  for (const s of subs.splice(0)) await s.close().catch(() => undefined)
  hv?.close()
  if (root) await wipeRoot(root)
})

function spec(name: string, workload: Partial<WorkloadSpec>, memMiB = 64): LibxlDomainSpec {
  return {
    name,
    type: 'hvm',
    maxMemKb: memMiB * 1024,
    vcpus: 1,
    config: {},
    workload: {dirtyRate: 5000, workingSetMiB: 8, seed: 1234, nondeterminism: 0, packetRate: 500, ...workload},
  }
}

async function collect(domid: number): Promise<Buffer[]> {
  const frames: Buffer[] = []
  subs.push(await captureGuestOutput(hv, hostNetworkOf(hv), domid, (f) => frames.push(f)))
  return frames
}

/** Waits until the guest has stopped by itself at `step` and every frame it sent has arrived. */
async function stoppedAt(domid: number, step: number, frames: Buffer[], framesBefore = 0): Promise<void> {
  await waitFor(`domain ${domid} to stop at step ${step}`, async () => {
    const rt = await hv.runtime(domid)
    return rt.paused && rt.step === step && frames.length === rt.frames - framesBefore
  })
}

function sameFrames(a: Buffer[], b: Buffer[]): void {
  expect(a.length).toBe(b.length)
  for (let i = 0; i < a.length; i++) if (!a[i]!.equals(b[i]!)) throw new Error(`frame ${i} differs`)
}

describe('determinism', () => {
  it('two guests with one seed are equal at the same step: memory, context and frames', async () => {
    const a = await createDomainBuilt(hv, spec('twin-a', {}), {paused: true})
    const b = await createDomainBuilt(hv, spec('twin-b', {}), {paused: true})
    expect(await hv.checksum(a)).toBe(await hv.checksum(b))
    const fa = await collect(a)
    const fb = await collect(b)
    const STOP = 4000
    await hv.stopAtStep(a, STOP)
    await hv.stopAtStep(b, STOP)
    await hv.unpause(a)
    await hv.unpause(b)
    await stoppedAt(a, STOP, fa)
    await stoppedAt(b, STOP, fb)
    expect(fa.length).toBeGreaterThan(200)
    sameFrames(fa, fb)
    const sum = await hv.checksum(a)
    expect(await hv.checksum(b)).toBe(sum)
    const [ra, rb] = [await hv.runtime(a), await hv.runtime(b)]
    expect(ra.writes).toBe(rb.writes)
    expect(ra.writes).toBeGreaterThan(STOP * 0.9)

    // The frames are well-formed UDP in IPv4 in Ethernet, numbered, carrying the step they were sent at.
    const parsed = fa.map(parseFrame)
    expect(parsed.map((p) => p.seq)).toEqual(parsed.map((_, i) => i))
    expect(parsed.every((p, i) => p.step <= STOP && (i === 0 || p.step > parsed[i - 1]!.step))).toBe(true)
    expect(parsed[0]).toMatchObject({dstIp: '10.0.0.1', dstPort: 9})
    expect(parsed[0]!.srcMac).toMatch(/^00:16:3e:/)

    // Steps run by hand while paused take the same course.
    await hv.runSteps(a, 777)
    await hv.runSteps(b, 777)
    await waitFor('frames', async () => fa.length === (await hv.runtime(a)).frames && fb.length === (await hv.runtime(b)).frames)
    sameFrames(fa, fb)
    expect(await hv.checksum(a)).toBe(await hv.checksum(b))
    expect(await hv.checksum(a)).not.toBe(sum)
    await destroyDomain(hv, a)
    await destroyDomain(hv, b)
  })

  it('a copy of memory and context in a domain built for restore continues exactly as the original', async () => {
    const src = await createDomainBuilt(hv, spec('original', {seed: 99, dirtyRate: 8000, packetRate: 800}), {paused: false})
    await waitFor('the original to run a while', async () => (await hv.runtime(src)).step > 3000)
    await hv.pause(src)
    const dst = await createDomainBuilt(hv, spec('original--incoming', {seed: 1}), {paused: true, forRestore: true})

    // What a restore does: every page, then TSC, HVM context (with the NIC's counters), HVM params.
    const [from, to] = [await hv.openMemory(src), await hv.openMemory(dst)]
    const batch = Buffer.alloc(1024 * 4096)
    for (let base = 0; base < from.pages; base += 1024) {
      const pfns = Array.from({length: Math.min(1024, from.pages - base)}, (_, i) => base + i)
      await from.readPages(pfns, batch)
      await to.writePages(pfns, batch)
    }
    await from.close()
    await to.close()
    await hv.setTscInfo(dst, await hv.getTscInfo(src))
    await hv.setVcpuContext(dst, await hv.getVcpuContext(src))
    await hv.setHvmParams(dst, await hv.getHvmParams(src))
    expect(await hv.checksum(dst)).toBe(await hv.checksum(src))
    expect((await hv.verifyIntegrity(dst)).ok).toBe(true)

    const start = (await hv.runtime(src)).step
    const framesBefore = (await hv.runtime(src)).frames
    expect((await hv.runtime(dst)).step).toBe(start)
    const fs = await collect(src)
    const fd = await collect(dst)
    await hv.setWriteLog(src, true)
    await hv.setWriteLog(dst, true)
    const K = 5000
    await hv.stopAtStep(src, start + K)
    await hv.stopAtStep(dst, start + K)
    await hv.unpause(src)
    await hv.unpause(dst)
    await stoppedAt(src, start + K, fs, framesBefore)
    await stoppedAt(dst, start + K, fd, framesBefore)
    expect(fs.length).toBeGreaterThan(300)
    sameFrames(fs, fd)
    expect(parseFrame(fs[0]!).seq).toBe(framesBefore)
    const [ls, lds] = [await hv.readWriteLog(src), await hv.readWriteLog(dst)]
    const writesSrc = ls.get(0)!
    expect(writesSrc.length).toBeGreaterThan(K * 0.9)
    expect(Buffer.from(lds.get(0)!.buffer).equals(Buffer.from(writesSrc.buffer))).toBe(true)
    expect(await hv.checksum(dst)).toBe(await hv.checksum(src))
    // The NIC's counters travel in the vCPU context: both copies counted the same bytes.
    expect(await hv.getVcpuContext(dst)).toEqual(await hv.getVcpuContext(src))
    await destroyDomain(hv, src)
    await destroyDomain(hv, dst)
  })

  it('with nondeterminism > 0 two copies of one seed soon send different frames', async () => {
    const a = await createDomainBuilt(hv, spec('noisy-a', {nondeterminism: 0.002, dirtyRate: 2000, packetRate: 500}), {paused: true})
    const b = await createDomainBuilt(hv, spec('noisy-b', {nondeterminism: 0.002, dirtyRate: 2000, packetRate: 500}), {paused: true})
    const fa = await collect(a)
    const fb = await collect(b)
    await hv.unpause(a)
    await hv.unpause(b)
    const t0 = performance.now()
    const at = await waitFor(
      'the frames to differ',
      () => {
        const n = Math.min(fa.length, fb.length)
        for (let i = 0; i < n; i++) if (!fa[i]!.equals(fb[i]!)) return i
        return undefined
      },
      10_000,
    )
    console.log(`nondeterminism 0.002/step at 2000 steps/s: frames differ from frame ${at} after ${(performance.now() - t0).toFixed(0)} ms`)
    const [ra, rb] = [await hv.runtime(a), await hv.runtime(b)]
    expect(ra.perturbations + rb.perturbations).toBeGreaterThan(0)
    await destroyDomain(hv, a)
    await destroyDomain(hv, b)
    expect(leftovers(root, hv.hostId)).toEqual(NOTHING)
  })
})

describe('the guest disk workload', () => {
  it('its writes are a pure function of the vCPU context, carried in the context blob, and absent in old contexts', async () => {
    const {initialGuestState, encodeContext, decodeContext} = await import('../src/toolstack/hypervisor/sim/context.js')
    const {GuestCpu, replayDiskWrites, diskWriteOffset, DISK_BLOCK_BYTES} = await import('../src/toolstack/hypervisor/sim/workload.js')
    const spec: WorkloadSpec = {dirtyRate: 500, workingSetMiB: 4, seed: 9, nondeterminism: 0, packetRate: 0, diskRate: 50}
    const start = initialGuestState(spec, 4096)
    expect(start.diskEvery, 'a write every 20 steps at 1000 steps/s').toBe(20)
    const all = replayDiskWrites(start, 1000)
    expect(all.map((w) => w.index)).toEqual(Array.from({length: 50}, (_, i) => i))
    expect(new Set(all.map((w) => w.pattern)).size, 'patterns come from the PRNG').toBeGreaterThan(20)
    // Run 400 steps, carry the context over, run 600 more: the same writes as 1000 in one go.
    const first: {index: number; pattern: number}[] = []
    const cpu = new GuestCpu(start)
    const sink = (to: typeof first) => ({writePage: () => undefined, frame: () => undefined, diskWrite: (index: number, pattern: number) => to.push({index, pattern})})
    cpu.run(400, sink(first), Math.random)
    const carried = decodeContext(encodeContext(cpu.save(), 2_400_000), 4096)
    expect([carried.diskEvery, carried.diskWrites]).toEqual([20, 20])
    const second: {index: number; pattern: number}[] = []
    new GuestCpu(carried).run(600, sink(second), Math.random)
    expect([...first, ...second]).toEqual(all)
    // A context from before the disk (zeros where the disk fields are) writes nothing.
    const old = encodeContext({...start, diskEvery: 0, diskWrites: 0}, 2_400_000)
    expect(replayDiskWrites(decodeContext(old, 4096), 1000)).toEqual([])
    expect(diskWriteOffset(130, 8 << 20), 'writes wrap around the disk').toBe(2 * DISK_BLOCK_BYTES)
  })
})
