/**
 * The simulated host's xenstore: xenstore's rules (paths, value sizes, parents, recursive remove),
 * transactions that no concurrent writer can tear, from this process and from others, and watches.
 */
import * as fs from 'node:fs'
import {execa} from 'execa'
import {afterAll, describe, expect, it} from 'vitest'

import {HypervisorError, STORE_VALUE_MAX} from '../src/toolstack/hypervisor/index.js'
import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {tempRoot, waitFor} from './support/sim-host.js'

const roots: string[] = []
function host(): SimHypervisor {
  const root = tempRoot('store')
  roots.push(root)
  return new SimHypervisor(root)
}

afterAll(() => {
  for (const r of roots) fs.rmSync(r, {recursive: true, force: true})
})

describe('sim xenstore', () => {
  it('starts with the control domain, as Xen does', async () => {
    const {store} = host()
    expect(await store.read('/local/domain/0/name')).toBe('Domain-0')
    expect(await store.directory('/local/domain')).toEqual(['0'])
  })

  it('keeps xenstore rules: parents made on write, remove takes the subtree, bad paths and big values refused', async () => {
    const {store} = host()
    await store.write('/local/domain/7/device/vif/0/state', '4')
    expect(await store.read('/local/domain/7/device')).toBe('')
    expect(await store.directory('/local/domain/7/device/vif')).toEqual(['0'])
    await store.remove('/local/domain/7')
    expect(await store.read('/local/domain/7/device/vif/0/state')).toBeUndefined()
    expect(await store.directory('/local/domain')).toEqual(['0'])
    for (const bad of ['local/x', '/a//b', '/a/', '/a b', '/a\nb']) {
      await expect(store.write(bad, 'v')).rejects.toBeInstanceOf(HypervisorError)
    }
    await expect(store.write('/big', 'x'.repeat(STORE_VALUE_MAX + 1))).rejects.toThrow(/at most 4096 bytes/)
    expect(await store.read('/big')).toBeUndefined()
  })

  it('a failed transaction leaves nothing; concurrent transactions from three processes lose no update', async () => {
    const h = host()
    await expect(
      h.store.transaction(async (tx) => {
        await tx.write('/half', 'written')
        throw new Error('changed my mind')
      }),
    ).rejects.toThrow('changed my mind')
    expect(await h.store.read('/half')).toBeUndefined()

    const bump = async () =>
      h.store.transaction(async (tx) => {
        const n = Number((await tx.read('/counter')) ?? '0')
        await new Promise((r) => setTimeout(r, 1))
        await tx.write('/counter', String(n + 1))
      })
    const script = `
      import {SimHypervisor} from ${JSON.stringify(new URL('../dist/toolstack/backends/index.js', import.meta.url).pathname)}
      const h = new SimHypervisor(${JSON.stringify(h.root)})
      for (let i = 0; i < 40; i++) await h.store.transaction(async (tx) => tx.write('/counter', String(Number((await tx.read('/counter')) ?? '0') + 1)))
    `
    const others = [0, 1].map(() => execa(process.execPath, ['--input-type=module', '-e', script]))
    await Promise.all(Array.from({length: 40}, bump))
    await Promise.all(others)
    expect(await h.store.read('/counter')).toBe('120')
  })

  it('a watch fires at once and on each change below its node, not for other nodes', async () => {
    const {store} = host()
    let fired = 0
    const sub = await store.watch('/local/domain/3', () => fired++)
    try {
      await waitFor('the initial event', () => fired === 1)
      await store.write('/local/domain/4/name', 'other')
      await store.write('/local/domain/3/name', 'vm')
      await waitFor('the change event', () => fired === 2)
      await new Promise((r) => setTimeout(r, 50))
      expect(fired).toBe(2)
    } finally {
      await sub.close()
    }
  })
})
