/**
 * Names and stored configs as libxl keeps them, above the port: in the host's store and its
 * userdata folder. What an operator would notice: one name, one domain, also when two creates race
 * from two processes; a dead domain's name is free again; a rename shows in the config that save
 * and migrate send; destroy leaves nothing of libxl's behind.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {execa} from 'execa'
import {afterAll, afterEach, beforeAll, expect, test} from 'vitest'

import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {HypervisorError} from '../src/toolstack/hypervisor/index.js'
import {
  createDomainBuilt,
  destroyDomain,
  domainName,
  listDomains,
  renameDomain,
  storedConfig,
  type LibxlDomainSpec,
} from '../src/toolstack/libxl/index.js'
import {killHard} from '../src/toolstack/process/index.js'
import {ensureBuilt} from './support/build.js'
import {DIST_INDEX, tempRoot, waitFor, wipeRoot} from './support/sim-host.js'

const roots: string[] = []
const DIST_LIBXL = DIST_INDEX.replace('/backends/', '/libxl/')

beforeAll(() => ensureBuilt())
afterEach(async () => {
  for (const r of roots.splice(0)) await wipeRoot(r)
})
afterAll(async () => {
  for (const r of roots.splice(0)) await wipeRoot(r)
})

function host(): SimHypervisor {
  const root = tempRoot('names')
  roots.push(root)
  return new SimHypervisor(root)
}

const spec = (name: string): LibxlDomainSpec => ({name, type: 'pvh', maxMemKb: 16 * 1024, vcpus: 1, config: {c_info: {name, type: 'pvh'}, b_info: {}}})

test('two processes creating one name at once: exactly one domain has it, the other create fails and leaves nothing', async () => {
  const hv = host()
  const script = `
    const {createHypervisor} = await import(${JSON.stringify(DIST_INDEX)})
    const {createDomainBuilt} = await import(${JSON.stringify(DIST_LIBXL)})
    const hv = createHypervisor({backend: 'sim', root: ${JSON.stringify(hv.root)}})
    try {
      console.log('made ' + (await createDomainBuilt(hv, ${JSON.stringify(spec('twin'))}, {paused: true})))
    } catch (e) {
      console.log('refused ' + e.code)
    }
    hv.close()`
  const runs = await Promise.all([0, 1, 2].map(() => execa(process.execPath, ['--input-type=module', '-e', script])))
  const said = runs.map((r) => r.stdout.trim()).sort()
  expect(said.filter((s) => s.startsWith('made'))).toHaveLength(1)
  expect(said.filter((s) => s === 'refused name-in-use')).toHaveLength(2)
  const listed = await listDomains(hv)
  expect(listed.map((d) => d.name)).toEqual(['Domain-0', 'twin'])
  for (const d of listed.filter((x) => x.domid !== 0)) await destroyDomain(hv, d.domid)
  hv.close()
})

test("a dead domain's name is free again and it is not listed, though its store entries are still there", async () => {
  const hv = host()
  const dead = await createDomainBuilt(hv, spec('phoenix'), {paused: true})
  const rec = hv.record(dead)
  killHard(rec.pid, rec.pidStart)
  expect(await hv.store.read(`/local/domain/${dead}/name`)).toBe('phoenix')
  const again = await createDomainBuilt(hv, spec('phoenix'), {paused: true})
  expect(again).not.toBe(dead)
  expect((await listDomains(hv)).map((d) => [d.domid, d.name])).toEqual([
    [0, 'Domain-0'],
    [again, 'phoenix'],
  ])
  await destroyDomain(hv, again)
  hv.close()
})

test('a rename shows in the stored config; a conditional rename leaves a name someone else changed', async () => {
  const hv = host()
  const domid = await createDomainBuilt(hv, spec('vm--incoming'), {paused: true})
  const other = await createDomainBuilt(hv, spec('other'), {paused: true})
  await renameDomain(hv, domid, 'vm')
  const stored = await storedConfig(hv, domid)
  expect((stored!.c_info as {name: string}).name).toBe('vm')
  expect(stored?.b_info).toEqual({})

  const refused = await renameDomain(hv, domid, 'other').catch((e: unknown) => e)
  expect(refused).toBeInstanceOf(HypervisorError)
  expect(refused).toMatchObject({code: 'name-in-use', message: 'Domain with name "other" already exists.'})
  expect(await renameDomain(hv, domid, 'back', {from: 'vm--migratedaway'})).toBe(false)
  expect(await domainName(hv, domid)).toBe('vm')
  expect(await renameDomain(hv, domid, 'back', {from: 'vm'})).toBe(true)
  expect(await domainName(hv, domid)).toBe('back')
  await destroyDomain(hv, domid)
  await destroyDomain(hv, other)
  hv.close()
})

test("destroy removes the domain's store entries and its userdata file", async () => {
  const hv = host()
  const domid = await createDomainBuilt(hv, spec('gone'), {paused: true})
  const {uuid} = await hv.info(domid)
  const userdata = path.join(hv.paths.lib, `userdata-d.${domid}.${uuid}.libxl-json`)
  expect(JSON.parse(fs.readFileSync(userdata, 'utf8'))).toEqual(spec('gone').config)
  await destroyDomain(hv, domid)
  expect(fs.existsSync(userdata)).toBe(false)
  expect(await hv.store.directory('/local/domain')).toEqual(['0'])
  await waitFor('the domain to be gone', async () => (await listDomains(hv)).length === 1)
  hv.close()
})
