/** A renamed domain's stored config carries its new name, as libxl_retrieve_domain_configuration does. */
import {afterEach, expect, test} from 'vitest'

import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {tempRoot, wipeRoot} from './support/sim-host.js'
import {createDomainBuilt, destroyDomain, renameDomain, storedConfig} from '../src/toolstack/libxl/index.js'

const roots: string[] = []
afterEach(async () => {
  for (const r of roots.splice(0)) await wipeRoot(r)
})

test('rename updates the name in the stored config (save and migrate send it)', async () => {
  const root = tempRoot('rn')
  roots.push(root)
  const hv = new SimHypervisor(root)
  const domid = await createDomainBuilt(hv, 
    {name: 'vm--incoming', type: 'hvm', maxMemKb: 16 * 1024, vcpus: 1, config: {c_info: {name: 'vm--incoming', type: 'hvm'}, b_info: {}}},
    {paused: true},
  )
  await renameDomain(hv, domid, 'vm')
  const stored = await storedConfig(hv, domid)
  expect((stored!.c_info as {name: string}).name).toBe('vm')
  expect(stored?.b_info).toEqual({})
  await destroyDomain(hv, domid)
})
