/**
 * xl-ts save and restore end to end, as an operator runs them (node bin/run.js, our save helper,
 * simulated hosts in temp folders): a 256 MiB guest whose workload is running is saved on host A
 * and restored on host B; the copy holds the memory and vCPU context the source had at suspend and
 * its workload carries on from the same PRNG state. The savefile passes Xen's verify-stream-v2 and
 * our stream inspect. Every domain, process, memory file and temp file is removed, also on failure.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {afterEach, beforeAll, describe, expect, it} from 'vitest'

import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {ensureBuilt, lines, newHost, randomTag, writeConfig, xl, type Run} from './support/cli.js'
import {cleanupSaveHost, expectOnlyDom0, helperProcesses, inspectRecords} from './support/save-restore.js'
import {verifyStreamV2} from './support/xen-utils.js'

const roots: string[] = []
const temps: string[] = []

beforeAll(ensureBuilt, 180_000)

afterEach(async () => {
  for (const r of roots.splice(0)) await cleanupSaveHost(r)
  for (const t of temps.splice(0)) fs.rmSync(t, {recursive: true, force: true})
})

function host(tag: string): string {
  const r = newHost(tag)
  roots.push(r)
  return r
}

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-save-'))
  temps.push(d)
  return d
}

function ok(r: Run, what: string): Run {
  expect(r.exitCode, `${what}: exit ${r.exitCode}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0)
  return r
}

interface Listed {
  domid: number
  name: string
  stateLetters: string
}

async function list(root: string): Promise<Listed[]> {
  return JSON.parse(ok(await xl(['list', '--json'], {root}), 'list').stdout) as Listed[]
}

/** Save and restore on a loaded 2-core machine: more than the CLI helper's default minute. */
const SLOW = 150_000

const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

describe('xl-ts save and restore of a running 256 MiB guest', () => {
  it('restores the memory, vCPU context and PRNG state the source had at suspend, on another host', async () => {
    const a = host('sa')
    const b = host('sb')
    const dir = tempDir()
    const name = `vm-${randomTag()}`
    const cfg = writeConfig(dir, name, {name, type: 'hvm', memory: 256, sim_dirty_rate: 20000, sim_working_set: 64, sim_seed: 1234, sim_packet_rate: 50})
    ok(await xl(['create', '-q', cfg], {root: a}), 'create')
    // Let the workload run and dirty pages.
    await sleep(400)
    const simA = new SimHypervisor(a)
    const simB = new SimHypervisor(b)
    try {
      const srcId = (await list(a)).find(d => d.name === name)!.domid
      const stepBefore = (await simA.runtime(srcId)).step
      expect(stepBefore).toBeGreaterThan(0)

      // -p: the source stays, paused at the state it was saved in.
      const file = path.join(dir, `${name}.save`)
      const saved = ok(await xl(['save', '-p', name, file], {root: a, timeout: SLOW}), 'save -p')
      const savedLines = lines(saved.stderr)
      expect(savedLines[0]).toMatch(new RegExp(`^Saving to ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} new xl format \\(info 0x3/0x0/[0-9]+\\)$`))
      expect(saved.stderr).toMatch(/^xc: progress: Frames: [0-9]+\/65536 +[0-9]+%$/m)
      expect(saved.stdout).toBe('')
      const src = (await list(a)).find(d => d.name === name)!
      expect(src.stateLetters).toBe('--p---')
      expect(helperProcesses(a)).toEqual([])

      // The savefile: our inspector and Xen's verifier accept it.
      const inspect = ok(await xl(['stream', 'inspect', file]), 'stream inspect')
      expect(inspect.stdout).toMatch(/^ {2}result {7}valid$/m)
      expect(inspect.stdout).toMatch(/65536 pages of data/)
      const verified = await verifyStreamV2({file}, 'xl')
      expect(verified.exitCode, `${verified.stdout}\n${verified.stderr}`).toBe(0)
      const records = await inspectRecords(file)
      // No device model (no COLO disk, no proxy), so no device state: no EMULATOR_CONTEXT (libxl/device-model.ts).
      expect(records.filter(r => r.layer === 'libxl' && r.event === 'record').map(r => r.type)).toEqual(['LIBXC_CONTEXT', 'END'])
      // The xl header's optional data length in "Saving to" is the file's.
      const xlHeader = records.find(r => r.layer === 'xl')!
      expect(savedLines[0]).toContain(`/${xlHeader.length - 48})`)

      // Restore on host B, paused.
      const restored = ok(await xl(['restore', '-p', file], {root: b, timeout: SLOW}), 'restore -p')
      expect(lines(restored.stderr).slice(0, 3)).toEqual([
        `Loading new save file ${file} (new xl fmt info 0x3/0x0/${xlHeader.length - 48})`,
        ' Savefile contains xl domain config in JSON format',
        'Parsing config from <saved>',
      ])
      const copy = (await list(b)).find(d => d.name === name)!
      expect(copy.stateLetters).toBe('--p---')
      expect(helperProcesses(b)).toEqual([])

      // Memory and vCPU context as the source had them at suspend (it has not run since).
      expect(await simB.checksum(copy.domid)).toBe(await simA.checksum(src.domid))
      expect(await simB.getVcpuContext(copy.domid)).toEqual(await simA.getVcpuContext(src.domid))
      expect((await simB.verifyIntegrity(copy.domid)).ok).toBe(true)
      const cli = ok(await xl(['sim', 'checksum', name], {root: b}), 'sim checksum').stdout
      expect(cli).toBe(ok(await xl(['sim', 'checksum', name], {root: a}), 'sim checksum').stdout)
      expect((await simB.runtime(copy.domid)).step).toBe((await simA.runtime(src.domid)).step)

      // The workload goes on from the same PRNG state: the same steps write the same pages.
      for (const n of [1, 500, 20000]) {
        await simA.runSteps(src.domid, n)
        await simB.runSteps(copy.domid, n)
        expect(await simB.checksum(copy.domid), `after ${n} more steps`).toBe(await simA.checksum(src.domid))
      }
      expect(await simB.getVcpuContext(copy.domid)).toEqual(await simA.getVcpuContext(src.domid))

      // Unpaused, the copy runs.
      ok(await xl(['unpause', name], {root: b}), 'unpause')
      const stepB = (await simB.runtime(copy.domid)).step
      await sleep(200)
      expect((await simB.runtime(copy.domid)).step).toBeGreaterThan(stepB)
    } finally {
      simA.close()
      simB.close()
    }
    for (const r of [a, b]) {
      for (const d of await list(r)) if (d.domid !== 0) ok(await xl(['destroy', String(d.domid)], {root: r}), 'destroy')
      await expectOnlyDom0(r)
    }
  }, 300_000)

  it('save without -c or -p destroys the domain; restore without -p starts it; -c leaves the source running', async () => {
    const a = host('sc')
    const b = host('sd')
    const dir = tempDir()
    const name = `vm-${randomTag()}`
    const cfg = writeConfig(dir, name, {name, type: 'hvm', memory: 32, sim_dirty_rate: 3000, sim_seed: 9})
    ok(await xl(['create', '-q', cfg], {root: a}), 'create')
    const simA = new SimHypervisor(a)
    const simB = new SimHypervisor(b)
    try {
      // -c: a copy; the source runs on.
      const copyFile = path.join(dir, 'copy.save')
      ok(await xl(['save', '-c', name, copyFile], {root: a, timeout: SLOW}), 'save -c')
      const [running] = (await list(a)).filter(d => d.name === name)
      expect(running?.stateLetters).toMatch(/^r/)
      const step = (await simA.runtime(running!.domid)).step
      await sleep(100)
      expect((await simA.runtime(running!.domid)).step).toBeGreaterThan(step)

      // No flag: saved, then destroyed.
      const file = path.join(dir, 'final.save')
      ok(await xl(['save', name, file], {root: a, timeout: SLOW}), 'save')
      await expectOnlyDom0(a)

      // Restore without -p: the domain runs, under the saved name, with a fresh domid of host B.
      const r = ok(await xl(['restore', file], {root: b, timeout: SLOW}), 'restore')
      expect(r.stdout).toBe('')
      const [dom] = (await list(b)).filter(d => d.name === name)
      expect(dom?.stateLetters).toMatch(/^r/)
      expect((await simB.verifyIntegrity(dom!.domid)).ok).toBe(true)
      // The name is taken now: a second restore fails, and leaves the first alone.
      const again = await xl(['restore', file], {root: b, timeout: SLOW})
      expect(again.exitCode).toBe(1)
      expect(lines(again.stderr).at(-1)).toBe(`Domain with name "${name}" already exists.`)
      expect((await list(b)).map(d => d.name)).toEqual(['Domain-0', name])
      ok(await xl(['destroy', name], {root: b}), 'destroy')
      await expectOnlyDom0(b)
    } finally {
      simA.close()
      simB.close()
    }
  }, 300_000)
})
