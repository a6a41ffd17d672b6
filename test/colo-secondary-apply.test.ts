/**
 * The COLO secondary's toolstack and helper applying checkpoints from a real primary (the primary's
 * checkpoints and receiveDomain, each with its helper process, over FIFOs): the guest resumes only
 * once the helper has put each checkpoint's memory in place. (These guests have no device model, so
 * their checkpoints carry no device state: libxl/device-model.ts.)
 */
import {afterEach, beforeAll, describe, expect, test} from 'vitest'

import {openFdPair, type FdPair} from '../src/toolstack/fd/index.js'
import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {receiveDomain, type MigrateEvent} from '../src/toolstack/xl/index.js'
import {Checkpointing, ColoSecondary, primaryMode} from '../src/toolstack/replication/index.js'
import {ensureBuilt, leftovers, NOTHING, tempRoot, wipeRoot} from './support/sim-host.js'
import {createDomainBuilt, destroyDomain, type LibxlDomainSpec} from '../src/toolstack/libxl/index.js'

const roots: string[] = []
let pair: FdPair | undefined
beforeAll(ensureBuilt, 120_000)
afterEach(async () => {
  pair?.close()
  pair = undefined
  for (const r of roots.splice(0)) await wipeRoot(r)
})

function host(): SimHypervisor {
  const root = tempRoot('ca')
  roots.push(root)
  return new SimHypervisor(root)
}

const spec: LibxlDomainSpec = {
  name: 'vm',
  type: 'hvm',
  maxMemKb: 32 * 1024,
  vcpus: 1,
  config: {c_info: {name: 'vm', type: 'hvm'}},
  workload: {dirtyRate: 3000, workingSetMiB: 16, seed: 42, nondeterminism: 0, packetRate: 100},
}

/** A COLO session of `checkpoints` checkpoints between two hosts. */
async function session(checkpoints: number) {
  const a = host()
  const b = host()
  const src = await createDomainBuilt(a, spec, {paused: false})
  const dst = await createDomainBuilt(b, spec, {paused: true, forRestore: true})
  pair = await openFdPair()
  const p = pair
  const secondaryEvents: MigrateEvent[] = []
  const resumedAfter: number[] = []
  const received = receiveDomain({
    hypervisor: b,
    domid: dst,
    fd: p.childStdin,
    streamType: 'colo',
    backChannel: p.childStdout,
    coloCycles: (io) => new ColoSecondary(io, {onApplied: (n) => void resumedAfter.push(n)}).run(),
    onEvent: (e) => secondaryEvents.push(e),
  }).finally(() => p.closeChildEnds())
  received.catch(() => undefined)
  // The primary's checkpoints (replication/), on the pair's fds; a clean stop after the last one.
  const stop = new AbortController()
  const checkpointing = new Checkpointing({
    hypervisor: a,
    domid: src,
    mode: primaryMode({colo: {maxIntervalMs: 50}, intervalMs: 0, blackhole: false, netbuf: false, onEvent: () => undefined}, performance.now()),
    fd: p.sendFd,
    wayBack: p.recvFd,
    signal: stop.signal,
    onEvent: (e) => {
      if (e.kind === 'checkpoint' && e.number >= checkpoints) stop.abort()
    },
    startedAt: performance.now(),
  })
  const sent = await checkpointing.run().then(
    (stoppedCleanly) => ({stoppedCleanly, reason: undefined, checkpoints: checkpointing.checkpoints}),
    (err: unknown) => ({stoppedCleanly: false, reason: (err as Error).message, checkpoints: checkpointing.checkpoints}),
  )
  const outcome = await received.then(
    (r) => ({ok: true as const, r}),
    (err: unknown) => ({ok: false as const, err: err as Error}),
  )
  return {a, b, src, dst, sent, outcome, resumedAfter, secondaryEvents}
}

describe('the COLO secondary applying a checkpoint', () => {
  test('every checkpoint resumes the secondary once its memory is in; the primary stops cleanly', {timeout: 60_000}, async () => {
    const {a, b, src, dst, sent, resumedAfter} = await session(3)
    expect(sent.stoppedCleanly).toBe(true)
    expect(sent.checkpoints).toBe(3)
    expect(resumedAfter).toEqual([1, 2, 3])
    expect((await b.info(dst)).state.shutdown).toBe(false)
    await destroyDomain(a, src)
    await destroyDomain(b, dst)
    for (const r of roots) expect(leftovers(r)).toEqual(NOTHING)
  })
})
