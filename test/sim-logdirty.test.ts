/**
 * Log-dirty on the simulated host is exact under load: a guest dirtying 50k pages/s, peeked and
 * cleaned at random moments for about two seconds, against the guest's own write log. Every page
 * written in an epoch is in that epoch's CLEAN bitmap, nothing else is, and every PEEK shows exactly
 * the pages written in its epoch so far. The guest keeps up with its rate meanwhile.
 */
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {type DirtyBitmap} from '../src/toolstack/hypervisor/index.js'
import {createHypervisor, type SimHypervisor} from '../src/toolstack/backends/index.js'
import {ensureBuilt, leftovers, NOTHING, sleep, tempRoot, wipeRoot} from './support/sim-host.js'
import {createDomainBuilt, destroyDomain} from '../src/toolstack/libxl/index.js'

const RATE = 50_000
let root: string
let hv: SimHypervisor

beforeAll(async () => {
  await ensureBuilt()
  root = tempRoot('ld')
  hv = createHypervisor({backend: 'sim', root}) as SimHypervisor
})

afterAll(async () => {
  hv?.close()
  if (root) await wipeRoot(root)
})

interface Round {
  action: 'peek' | 'clean'
  epoch: number
  writes: number
  bitmap: DirtyBitmap
}

function setOf(pfns: Uint32Array, n = pfns.length): number[] {
  return [...new Set(pfns.subarray(0, n))].sort((a, b) => a - b)
}

describe('log-dirty', () => {
  it('is exact under a 50k pages/s workload: no write lost between cleans, nothing extra', async () => {
    const domid = await createDomainBuilt(hv, 
      {
        name: 'dirty',
        type: 'hvm',
        maxMemKb: 256 * 1024,
        vcpus: 1,
        config: {},
        workload: {dirtyRate: RATE, workingSetMiB: 64, seed: 42, nondeterminism: 0, packetRate: 50},
      },
      {paused: true},
    )
    await hv.setWriteLog(domid, true)
    const ld = hv.logDirty(domid)
    await ld.enable()
    const first = await hv.logDirtyRound(domid, 'clean')
    expect(first.bitmap.isEmpty()).toBe(true)
    expect(first.writes).toBe(0)

    const before = await hv.runtime(domid)
    const t0 = performance.now()
    await hv.unpause(domid)
    const rounds: Round[] = []
    const latency: number[] = []
    while (performance.now() - t0 < 2000) {
      await sleep(Math.floor(Math.random() * 40))
      const action = Math.random() < 0.4 ? 'peek' : 'clean'
      const s = performance.now()
      const r = await hv.logDirtyRound(domid, action)
      latency.push(performance.now() - s)
      rounds.push({action, ...r})
    }
    await hv.pause(domid)
    const elapsed = (performance.now() - t0) / 1000
    const after = await hv.runtime(domid)
    const last = await hv.logDirtyRound(domid, 'clean')
    rounds.push({action: 'clean', ...last})
    const log = await hv.readWriteLog(domid)

    const achieved = (after.writes - before.writes) / elapsed
    latency.sort((a, b) => a - b)
    console.log(
      `log-dirty: ${rounds.length} rounds over ${elapsed.toFixed(2)} s, ${after.writes - before.writes} writes = ${achieved.toFixed(0)} pages/s ` +
        `(target ${RATE}), dropped steps ${after.droppedSteps}; peek/clean latency median ${latency[latency.length >> 1]!.toFixed(2)} ms, ` +
        `p95 ${latency[Math.floor(latency.length * 0.95)]!.toFixed(2)} ms, max ${latency[latency.length - 1]!.toFixed(2)} ms`,
    )
    expect(after.droppedSteps).toBe(0)
    expect(achieved).toBeGreaterThan(RATE * 0.85)

    // Every write is logged in exactly one epoch, and the epochs add up to all writes.
    let logged = 0
    for (const pfns of log.values()) logged += pfns.length
    expect(logged).toBe(after.writes - before.writes)

    const cleans = rounds.filter((r) => r.action === 'clean')
    expect(cleans.length).toBeGreaterThan(10)
    // Each clean ends its epoch and the next begins right after it.
    for (let i = 1; i < cleans.length; i++) expect(cleans[i]!.epoch).toBe(cleans[i - 1]!.epoch + 1)
    expect(cleans[0]!.epoch).toBe(first.epoch + 1)

    let checkedPages = 0
    for (const r of rounds) {
      const pfns = log.get(r.epoch) ?? new Uint32Array(0)
      if (r.action === 'clean') expect(r.writes, `writes in epoch ${r.epoch}`).toBe(pfns.length)
      expect(r.writes).toBeLessThanOrEqual(pfns.length)
      const want = setOf(pfns, r.writes)
      const got = r.bitmap.toArray()
      if (got.length !== want.length || got.some((p, i) => p !== want[i])) {
        const missing = want.filter((p) => !r.bitmap.has(p))
        const extra = got.filter((p) => !want.includes(p))
        throw new Error(`${r.action} of epoch ${r.epoch}: ${missing.length} written pages missing (${missing.slice(0, 5)}), ${extra.length} extra (${extra.slice(0, 5)})`)
      }
      checkedPages += got.length
    }
    expect(checkedPages).toBeGreaterThan(RATE / 2)
    // Most epochs saw real work.
    expect(cleans.filter((c) => c.writes > 100).length).toBeGreaterThan(cleans.length / 2)

    const integrity = await hv.verifyIntegrity(domid)
    expect(integrity.ok).toBe(true)
    await destroyDomain(hv, domid)
    expect(leftovers(root, hv.hostId)).toEqual(NOTHING)
  })
})
