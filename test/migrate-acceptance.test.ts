/**
 * Live migration end to end, as an operator runs it: `xl-ts migrate` between two simulated hosts
 * (two state folders) with the receiver reached by `-s ''`, and between two network namespaces.
 * After each: exactly one copy, on the target, under its name, running; every page consistent and
 * memory + vCPU state equal to a twin guest run for the same number of steps (QEMU's migration
 * test checks pages the same way); nothing left behind (processes, FIFOs, temp dirs, domains).
 * Then ten migrations back and forth (osstest's localmigrate x10), and to the same host.
 */
import * as fs from 'node:fs'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {resolveDomain} from '../src/toolstack/libxl/index.js'
import {addNetns, netnsOf, type Netns} from './support/sim-netns.js'
import {
  markedEnv,
  BIN_ARGS,
  checkContinuity,
  cleanupHost,
  createGuest,
  ensureBuilt,
  guests,
  isRunning,
  migrate,
  newHost,
  receiverCommand,
  scratchDir,
  sim,
  waitNoMarked,
  type GuestSpec,
} from './support/migrate.js'

const hosts: string[] = []
const dirs: string[] = []
let scratch: string

beforeAll(async () => {
  await ensureBuilt()
  scratch = newHost('twin')
  hosts.push(scratch)
})

afterAll(async () => {
  for (const h of hosts.splice(0)) await cleanupHost(h)
  for (const d of dirs.splice(0)) fs.rmSync(d, {recursive: true, force: true})
})

function host(tag: string): string {
  const h = newHost(tag)
  hosts.push(h)
  return h
}

/** Per-run marker and TMPDIR: what the leftover checks look for. */
function runEnv(tag: string): {env: Record<string, string>; marker: string; tmp: string} {
  const tmp = scratchDir(tag)
  dirs.push(tmp)
  return markedEnv(tmp)
}

/** Nothing left: no marked process, nothing in the sender's TMPDIR but the hook files. */
async function nothingLeft(marker: string, tmp: string): Promise<void> {
  expect(await waitNoMarked(marker)).toEqual([])
  expect(fs.readdirSync(tmp).filter((f) => !f.endsWith('.json'))).toEqual([])
}

async function exactlyOneOn(target: string, source: string, name: string): Promise<void> {
  const there = await guests(target)
  const here = await guests(source)
  expect(here.map((d) => d.name), 'the source keeps nothing').toEqual([])
  expect(there.map((d) => d.name)).toEqual([name])
  expect(isRunning(there[0]!), `state ${JSON.stringify(there[0]!.state)}`).toBe(true)
}

const XL_SENDER_LINES = [
  'Saving to migration stream new xl format (info 0x3/0x0/',
  'migration sender: Target has acknowledged transfer.',
  'migration sender: Giving target permission to start.',
  'migration sender: Target reports successful startup.',
  'Migration successful.',
]
const XL_RECEIVER_LINES = [
  'migration target: Ready to receive domain.',
  'Loading new save file <incoming migration stream> (new xl fmt info 0x3/0x0/',
  ' Savefile contains xl domain config in JSON format',
  'Parsing config from <saved>',
  'migration target: Transfer complete, requesting permission to start domain.',
  'migration target: Got permission, starting domain.',
  'migration target: Domain started successsfully.',
]

/** Each expected line appears, in this order. */
function inOrder(stderr: string, expected: readonly string[]): void {
  const lines = stderr.split('\n')
  let at = 0
  for (const e of expected) {
    const i = lines.findIndex((l, k) => k >= at && l.startsWith(e))
    expect(i, `"${e}" after line ${at} in:\n${stderr}`).toBeGreaterThanOrEqual(0)
    at = i + 1
  }
}

describe('xl-ts migrate', () => {
  it('moves a 256 MiB guest with a running workload between two hosts (-s "")', async () => {
    const a = host('a')
    const b = host('b')
    const g: GuestSpec = {name: 'big', memMiB: 256, dirtyRate: 4000, workingSetMiB: 64, seed: 42}
    await createGuest(a, g)
    await new Promise((r) => setTimeout(r, 300))
    const {env, marker, tmp} = runEnv('acc')
    const r = await migrate(a, ['-s', '', 'big', receiverCommand(b)], {env})
    expect(r.exitCode, r.stderr).toBe(0)
    inOrder(r.stderr, XL_SENDER_LINES)
    inOrder(r.stderr, XL_RECEIVER_LINES)
    expect(r.stderr).toMatch(/migration sender: precopy iteration 1: 65536 pages/)
    expect(r.stdout).toBe('')
    await exactlyOneOn(b, a, 'big')
    await checkContinuity(b, 'big', g, scratch)
    await nothingLeft(marker, tmp)
  })

  it('moves a guest between two network namespaces', async () => {
    const a = host('na')
    const b = host('nb')
    const nsA: Netns = await addNetns()
    const nsB: Netns = await addNetns()
    try {
      const g: GuestSpec = {name: 'nsvm', memMiB: 64, dirtyRate: 3000, workingSetMiB: 16, seed: 9}
      const inA = (args: string[]) => nsA.exec([...BIN_ARGS, '--root', a, ...args])
      const made = await inA(['create', '-q', writeCfg(a, g)])
      expect(made.exitCode, made.stderr).toBe(0)
      const src = sim(a)
      const srcPid = src.record(await resolveDomain(src, 'nsvm')).pid
      src.close()
      expect(await netnsOf(srcPid)).toBe(nsA.name)

      const {env, marker, tmp} = runEnv('ns')
      const r = await nsA.exec(['env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'XL_TS_BACKEND=sim', ...BIN_ARGS, '--root', a, 'migrate', '-s', '', 'nsvm', receiverCommand(b, {netns: nsB.name})])
      expect(r.exitCode, r.stderr).toBe(0)
      inOrder(r.stderr, XL_SENDER_LINES)
      await exactlyOneOn(b, a, 'nsvm')
      const dst = sim(b)
      const dstPid = dst.record(await resolveDomain(dst, 'nsvm')).pid
      dst.close()
      expect(await netnsOf(dstPid)).toBe(nsB.name)
      await checkContinuity(b, 'nsvm', g, scratch)
      await nothingLeft(marker, tmp)
    } finally {
      await nsA.remove()
      await nsB.remove()
    }
  })

  it('ten migrations back and forth keep every page and the workload (localmigrate x10)', async () => {
    const a = host('la')
    const b = host('lb')
    const g: GuestSpec = {name: 'pingpong', memMiB: 64, dirtyRate: 5000, workingSetMiB: 16, seed: 77}
    await createGuest(a, g)
    const {env, marker, tmp} = runEnv('x10')
    let [from, to] = [a, b]
    let lastStep = 0
    for (let i = 1; i <= 10; i++) {
      const r = await migrate(from, ['-s', '', 'pingpong', receiverCommand(to)], {env})
      expect(r.exitCode, `migration ${i}: ${r.stderr}`).toBe(0)
      await exactlyOneOn(to, from, 'pingpong')
      const hv = sim(to)
      try {
        const domid = await resolveDomain(hv, 'pingpong')
        const report = await hv.verifyIntegrity(domid)
        expect(report.ok, `migration ${i}: ${JSON.stringify(report.bad)}`).toBe(true)
        const step = (await hv.runtime(domid)).step
        expect(step, `migration ${i}: the workload went on`).toBeGreaterThan(lastStep)
        lastStep = step
      } finally {
        hv.close()
      }
      ;[from, to] = [to, from]
    }
    await checkContinuity(from, 'pingpong', g, scratch)
    await nothingLeft(marker, tmp)
  })

  it('migrates to the same host (osstest localmigrate): --incoming and --migratedaway side by side', async () => {
    const a = host('self')
    const g: GuestSpec = {name: 'local', memMiB: 32, dirtyRate: 2000, workingSetMiB: 8, seed: 5}
    const before = await createGuest(a, g)
    const {env, marker, tmp} = runEnv('self')
    for (let i = 0; i < 2; i++) {
      const r = await migrate(a, ['-s', '', 'local', receiverCommand(a)], {env})
      expect(r.exitCode, r.stderr).toBe(0)
      const all = await guests(a)
      expect(all.map((d) => d.name)).toEqual(['local'])
      expect(all[0]!.domid).not.toBe(before)
      expect(isRunning(all[0]!)).toBe(true)
    }
    await checkContinuity(a, 'local', g, scratch)
    await nothingLeft(marker, tmp)
  })
})

function writeCfg(root: string, g: GuestSpec): string {
  const file = `${root}/${g.name}.cfg`
  fs.writeFileSync(
    file,
    [`name = "${g.name}"`, 'type = "hvm"', `memory = ${g.memMiB}`, 'vcpus = 1', `sim_dirty_rate = ${g.dirtyRate}`, `sim_working_set = ${g.workingSetMiB}`, `sim_seed = ${g.seed}`].join('\n') + '\n',
  )
  return file
}
