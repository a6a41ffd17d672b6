/**
 * The simulated Xen host, with real domain processes, real /dev/shm memory files and real control
 * sockets: lifecycle, reaping of killed domains, ids and names, two hosts on one machine, platform
 * state, foreign memory access and page integrity. Every test removes all it made, also on failure.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {execa} from 'execa'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {createDomainBuilt, destroyDomain, domainInfo, listDomains, renameDomain, resolveDomain, storedConfig, type LibxlDomainSpec} from '../src/toolstack/libxl/index.js'
import {HypervisorError, type WorkloadSpec} from '../src/toolstack/hypervisor/index.js'
import {createHypervisor, resolveBackend, resolveRoot, SimHypervisor} from '../src/toolstack/backends/index.js'
import {
  DIST_INDEX,
  domainProcesses,
  ensureBuilt,
  leftovers,
  NOTHING,
  sleep,
  stateLetters,
  tempRoot,
  waitFor,
  wipeRoot,
} from './support/sim-host.js'

const MiB = 1024
const roots: string[] = []
const hosts: SimHypervisor[] = []

function newHost(tag = 'h'): SimHypervisor {
  const root = tempRoot(tag)
  roots.push(root)
  const hv = createHypervisor({backend: 'sim', root}) as SimHypervisor
  hosts.push(hv)
  return hv
}

function spec(name: string, memMiB = 64, workload?: Partial<WorkloadSpec>): LibxlDomainSpec {
  return {
    name,
    type: 'hvm',
    maxMemKb: memMiB * MiB,
    vcpus: 2,
    config: {c_info: {name, type: 'hvm'}},
    ...(workload ? {workload: {dirtyRate: 1000, workingSetMiB: 16, seed: 1, nondeterminism: 0, packetRate: 10, ...workload}} : {}),
  }
}

async function expectError(p: Promise<unknown>, code: string, message?: RegExp | string): Promise<HypervisorError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err, `expected a ${code} error`).toBeInstanceOf(HypervisorError)
  const he = err as HypervisorError
  expect(he.code).toBe(code)
  if (typeof message === 'string') expect(he.message).toBe(message)
  else if (message) expect(he.message).toMatch(message)
  return he
}

beforeAll(async () => {
  await ensureBuilt()
})

afterEach(async () => {
  for (const hv of hosts.splice(0)) hv.close()
  for (const root of roots.splice(0)) await wipeRoot(root)
})

afterAll(async () => {
  for (const root of roots.splice(0)) await wipeRoot(root)
})

describe('domain lifecycle', () => {
  it('creates a 256 MiB guest, lists, pauses, unpauses, checksums and destroys it, leaving nothing behind', async () => {
    const hv = newHost()
    const t0 = performance.now()
    const domid = await createDomainBuilt(hv, spec('vm1', 256, {dirtyRate: 2000, workingSetMiB: 32, packetRate: 20}), {paused: false})
    const createMs = performance.now() - t0
    expect(createMs).toBeLessThan(5000)
    console.log(`create 256 MiB: ${createMs.toFixed(0)} ms`)

    const list = await listDomains(hv)
    expect(list[0]).toMatchObject({domid: 0, name: 'Domain-0', type: 'pv'})
    const vm = list.find((d) => d.name === 'vm1')!
    expect(vm).toMatchObject({domid, pages: 65536, maxMemKb: 256 * MiB, currentMemKb: 256 * MiB, vcpus: 2, type: 'hvm'})
    expect(stateLetters(vm.state)).toBe('r-----')
    expect(domid).toBeGreaterThanOrEqual(1)

    const rec = hv.record(domid)
    expect(fs.statSync(rec.memPath).size).toBe(256 << 20)
    expect(rec.memPath).toBe(`/dev/shm/xl-ts-${hv.hostId}-${domid}`)
    expect(fs.statSync(rec.socketPath).mode & 0o777).toBe(0o600)
    expect(fs.statSync(path.dirname(rec.socketPath)).mode & 0o777).toBe(0o700)
    expect(fs.statSync(hv.root).mode & 0o777).toBe(0o700)
    expect(domainProcesses(hv.root)).toEqual([rec.pid])
    expect(await storedConfig(hv, domid)).toEqual({c_info: {name: 'vm1', type: 'hvm'}})

    await hv.pause(domid)
    expect(stateLetters((await hv.info(domid)).state)).toBe('--p---')
    const paused1 = await hv.checksum(domid)
    const step1 = (await hv.runtime(domid)).step
    await sleep(200)
    expect(await hv.checksum(domid)).toBe(paused1)
    expect((await hv.runtime(domid)).step).toBe(step1)

    await hv.unpause(domid)
    expect(stateLetters((await hv.info(domid)).state)).toBe('r-----')
    await waitFor('the guest to write again', async () => (await hv.runtime(domid)).writes > step1 / 2 + 50)
    expect(await hv.checksum(domid)).not.toBe(paused1)
    const report = await hv.verifyIntegrity(domid)
    expect(report).toMatchObject({ok: true, badCount: 0, pages: 65536})
    expect(report.maxGeneration).toBeGreaterThan(0)

    await destroyDomain(hv, domid)
    expect((await listDomains(hv)).map((d) => d.domid)).toEqual([0])
    expect(leftovers(hv.root, hv.hostId)).toEqual(NOTHING)
  })

  it('starts the domain process without NODE_EXTRA_CA_CERTS (40 ms of every Node start), with the rest of the environment', async () => {
    const hv = newHost()
    const saved = {certs: process.env.NODE_EXTRA_CA_CERTS, mark: process.env.XL_TS_TEST_MARK}
    process.env.NODE_EXTRA_CA_CERTS = '/etc/ssl/certs/ca-certificates.crt'
    process.env.XL_TS_TEST_MARK = 'kept'
    let domid: number
    try {
      domid = await createDomainBuilt(hv, spec('envvm', 16), {paused: true})
    } finally {
      for (const [k, v] of [['NODE_EXTRA_CA_CERTS', saved.certs], ['XL_TS_TEST_MARK', saved.mark]] as const) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
    const environ = fs.readFileSync(`/proc/${hv.record(domid).pid}/environ`, 'utf8').split('\0')
    expect(environ).toContain('XL_TS_TEST_MARK=kept')
    expect(environ.filter((e) => e.startsWith('NODE_EXTRA_CA_CERTS='))).toEqual([])
    await destroyDomain(hv, domid)
  })

  it('reaps a domain whose process was killed with SIGKILL at the next list()', async () => {
    const hv = newHost()
    const domid = await createDomainBuilt(hv, spec('victim', 32, {}), {paused: false})
    const {pid, memPath} = hv.record(domid)
    process.kill(pid, 'SIGKILL')
    await waitFor('the process to die', () => !domainProcesses(hv.root).includes(pid))
    expect(fs.existsSync(memPath)).toBe(true) // nobody has looked yet
    expect((await listDomains(hv)).map((d) => d.name)).toEqual(['Domain-0'])
    expect(leftovers(hv.root, hv.hostId)).toEqual(NOTHING)
    await expectError(hv.info(domid), 'no-such-domain', `domain ${domid} does not exist`)
  })

  it('reaps a killed domain on any access, and one whose control socket is gone', async () => {
    const hv = newHost()
    const a = await createDomainBuilt(hv, spec('a', 32, {}), {paused: false})
    const b = await createDomainBuilt(hv, spec('b', 32, {}), {paused: true})
    process.kill(hv.record(a).pid, 'SIGKILL')
    await waitFor('a to die', () => domainProcesses(hv.root).length === 1)
    await expectError(hv.pause(a), 'no-such-domain')
    // b's process lives, but its socket is gone: it can never be reached again.
    const bPid = hv.record(b).pid
    fs.rmSync(hv.record(b).socketPath)
    hv.close()
    await expectError(hv.unpause(b), 'no-such-domain')
    await waitFor('b to be killed', () => !domainProcesses(hv.root).includes(bPid))
    expect((await listDomains(hv)).length).toBe(1)
    expect(leftovers(hv.root, hv.hostId)).toEqual(NOTHING)
  })

  it('reaps a domain killed under an open control connection at the very next call', async () => {
    const hv = newHost()
    const domid = await createDomainBuilt(hv, spec('k', 32, {}), {paused: false})
    // The connection is open and its record remembered: calls skip the record file from here on.
    await hv.pause(domid)
    await hv.unpause(domid)
    const {pid} = hv.record(domid)
    // No turn of the event loop in between: the client has not seen its socket close yet.
    process.kill(pid, 'SIGKILL')
    await expectError(hv.pause(domid), 'no-such-domain')
    await waitFor('the process to be gone', () => !domainProcesses(hv.root).includes(pid))
    expect(leftovers(hv.root, hv.hostId)).toEqual(NOTHING)
    // A new domain that gets the same number is a new connection, not the dead one's.
    const again = await createDomainBuilt(hv, spec('k2', 32, {}), {paused: true})
    await hv.unpause(again)
    expect((await domainInfo(hv, again)).name).toBe('k2')
    await destroyDomain(hv, again)
  })

  it('suspends (shutdown reason suspend) and resumes where it stopped', async () => {
    const hv = newHost()
    const domid = await createDomainBuilt(hv, spec('s', 32, {dirtyRate: 3000}), {paused: false})
    await waitFor('steps', async () => (await hv.runtime(domid)).step > 100)
    await hv.suspend(domid)
    const info = await hv.info(domid)
    expect(info.state).toMatchObject({shutdown: true, shutdownReason: 2, running: false, paused: false})
    expect(stateLetters(info.state)).toBe('---s--')
    const sum = await hv.checksum(domid)
    const step = (await hv.runtime(domid)).step
    await sleep(100)
    expect((await hv.runtime(domid)).step).toBe(step)
    expect(await hv.checksum(domid)).toBe(sum)
    await expectError(hv.suspend(domid), 'bad-state', /already suspended/)
    await expectError(hv.setVcpuContext(domid, Buffer.alloc(8)), 'bad-request', /invalid vCPU context/)
    await hv.resume(domid, {cancel: true})
    expect(stateLetters((await hv.info(domid)).state)).toBe('r-----')
    await waitFor('steps after resume', async () => (await hv.runtime(domid)).step > step)
    await expectError(hv.resume(domid, {cancel: true}), 'bad-state', /not suspended/)
    await expectError(hv.setVcpuContext(domid, await hv.getVcpuContext(domid)), 'bad-state', new RegExp(`domain ${domid}: is running`))
    await destroyDomain(hv, domid)
    expect(leftovers(hv.root, hv.hostId)).toEqual(NOTHING)
  })

  it('shuts a running guest down at once and a paused one when it runs', async () => {
    const hv = newHost()
    const a = await createDomainBuilt(hv, spec('a', 32, {}), {paused: false})
    const b = await createDomainBuilt(hv, spec('b', 32, {}), {paused: true})
    await hv.shutdown(a)
    await hv.shutdown(b)
    expect((await listDomains(hv)).map((d) => d.name)).toEqual(['Domain-0', 'b'])
    await hv.unpause(b)
    await waitFor('b to go', async () => (await listDomains(hv)).length === 1)
    await waitFor('nothing left', () => JSON.stringify(leftovers(hv.root, hv.hostId)) === JSON.stringify(NOTHING))
  })

  it('builds an empty paused domain for restore: zero memory, no context, no steps until one is set', async () => {
    const hv = newHost()
    const domid = await createDomainBuilt(hv, spec('incoming', 16, {dirtyRate: 5000}), {paused: true, forRestore: true})
    const rt = await hv.runtime(domid)
    expect(rt).toMatchObject({paused: true, hasContext: false, step: 0})
    const report = await hv.verifyIntegrity(domid)
    expect(report.ok).toBe(false)
    expect(report.bad[0]).toEqual({pfn: 0, reason: 'page is zero'})
    expect(report.badCount).toBe(4096 - 8)
    await hv.unpause(domid)
    await sleep(100)
    expect(await hv.runtime(domid)).toMatchObject({step: 0, writes: 0})
    expect(stateLetters((await hv.info(domid)).state)).toBe('-b----')
    await expectError(hv.runSteps(domid, 10), 'bad-state', /no vCPU context/)
  })

  it('outlives the process that created it', async () => {
    const hv = newHost()
    const script = `
      const {createHypervisor} = await import(${JSON.stringify(DIST_INDEX)})
      const {createDomainBuilt} = await import(${JSON.stringify(DIST_INDEX.replace('/backends/', '/libxl/'))})
      const hv = createHypervisor({backend: 'sim', root: ${JSON.stringify(hv.root)}})
      const id = await createDomainBuilt(hv, {name: 'orphan', type: 'pvh', maxMemKb: 16384, vcpus: 1, config: {},
        workload: {dirtyRate: 500, workingSetMiB: 4, seed: 3, nondeterminism: 0, packetRate: 0}}, {paused: false})
      console.log(id)`
    const r = await execa(process.execPath, ['--input-type=module', '-e', script])
    const domid = Number(r.stdout.trim())
    const vm = (await listDomains(hv)).find((d) => d.domid === domid)
    expect(vm).toMatchObject({name: 'orphan', type: 'pvh'})
    await waitFor('the orphan to run', async () => (await hv.runtime(domid)).writes > 5)
    await destroyDomain(hv, domid)
    expect(leftovers(hv.root, hv.hostId)).toEqual(NOTHING)
  })
})

describe('ids and names', () => {
  it('hands out domids from 1 up without reusing them, keeps names unique, resolves qualifiers as xl', async () => {
    const hv = newHost()
    const a = await createDomainBuilt(hv, spec('alpha'), {paused: true})
    const b = await createDomainBuilt(hv, spec('beta'), {paused: true})
    expect([a, b]).toEqual([1, 2])

    const taken = await expectError(createDomainBuilt(hv, spec('alpha'), {paused: true}), 'name-in-use', 'Domain with name "alpha" already exists.')
    expect(taken).toMatchObject({rc: -6, domainName: 'alpha'})
    await expectError(createDomainBuilt(hv, spec('Domain-0'), {paused: true}), 'name-in-use')
    await expectError(renameDomain(hv, b, 'alpha'), 'name-in-use', 'Domain with name "alpha" already exists.')
    await renameDomain(hv, b, 'beta') // its own name: fine
    await renameDomain(hv, b, 'gamma')
    expect((await domainInfo(hv, b)).name).toBe('gamma')

    expect(await resolveDomain(hv, 'gamma')).toBe(b)
    expect(await resolveDomain(hv, String(a))).toBe(a)
    expect(await resolveDomain(hv, '0')).toBe(0)
    expect(await resolveDomain(hv, 'Domain-0')).toBe(0)
    const bad = await expectError(resolveDomain(hv, 'nosuch'), 'no-such-domain', 'nosuch is an invalid domain identifier (rc=-6)')
    expect(bad).toMatchObject({rc: -6, qualifier: 'nosuch'})
    await expectError(resolveDomain(hv, '77'), 'no-such-domain', 'domain 77 does not exist')
    await expectError(hv.info(77), 'no-such-domain', 'domain 77 does not exist')
    await expectError(hv.pause(77), 'no-such-domain')
    await expectError(destroyDomain(hv, 0), 'not-supported', /domain 0 cannot be destroyed/)
    expect((await domainInfo(hv, 0)).name).toBe('Domain-0')

    await destroyDomain(hv, a)
    const c = await createDomainBuilt(hv, spec('alpha'), {paused: true})
    expect(c).toBe(3) // the freed id 1 is not reused at once
    expect((await listDomains(hv)).map((d) => [d.domid, d.name])).toEqual([
      [0, 'Domain-0'],
      [2, 'gamma'],
      [3, 'alpha'],
    ])
  })

  it('lets exactly one of several concurrent creates with one name win', async () => {
    const hv = newHost()
    const results = await Promise.allSettled([1, 2, 3, 4].map(() => createDomainBuilt(hv, spec('same', 16), {paused: true})))
    const won = results.filter((r) => r.status === 'fulfilled')
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    expect(won).toHaveLength(1)
    expect(lost.map((r) => (r.reason as HypervisorError).code)).toEqual(['name-in-use', 'name-in-use', 'name-in-use'])
    expect((await listDomains(hv)).filter((d) => d.name === 'same')).toHaveLength(1)
  })
})

describe('hosts', () => {
  it('two state folders are two hosts: same names, own domids, own memory files', async () => {
    const h1 = newHost('a')
    const h2 = newHost('b')
    expect(h1.hostId).not.toBe(h2.hostId)
    const d1 = await createDomainBuilt(h1, spec('vm', 16, {}), {paused: false})
    const d2 = await createDomainBuilt(h2, spec('vm', 16, {}), {paused: false})
    expect(d1).toBe(1)
    expect(d2).toBe(1)
    expect(h1.memoryPath(d1)).not.toBe(h2.memoryPath(d2))
    expect((await listDomains(h1)).map((d) => d.name)).toEqual(['Domain-0', 'vm'])
    await destroyDomain(h1, d1)
    expect((await listDomains(h2)).map((d) => d.name)).toEqual(['Domain-0', 'vm'])
    expect((await h2.runtime(d2)).paused).toBe(false)
    // The same folder opened again is the same host.
    expect(new SimHypervisor(h2.root).hostId).toBe(h2.hostId)
  })

  it('refuses a state folder whose control socket paths would not fit in sun_path', () => {
    const long = path.join('/tmp', 'x'.repeat(90))
    roots.push(long)
    let err: unknown
    try {
      createHypervisor({backend: 'sim', root: long})
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(HypervisorError)
    expect((err as HypervisorError).code).toBe('bad-request')
    expect((err as HypervisorError).message).toMatch(/too long.*107.*--root/)
    expect(fs.existsSync(long)).toBe(false)
  })

  it('chooses the back end and the state folder from flags, environment and defaults', () => {
    expect(fs.existsSync('/dev/xen/privcmd')).toBe(false)
    expect(resolveBackend(undefined, {})).toBe('sim')
    expect(resolveBackend(undefined, {XL_TS_BACKEND: 'xen'})).toBe('xen')
    expect(resolveBackend('sim', {XL_TS_BACKEND: 'xen'})).toBe('sim')
    expect(() => resolveBackend('kvm', {})).toThrow(/unknown hypervisor back end "kvm"/)
    let err: unknown
    try {
      createHypervisor({backend: 'xen'})
    } catch (e) {
      err = e
    }
    expect(err).toMatchObject({code: 'not-supported'})
    expect((err as Error).message).toMatch(/xen back end is not supported yet/)

    expect(resolveRoot('/a/b', {XL_TS_ROOT: '/c'})).toBe('/a/b')
    expect(resolveRoot(undefined, {XL_TS_ROOT: '/c'})).toBe('/c')
    expect(resolveRoot(undefined, {XL_TS_ROOT: 'rel'})).toBe(path.resolve('rel'))
    expect(resolveRoot(undefined, {})).toBe(process.getuid?.() === 0 ? '/var/lib/xl-ts' : expect.stringMatching(/xl-ts$/))
  })
})

describe('platform state', () => {
  it('keeps HVM params, TSC info, CPU policy and the NIC counters per domain', async () => {
    const hv = newHost()
    const domid = await createDomainBuilt(hv, spec('p', 16, {packetRate: 200}), {paused: false})
    const pages = 4096
    const params = new Map((await hv.getHvmParams(domid)).map((p) => [p.index, p.value]))
    for (const idx of [1, 5, 6, 17]) {
      const pfn = params.get(idx)!
      expect(pfn).toBeGreaterThanOrEqual(BigInt(pages - 8))
      expect(pfn).toBeLessThan(BigInt(pages))
    }
    await hv.setHvmParams(domid, [{index: 1, value: 123n}, {index: 38, value: (1n << 63n) + 5n}])
    const after = new Map((await hv.getHvmParams(domid)).map((p) => [p.index, p.value]))
    expect(after.get(1)).toBe(123n)
    expect(after.get(38)).toBe((1n << 63n) + 5n)
    await expectError(hv.setHvmParams(domid, [{index: 1, value: -1n}]), 'bad-request')

    const tsc = await hv.getTscInfo(domid)
    expect(tsc).toMatchObject({mode: 0, khz: 2_400_000, incarnation: 0})
    await hv.setTscInfo(domid, {mode: 2, khz: 3_000_000, nsec: 10n ** 12n, incarnation: 4})
    const tsc2 = await hv.getTscInfo(domid)
    expect(tsc2).toMatchObject({mode: 2, khz: 3_000_000, incarnation: 4})
    expect(tsc2.nsec).toBeGreaterThanOrEqual(10n ** 12n)

    const policy = await hv.getCpuPolicy(domid)
    expect(policy.cpuid.find((l) => l.leaf === 0)).toMatchObject({b: 0x756e6547})
    expect(policy.msrs.length).toBeGreaterThan(0)
    await hv.setCpuPolicy(domid, {cpuid: [{leaf: 1, subleaf: 0xffffffff, a: 1, b: 2, c: 3, d: 4}], msrs: [{index: 0xce, value: 1n << 40n}]})
    expect(await hv.getCpuPolicy(domid)).toEqual({cpuid: [{leaf: 1, subleaf: 0xffffffff, a: 1, b: 2, c: 3, d: 4}], msrs: [{index: 0xce, value: 1n << 40n}]})

    // The guest NIC's counters are guest state: in the vCPU context (SIM_NIC), not a device model's.
    await waitFor('frames', async () => (await hv.runtime(domid)).frames > 3)
    await hv.pause(domid)
    const withNic = await hv.getVcpuContext(domid)
    const nic = withNic.indexOf(Buffer.from([0x53, 0x4e, 0, 0, 16, 0, 0, 0]))
    expect(nic, 'a SIM_NIC record').toBeGreaterThan(0)
    const frames = (await hv.runtime(domid)).frames
    // Each frame the guest sent is at least Ethernet + IPv4 + UDP headers and 32 bytes of payload (frame.ts).
    expect(Number(withNic.readBigUInt64LE(nic + 8)), 'bytes sent').toBeGreaterThanOrEqual(frames * (14 + 20 + 8 + 32))
    expect(Number(withNic.readBigUInt64LE(nic + 16)), 'frames received').toBe(0)

    const ctx = await hv.getVcpuContext(domid)
    expect(ctx.readUInt16LE(0)).toBe(1) // HVM save HEADER first
    expect(ctx.readUInt32LE(8)).toBe(0x54381286)
    await hv.setVcpuContext(domid, ctx)
    const broken = Buffer.from(ctx)
    broken.writeUInt32LE(0, 8)
    await expectError(hv.setVcpuContext(domid, broken), 'bad-request', /HEADER magic/)
  })

  it('keeps log-dirty state rules: enable once, peek and clean only while enabled', async () => {
    const hv = newHost()
    const domid = await createDomainBuilt(hv, spec('ld', 16, {dirtyRate: 2000, workingSetMiB: 1}), {paused: true})
    const ld = hv.logDirty(domid)
    await expectError(ld.peek(), 'bad-state', /not enabled/)
    await ld.enable()
    await expectError(ld.enable(), 'bad-state', /already enabled/)
    expect((await ld.clean()).isEmpty()).toBe(true)
    await hv.runSteps(domid, 500)
    const peeked = await ld.peek()
    expect(peeked.count()).toBeGreaterThan(0)
    expect(peeked.toArray().every((p) => p < 256)).toBe(true)
    expect((await ld.clean()).toArray()).toEqual(peeked.toArray())
    expect((await ld.peek()).isEmpty()).toBe(true)
    await ld.disable()
    await hv.runSteps(domid, 500)
    await expectError(ld.clean(), 'bad-state')
  })
})

describe('guest memory', () => {
  it('reads and writes pages by pfn list and catches every damaged page', async () => {
    const hv = newHost()
    const domid = await createDomainBuilt(hv, spec('mem', 16, {dirtyRate: 4000, workingSetMiB: 2}), {paused: false})
    await waitFor('writes', async () => (await hv.runtime(domid)).writes > 200)
    await hv.pause(domid)
    const mem = await hv.openMemory(domid)
    try {
      expect(mem.pages).toBe(4096)
      const pfns = [7, 8, 9, 100, 3, 4, 4095]
      const buf = Buffer.alloc(pfns.length * 4096)
      await mem.readPages(pfns, buf)
      const file = fs.readFileSync(hv.memoryPath(domid))
      pfns.forEach((pfn, i) => expect(buf.subarray(i * 4096, (i + 1) * 4096).equals(file.subarray(pfn * 4096, (pfn + 1) * 4096))).toBe(true))
      expect(buf.readUInt32LE(4)).toBe(7) // the page header names its pfn

      // Damage pfn 9 (torn: a new header over the old body) and 100 (a swapped page).
      const page9 = Buffer.from(buf.subarray(2 * 4096, 3 * 4096))
      page9.writeUInt32LE(page9.readUInt32LE(8) + 1, 8)
      await mem.writePages([9, 100], Buffer.concat([page9, buf.subarray(4 * 4096, 5 * 4096)]))
      const report = await hv.verifyIntegrity(domid)
      expect(report.badCount).toBe(2)
      expect(report.bad.map((b) => b.pfn)).toEqual([9, 100])
      expect(report.bad[0]!.reason).toMatch(/torn/)
      expect(report.bad[1]!.reason).toMatch(/header names pfn 3/)
      await mem.writePages([9, 100], Buffer.concat([buf.subarray(2 * 4096, 3 * 4096), buf.subarray(3 * 4096, 4 * 4096)]))
      expect((await hv.verifyIntegrity(domid)).ok).toBe(true)

      await expectError(mem.readPages([4096], Buffer.alloc(4096)), 'bad-request', /pfn 4096 is outside/)
      await expectError(mem.readPages([1, 2], Buffer.alloc(4096)), 'bad-request', /cannot hold 2 pages/)
    } finally {
      await mem.close()
    }
  })
})
