/**
 * A guest's network output as the toolstack reads it: its vif named in the store, the frames
 * captured on that dom0 interface (the sim's netback and host network). Every reader gets every
 * frame in order; a reader learns when the domain goes away; a reader that does not read loses
 * frames but never holds the guest up; the store and the interface go with the domain.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {HostNetworkError, type FrameCapture, type HostNetwork, type WorkloadSpec} from '../src/toolstack/hypervisor/index.js'
import {createHypervisor, hostNetworkOf, parseFrame, type SimHypervisor} from '../src/toolstack/backends/index.js'
import {captureGuestOutput, createDomainBuilt, destroyDomain, type LibxlDomainSpec, vifBackendPath, vifInterfaceName} from '../src/toolstack/libxl/index.js'
import {ensureBuilt, leftovers, NOTHING, tempRoot, waitFor, wipeRoot} from './support/sim-host.js'

let root: string
let hv: SimHypervisor
let network: HostNetwork
const captures: FrameCapture[] = []
const sockets: net.Socket[] = []
const domains: number[] = []

beforeAll(async () => {
  await ensureBuilt()
  root = tempRoot('vif')
  hv = createHypervisor({backend: 'sim', root}) as SimHypervisor
  network = hostNetworkOf(hv)
})

afterEach(async () => {
  for (const c of captures.splice(0)) await c.close().catch(() => undefined)
  for (const s of sockets.splice(0)) s.destroy()
  for (const d of domains.splice(0)) await destroyDomain(hv, d).catch(() => undefined)
})

afterAll(async () => {
  hv?.close()
  if (root) await wipeRoot(root)
})

async function create(name: string, workload: Partial<WorkloadSpec>): Promise<number> {
  const spec: LibxlDomainSpec = {
    name,
    type: 'hvm',
    maxMemKb: 32 * 1024,
    vcpus: 1,
    config: {},
    workload: {dirtyRate: 0, workingSetMiB: 4, seed: 7, nondeterminism: 0, packetRate: 500, ...workload},
  }
  const domid = await createDomainBuilt(hv, spec, {paused: true})
  domains.push(domid)
  return domid
}

async function capture(domid: number, into: Buffer[]): Promise<FrameCapture> {
  const c = await captureGuestOutput(hv, network, domid, (f) => into.push(f))
  captures.push(c)
  return c
}

const seqs = (frames: Buffer[]): number[] => frames.map((f) => parseFrame(f).seq)
const upTo = (n: number): number[] => Array.from({length: n}, (_, i) => i)

describe('the guest vif', () => {
  it('is named in the store as on Xen, and leaves it with its domain', async () => {
    const domid = await create('named', {})
    const dir = vifBackendPath(domid, 0)
    expect(await hv.store.read(`${dir}/frontend-id`)).toBe(String(domid))
    expect(await hv.store.read(`${dir}/type`)).toBe('vif')
    expect(await vifInterfaceName(hv.store, domid)).toBe(`vif${domid}.0`)

    await destroyDomain(hv, domid)
    domains.splice(domains.indexOf(domid), 1)
    expect(await hv.store.directory(`/local/domain/0/backend/vif/${domid}`)).toEqual([])
    await expect(captureGuestOutput(hv, network, domid, () => undefined)).rejects.toMatchObject({code: 'no-such-interface'})
    // The interface itself is gone too, not only its name.
    await expect(network.capture(`vif${domid}.0`, () => undefined)).rejects.toMatchObject({code: 'no-such-interface'})
    expect(fs.readdirSync(path.join(root, 'net'))).toEqual([])
  })

  it('takes the name libxl reads: vifname when set, -emu for an emulated NIC, nothing that is not an interface name', async () => {
    const dir = vifBackendPath(4242, 1)
    try {
      await hv.store.write(`${dir}/type`, 'vif_ioemu')
      expect(await vifInterfaceName(hv.store, 4242, 1)).toBe('vif4242.1-emu')
      await hv.store.write(`${dir}/vifname`, 'guest-eth0')
      expect(await vifInterfaceName(hv.store, 4242, 1)).toBe('guest-eth0')
      await hv.store.write(`${dir}/vifname`, '../../etc')
      await expect(vifInterfaceName(hv.store, 4242, 1)).rejects.toBeInstanceOf(HostNetworkError)
      await expect(vifInterfaceName(hv.store, 4242, 0)).rejects.toMatchObject({code: 'no-such-interface'})
    } finally {
      await hv.store.remove('/local/domain/0/backend/vif/4242')
    }
  })

  it('gives every reader every frame, in order', async () => {
    const domid = await create('order', {packetRate: 2000})
    const a: Buffer[] = []
    const b: Buffer[] = []
    await capture(domid, a)
    await capture(domid, b)
    const STOP = 3000
    await hv.stopAtStep(domid, STOP)
    await hv.unpause(domid)
    const rt = await waitFor('the guest to stop with every frame captured', async () => {
      const r = await hv.runtime(domid)
      return r.paused && r.step === STOP && a.length === r.frames && b.length === r.frames && r
    })
    expect(rt.frames).toBeGreaterThan(1000)
    expect(seqs(a)).toEqual(upTo(rt.frames))
    expect(b.map((f) => f.toString('hex'))).toEqual(a.map((f) => f.toString('hex')))
    expect(rt.framesDropped).toBe(0)
  })

  it('tells a reader when the domain goes away, and one that closes that it did', async () => {
    const domid = await create('goes', {})
    const frames: Buffer[] = []
    const stays = await capture(domid, frames)
    const leaves = await capture(domid, [])
    await hv.unpause(domid)
    await waitFor('frames', () => frames.length > 5)
    await leaves.close()
    expect(await leaves.ended).toBe('closed')

    await destroyDomain(hv, domid)
    domains.splice(domains.indexOf(domid), 1)
    expect(await Promise.race([stays.ended, new Promise((r) => setTimeout(() => r('still open'), 5000))])).toBe('gone')
    const seen = frames.length
    expect(seqs(frames)).toEqual(upTo(seen))
  })

  it('does not hold the guest up for a reader that does not read: that reader loses frames, the others none', async () => {
    const domid = await create('slow', {packetRate: 40_000})
    const fast: Buffer[] = []
    await capture(domid, fast)
    // A reader that connects and never reads.
    const stalled = net.createConnection(path.join(root, 'net', `vif${domid}.0`))
    sockets.push(stalled)
    await new Promise<void>((resolve, reject) => stalled.once('connect', resolve).once('error', reject))
    stalled.pause()

    const STOP = 120_000
    await hv.stopAtStep(domid, STOP)
    const t0 = performance.now()
    await hv.unpause(domid)
    const rt = await waitFor(
      'the guest to run its steps',
      async () => {
        const r = await hv.runtime(domid)
        return r.paused && r.step === STOP && fast.length === r.frames && r
      },
      30_000,
    )
    const seconds = (performance.now() - t0) / 1000
    console.log(`sim-vif: ${rt.frames} frames in ${seconds.toFixed(2)} s, ${rt.framesDropped} dropped for the stalled reader, ${rt.droppedSteps} steps dropped`)
    // The guest kept its pace (3 s at 40k steps/s, with room for a loaded machine), and lost no steps.
    expect(seconds).toBeLessThan(12)
    expect(rt.droppedSteps).toBe(0)
    expect(rt.framesDropped).toBeGreaterThan(0)
    expect(seqs(fast)).toEqual(upTo(rt.frames))
  })

  it('leaves nothing behind', async () => {
    for (const d of domains.splice(0)) await destroyDomain(hv, d)
    expect(leftovers(root)).toEqual(NOTHING)
    expect(await hv.store.directory('/local/domain/0/backend/vif')).toEqual([])
  })
})
