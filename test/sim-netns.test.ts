/**
 * A network namespace as the host boundary: a simulated host operated through `ip netns exec`
 * (each operation a node process in the namespace), its domain process living in the namespace,
 * next to a second host outside it with a domain of the same name.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {LibxlDomainSpec, NamedDomainInfo as DomainInfo} from '../src/toolstack/libxl/index.js'
import {domainProcesses, ensureBuilt, leftovers, NOTHING, sleep, stateLetters, tempRoot, wipeRoot} from './support/sim-host.js'
import {addNetns, drive, netnsOf, writeDriver, type Netns} from './support/sim-netns.js'

let ns: Netns | undefined
let driver: string
let inside: string
let outside: string

beforeAll(async () => {
  await ensureBuilt()
  driver = writeDriver()
  inside = tempRoot('ns')
  outside = tempRoot('out')
  ns = await addNetns()
})

afterAll(async () => {
  await ns?.remove()
  if (inside) await wipeRoot(inside)
  if (outside) await wipeRoot(outside)
  if (driver) fs.rmSync(path.dirname(driver), {recursive: true, force: true})
})

const spec: LibxlDomainSpec = {
  name: 'guest',
  type: 'hvm',
  maxMemKb: 64 * 1024,
  vcpus: 1,
  config: {c_info: {name: 'guest'}},
  workload: {dirtyRate: 3000, workingSetMiB: 16, seed: 5, nondeterminism: 0, packetRate: 20},
}

async function ok<T>(p: Promise<{ok: boolean; out?: T; message?: string}>): Promise<T> {
  const r = await p
  if (!r.ok) throw new Error(r.message)
  return r.out as T
}

describe('a host in a network namespace', () => {
  it('creates, lists, pauses, checksums and destroys a domain that lives in the namespace', async () => {
    const netns = ns!
    const domid = await ok<number>(drive(driver, inside, 'create', [spec, {paused: false}], netns))
    const rec = await ok<{pid: number; memPath: string}>(drive(driver, inside, 'record', [domid], netns))
    // The domain process outlived the `ip netns exec node ...` that made it, and lives in the namespace.
    expect(await netnsOf(rec.pid)).toBe(netns.name)
    expect(domainProcesses(inside)).toEqual([rec.pid])

    // A second host outside the namespace, same domain name.
    const outId = await ok<number>(drive(driver, outside, 'create', [spec, {paused: false}]))
    const outRec = await ok<{pid: number; memPath: string}>(drive(driver, outside, 'record', [outId]))
    expect(await netnsOf(outRec.pid)).toBe('')
    expect(outRec.memPath).not.toBe(rec.memPath)

    const listed = await ok<DomainInfo[]>(drive(driver, inside, 'list', [], netns))
    expect(listed.map((d) => [d.domid, d.name, stateLetters(d.state)])).toEqual([
      [0, 'Domain-0', 'r-----'],
      [domid, 'guest', 'r-----'],
    ])
    await ok(drive(driver, inside, 'pause', [domid], netns))
    const info = await ok<DomainInfo>(drive(driver, inside, 'info', [domid], netns))
    expect(stateLetters(info.state)).toBe('--p---')
    const c1 = await ok<string>(drive(driver, inside, 'checksum', [domid], netns))
    await sleep(100)
    expect(await ok<string>(drive(driver, inside, 'checksum', [domid], netns))).toBe(c1)
    await ok(drive(driver, inside, 'unpause', [domid], netns))
    await sleep(100)
    expect(await ok<string>(drive(driver, inside, 'checksum', [domid], netns))).not.toBe(c1)

    // The state folder is the host, whatever namespace looks at it: the same domain from outside.
    const fromOutside = await ok<DomainInfo[]>(drive(driver, inside, 'list', []))
    expect(fromOutside.map((d) => d.name)).toEqual(['Domain-0', 'guest'])

    const renamed = await drive(driver, inside, 'rename', [domid, 'guest'], netns)
    expect(renamed.ok).toBe(true)
    await ok(drive(driver, inside, 'destroy', [domid], netns))
    expect(await ok<DomainInfo[]>(drive(driver, inside, 'list', [], netns))).toHaveLength(1)
    const hostId = await ok<string>(drive(driver, inside, 'hostid', [], netns))
    expect(leftovers(inside, hostId)).toEqual(NOTHING)

    // The outside host's domain is untouched.
    const outList = await ok<DomainInfo[]>(drive(driver, outside, 'list', []))
    expect(outList.map((d) => [d.name, stateLetters(d.state)])).toEqual([
      ['Domain-0', 'r-----'],
      ['guest', 'r-----'],
    ])
    await ok(drive(driver, outside, 'destroy', [outId]))
    const missing = await drive(driver, outside, 'destroy', [outId])
    expect(missing).toMatchObject({ok: false, code: 'no-such-domain'})
    expect(leftovers(outside)).toEqual(NOTHING)
  })
})
