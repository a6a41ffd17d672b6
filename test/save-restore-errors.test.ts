/**
 * xl-ts save and restore when things go wrong. A restore of a savefile that is corrupt or truncated
 * anywhere (xl header, libxl records before and after the libxc stream, libxc records read by the
 * helper), or whose helper cannot run, fails with exit status 1 and one error line naming the
 * record and its offset in the file, and leaves nothing behind: only Domain-0 listed, no memory
 * file, no domain folder, no process. On a pipe, the offset after the libxc stream is said to be
 * unknown. A save that cannot start leaves the domain as it was; a save that fails midway resumes it.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {execa} from 'execa'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {resolveDomain} from '../src/toolstack/libxl/index.js'
import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {ensureBuilt, lines, newHost, randomTag, writeConfig, xl, type Run} from './support/cli.js'
import {cleanupSaveHost, expectOnlyDom0, helperProcesses, inspectRecords, type InspectedRecord} from './support/save-restore.js'

/** xl's informational lines around a save or restore, and our hints; everything else on stderr is an error line. */
const INFO = [/^Saving to /, /^Loading new save file /, /^ Savefile contains xl domain config/, /^Parsing config from /, /^xc: /, /^xl-ts: hint: /]

function errorLines(r: Run): string[] {
  return lines(r.stderr).filter(l => !INFO.some(re => re.test(l)))
}

/** Exit 1 and exactly one error line, without a stack trace; returns it. */
function failsWithOneLine(r: Run, what: string): string {
  expect(r.exitCode, `${what}: exit ${r.exitCode}\nstderr: ${r.stderr}`).toBe(1)
  const errors = errorLines(r)
  expect(errors, `${what}: stderr: ${r.stderr}`).toHaveLength(1)
  expect(r.stderr).not.toMatch(/^\s+at /m)
  return errors[0]!
}

function ok(r: Run, what: string): Run {
  expect(r.exitCode, `${what}: exit ${r.exitCode}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0)
  return r
}

/** Save and restore on a loaded 2-core machine: more than the CLI helper's default minute. */
const SLOW = 150_000

const hex = (n: number) => `0x${n.toString(16)}`

let dir: string
let hostA: string
let hostB: string
let name: string
let saved: string
let records: InspectedRecord[]
const temps: string[] = []

beforeAll(async () => {
  await ensureBuilt()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-saverr-'))
  hostA = newHost('ea')
  hostB = newHost('eb')
  name = `vm-${randomTag()}`
  const cfg = writeConfig(dir, name, {name, type: 'hvm', memory: 32, sim_dirty_rate: 2000, sim_seed: 5})
  ok(await xl(['create', '-q', cfg], {root: hostA}), 'create')
  saved = path.join(dir, 'good.save')
  ok(await xl(['save', '-c', name, saved], {root: hostA, timeout: SLOW}), 'save -c')
  records = await inspectRecords(saved)
}, 300_000)

afterEach(async () => {
  // Whatever a test left on host B goes; host A keeps its guest for the next test.
  await cleanupSaveHost(hostB)
  for (const t of temps.splice(0)) fs.rmSync(t, {recursive: true, force: true})
})

afterAll(async () => {
  for (const r of [hostA, hostB]) if (r) await cleanupSaveHost(r)
  if (dir) fs.rmSync(dir, {recursive: true, force: true})
})

function record(layer: string, type: string, nth = 0): InspectedRecord {
  const found = records.filter(r => r.event === 'record' && r.layer === layer && r.type === type)[nth]
  if (!found) throw new Error(`no ${layer} ${type} #${nth} in the savefile`)
  return found
}

/** A copy of the good savefile, changed by `edit`. */
function variant(label: string, edit: (b: Buffer) => Buffer): string {
  const file = path.join(dir, `${label}.save`)
  fs.writeFileSync(file, edit(fs.readFileSync(saved)))
  temps.push(file)
  return file
}

async function restoreFails(file: string, what: string, env: Record<string, string> = {}): Promise<string> {
  const r = await xl(['restore', file], {root: hostB, env, timeout: SLOW})
  const line = failsWithOneLine(r, what)
  await expectOnlyDom0(hostB)
  return line
}

describe('restore of a bad savefile fails in one line and leaves no domain', {timeout: 300_000}, () => {
  it('wrong magic: xl\'s message, nothing built', async () => {
    const file = variant('magic', b => {
      b[0] = 0x59
      return b
    })
    expect(await restoreFails(file, 'wrong magic')).toBe('File has wrong magic number - corrupt or for a different tool? (xl savefile header at offset 0)')
  })

  it('truncated in the xl header and in its config', async () => {
    expect(await restoreFails(variant('short-header', b => b.subarray(0, 20)), 'short header')).toBe(
      `file/stream truncated reading header from ${path.join(dir, 'short-header.save')}: 20 of 48 bytes (xl savefile header at offset 0)`,
    )
    expect(await restoreFails(variant('short-config', b => b.subarray(0, 100)), 'short config')).toMatch(
      /^Savefile truncated: 52 of [0-9]+ bytes of optional data \(xl optional data at offset 48\)$/,
    )
  })

  it('a bad libxl header names its offset', async () => {
    const header = records.find(r => r.layer === 'libxl' && r.event === 'header')!
    const file = variant('libxl-ident', b => {
      b[header.offset] = 0
      return b
    })
    expect(await restoreFails(file, 'libxl ident')).toBe(
      `xl-ts: restore: libxl header at offset ${header.offset} (${hex(header.offset)}): ident 0x006962786c466d74, expected 0x4c6962786c466d74 ("LibxlFmt")`,
    )
  })

  it('truncated inside a libxc PAGE_DATA record: the helper names the record and its offset in the file', async () => {
    const page = record('libxc', 'PAGE_DATA', 3)
    const file = variant('short-pages', b => b.subarray(0, page.offset + 5000))
    const line = await restoreFails(file, 'truncated libxc')
    expect(line).toContain(`libxc PAGE_DATA record #${page.index} at offset ${page.offset} (${hex(page.offset)})`)
    expect(line).toContain('stream ends after')
  })

  it('a libxc record of an unknown type: named with its offset', async () => {
    const tsc = record('libxc', 'X86_TSC_INFO')
    const file = variant('libxc-type', b => {
      b.writeUInt32LE(0x7ff, tsc.offset)
      return b
    })
    const line = await restoreFails(file, 'unknown libxc record')
    expect(line).toContain(`record #${tsc.index} at offset ${tsc.offset} (${hex(tsc.offset)})`)
  })

  it('a corrupt libxl record after the libxc stream: its offset in the file is right', async () => {
    const emu = record('libxl', 'END') // the first libxl record after the libxc stream (no device model: no EMULATOR_CONTEXT)
    const file = variant('emu-type', b => {
      b.writeUInt32LE(9, emu.offset)
      return b
    })
    expect(await restoreFails(file, 'bad libxl record')).toBe(
      `xl-ts: restore: libxl 0x00000009 record #${emu.index} at offset ${emu.offset} (${hex(emu.offset)}): record type 0x00000009 is not defined by libxl stream v2`,
    )
  })

  it('truncated before END', async () => {
    const end = record('libxl', 'END')
    expect(await restoreFails(variant('no-end', b => b.subarray(0, end.offset)), 'no END')).toBe(
      `xl-ts: restore: libxl record header #${end.index} at offset ${end.offset} (${hex(end.offset)}): stream ends after 0 of 8 header bytes`,
    )
  })

  it('a helper that cannot run', async () => {
    const line = await restoreFails(saved, 'no helper', {LIBXL_SAVE_HELPER: path.join(dir, 'no-such-helper')})
    expect(line).toMatch(/^xl-ts: restore: .*restore helper.*ENOENT/)
  })

  it('on a pipe, a bad record after the libxc stream is named, its offset said to be unknown', async () => {
    const emu = record('libxl', 'END') // the first libxl record after the libxc stream (no device model: no EMULATOR_CONTEXT)
    const bad = variant('emu-pipe', b => {
      b.writeUInt32LE(9, emu.offset)
      return b
    })
    const fifo = path.join(dir, 'restore.fifo')
    await execa('mkfifo', [fifo])
    temps.push(fifo)
    const feeder = execa('sh', ['-c', 'cat "$1" > "$2"', 'sh', bad, fifo], {reject: false})
    const line = await restoreFails(fifo, 'pipe')
    await feeder
    expect(line).toBe(
      `xl-ts: restore: libxl 0x00000009 record #${emu.index} at an unknown offset (0 bytes after the end of the libxc stream; the stream is a pipe): record type 0x00000009 is not defined by libxl stream v2`,
    )
  })

  it('a good savefile through a pipe restores', async () => {
    const fifo = path.join(dir, 'good.fifo')
    await execa('mkfifo', [fifo])
    temps.push(fifo)
    const feeder = execa('sh', ['-c', 'cat "$1" > "$2"', 'sh', saved, fifo], {reject: false})
    ok(await xl(['restore', '-p', fifo], {root: hostB, timeout: SLOW}), 'restore from a pipe')
    await feeder
    const sim = new SimHypervisor(hostB)
    try {
      const domid = await resolveDomain(sim, name)
      expect((await sim.verifyIntegrity(domid)).ok).toBe(true)
    } finally {
      sim.close()
    }
  })
})

describe('save failures leave the domain running', {timeout: 300_000}, () => {
  async function expectRunning(): Promise<void> {
    const sim = new SimHypervisor(hostA)
    try {
      const domid = await resolveDomain(sim, name)
      const info = await sim.info(domid)
      expect(info.state.running && !info.state.paused && !info.state.shutdown, JSON.stringify(info.state)).toBe(true)
      const step = (await sim.runtime(domid)).step
      await new Promise(resolve => setTimeout(resolve, 100))
      expect((await sim.runtime(domid)).step).toBeGreaterThan(step)
      expect((await sim.verifyIntegrity(domid)).ok).toBe(true)
    } finally {
      sim.close()
    }
    expect(helperProcesses(hostA)).toEqual([])
  }

  it('an unknown domain: xl\'s messages, no file written', async () => {
    const file = path.join(dir, 'unknown.save')
    expect(failsWithOneLine(await xl(['save', 'no-such-vm', file], {root: hostA}), 'unknown name')).toBe('no-such-vm is an invalid domain identifier (rc=-6)')
    expect(failsWithOneLine(await xl(['save', '999', file], {root: hostA}), 'unknown id')).toBe('unable to retrieve domain configuration')
    expect(fs.existsSync(file)).toBe(false)
    await expectRunning()
  })

  it('a file that cannot be written: xl\'s message, the domain untouched', async () => {
    const inMissingDir = path.join(dir, 'no-such-dir', 'x.save')
    expect(failsWithOneLine(await xl(['save', name, inMissingDir], {root: hostA}), 'missing dir')).toBe(
      `Failed to open temp file ${inMissingDir} for writing: No such file or directory`,
    )
    expect(failsWithOneLine(await xl(['save', name, dir], {root: hostA}), 'a directory')).toBe(`Failed to open temp file ${dir} for writing: Is a directory`)
    expect(failsWithOneLine(await xl(['save', name, '/dev/full'], {root: hostA}), 'a full device')).toMatch(/^xl-ts: save: cannot write the savefile header to \/dev\/full: .*ENOSPC/)
    await expectRunning()
  })

  it('a reader that goes away mid-stream: "Failed to save domain, resuming domain", and it runs on', async () => {
    const fifo = path.join(dir, 'save.fifo')
    await execa('mkfifo', [fifo])
    temps.push(fifo)
    const reader = execa('sh', ['-c', 'head -c 1000000 < "$1" > /dev/null', 'sh', fifo], {reject: false})
    const r = await xl(['save', name, fifo], {root: hostA, timeout: SLOW})
    await reader
    expect(r.exitCode, r.stderr).toBe(1)
    const errors = errorLines(r)
    expect(errors, r.stderr).toHaveLength(2)
    expect(errors[0]).toMatch(/^xl-ts: save: .*EPIPE/)
    expect(errors[1]).toBe('Failed to save domain, resuming domain')
    expect(lines(r.stderr)[0]).toMatch(/^Saving to .* new xl format \(info 0x3\/0x0\/[0-9]+\)$/)
    await expectRunning()
  })

  it('bad usage', async () => {
    const one = await xl(['save', name], {root: hostA})
    expect(one.exitCode).toBe(2)
    expect(lines(one.stderr)).toEqual(["'xl-ts save' requires at least 2 arguments.", "xl-ts: hint: see 'xl-ts save --help'"])
    const four = await xl(['save', name, 'a', 'b', 'c'], {root: hostA})
    expect(four.exitCode).toBe(1)
    const bad = await xl(['save', '-x', name, 'f'], {root: hostA})
    expect(bad.exitCode).toBe(2)
    expect(lines(bad.stderr)).toEqual(["option `x' not supported.", "xl-ts: hint: see 'xl-ts save --help'"])
    const none = await xl(['restore'], {root: hostB})
    expect(none.exitCode).toBe(2)
    expect(lines(none.stderr)).toEqual(["'xl-ts restore' requires at least 1 argument.", "xl-ts: hint: see 'xl-ts restore --help'"])
    await expectRunning()
  })
})
