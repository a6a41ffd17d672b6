/**
 * createEarly: the domid of a domain being built, handed out before the domain process is ready,
 * so the restore helper starts while the domain does. Another instance on the same host (as the
 * helper is, in its own process) waits in info() until the domain is built; a domain that cannot be
 * built rejects `built`, leaves nothing, and a waiter hears no-such-domain instead of hanging. Through
 * the CLI, a restore into a domain that cannot be built reports the build's failure, exits 1 and
 * leaves no domain, helper or memory file behind.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {afterEach, beforeAll, describe, expect, it} from 'vitest'

import {HypervisorError} from '../src/toolstack/hypervisor/index.js'
import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {lines, xl} from './support/cli.js'
import {ensureBuilt, leftovers, NOTHING, tempRoot, wipeRoot} from './support/sim-host.js'
import {createDomain, domainName, destroyDomain, type LibxlDomainSpec, listDomains} from '../src/toolstack/libxl/index.js'

const roots: string[] = []
const hosts: SimHypervisor[] = []
const obstacles: string[] = []

beforeAll(ensureBuilt, 120_000)
afterEach(async () => {
  for (const h of hosts.splice(0)) h.close()
  for (const o of obstacles.splice(0)) fs.rmSync(o, {recursive: true, force: true})
  for (const r of roots.splice(0)) await wipeRoot(r)
})

function host(): {root: string; hv: SimHypervisor; other: SimHypervisor} {
  const root = tempRoot('ce')
  roots.push(root)
  const hv = new SimHypervisor(root)
  const other = new SimHypervisor(root)
  hosts.push(hv, other)
  return {root, hv, other}
}

const spec = (name: string): LibxlDomainSpec => ({name, type: 'hvm', maxMemKb: 32 * 1024, vcpus: 1, config: {c_info: {name, type: 'hvm'}}})

/**
 * Makes the first domain of a host unbuildable: its memory file's name is a link into a folder that
 * does not exist, so the domain process cannot create it (and the link goes with the failed build).
 */
function blockFirstDomain(hv: SimHypervisor): void {
  const memPath = `/dev/shm/xl-ts-${hv.hostId}-1`
  fs.symlinkSync(`/nonexistent-xl-ts-${process.pid}/memory`, memPath)
  obstacles.push(memPath)
}

describe('createEarly', () => {
  it('hands out the domid before the domain is built; info elsewhere waits for the build', async () => {
    const {hv, other} = host()
    const t0 = performance.now()
    const {domid, built} = await createDomain(hv, spec('early'), {paused: true, forRestore: true})
    const early = performance.now() - t0
    let builtAt = 0
    void built.then(() => (builtAt = performance.now() - t0))
    const info = await other.info(domid)
    expect(await domainName(other, domid)).toBe('early')
    expect(info.state.paused).toBe(true)
    await built
    // The domain process is a Node start (tens of ms); the domid came before it.
    expect(builtAt).toBeGreaterThan(early)
    await destroyDomain(hv, domid)
  })

  it('a domain that cannot be built: built rejects, a waiter hears no-such-domain, nothing is left', async () => {
    const {root, hv, other} = host()
    blockFirstDomain(hv)
    const {domid, built} = await createDomain(hv, spec('doomed'), {paused: true, forRestore: true})
    expect(domid).toBe(1)
    const waiter = other.info(domid).then(
      () => 'answered',
      (e: unknown) => e,
    )
    await expect(built).rejects.toThrow(/^domain 1 failed to start \(exit 1\): cannot create its memory \S+: ENOENT$/)
    const seen = await waiter
    expect(seen).toBeInstanceOf(HypervisorError)
    expect((seen as HypervisorError).code).toBe('no-such-domain')
    expect(leftovers(root)).toEqual(NOTHING)
    expect(await listDomains(hv)).toHaveLength(1) // Domain-0 only
  })
})

describe('xl-ts restore into a domain that cannot be built', () => {
  it("reports the build's failure, exits 1, and leaves no domain, helper or file", async () => {
    const a = host()
    const b = host()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-ts-ce-'))
    obstacles.push(dir)
    const cfg = path.join(dir, 'vm.cfg')
    fs.writeFileSync(cfg, 'name="vm"\ntype="hvm"\nmemory=32\n')
    const file = path.join(dir, 'vm.save')
    expect((await xl(['create', '-q', cfg], {root: a.root})).exitCode).toBe(0)
    expect((await xl(['save', 'vm', file], {root: a.root})).exitCode).toBe(0)
    blockFirstDomain(b.hv)
    const r = await xl(['restore', file], {root: b.root})
    expect(r.exitCode).toBe(1)
    expect(r.stderr).not.toMatch(/^\s+at /m)
    expect(lines(r.stderr).at(-1)).toMatch(/^xl-ts: restore: domain 1 failed to start \(exit 1\): cannot create its memory \/dev\/shm\/xl-ts-[0-9a-f]{16}-1: ENOENT$/)
    expect(r.stderr).not.toMatch(/helper|libxc/)
    expect(leftovers(b.root)).toEqual(NOTHING)
    expect((await xl(['list'], {root: b.root})).stdout).not.toMatch(/\bvm\b/)
  })
})
