/**
 * xl-ts migrate-receive on its own, fed from a file as ssh would feed it: stdout carries exactly
 * the protocol bytes (banner 54, ready 34, report 39 + status, GO 44) and nothing else; bad input
 * (garbage, nothing, a wrong magic or byte order, unknown mandatory flags, a stream cut short, an
 * oversize libxl or libxc record) exits 1 with a clear error and leaves no domain and no process.
 * A complete stream with GO after it starts the domain; without GO the receiver reports failure,
 * destroys its copy and gives the sender permission to resume, and exits 0, as xl. A usage error
 * leaves nothing behind of what the receiver starts while it loads (its guardian, its helper).
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {encodeDomainHeader, encodeImageHeader, encodeLibxlHeader} from '../src/toolstack/stream/index.js'
import {BIN} from './support/cli.js'
import {NODE, cleanupHost, createGuest, ensureBuilt, guests, isRunning, newHost, runMarker, scratchDir, waitNoMarked} from './support/migrate.js'

const BANNER = Buffer.from('xl migration receiver ready, send binary domain data.\n', 'latin1')
const READY = Buffer.from('domain received, ready to unpause\0', 'latin1')
const GO = Buffer.from('domain is yours, you are cleared to unpause\0', 'latin1')
const REPORT = Buffer.from('my copy unpause results are as follows\0', 'latin1')

let source: string
let target: string
let work: string
let savefile: Buffer

beforeAll(async () => {
  await ensureBuilt()
  source = newHost('rs')
  target = newHost('rt')
  work = scratchDir('recv')
  await createGuest(source, {name: 'rx', memMiB: 16, dirtyRate: 1000, workingSetMiB: 4, seed: 8})
  // A savefile is exactly what a migration stream carries: xl header, config, libxl, libxc.
  const file = path.join(work, 'rx.save')
  const r = await execa(NODE, [BIN, '--root', source, 'save', '-c', 'rx', file], {reject: false, env: {XL_TS_BACKEND: 'sim'}})
  if (r.exitCode !== 0) throw new Error(`save: ${r.stderr}`)
  savefile = fs.readFileSync(file)
})

afterAll(async () => {
  await cleanupHost(source)
  await cleanupHost(target)
  fs.rmSync(work, {recursive: true, force: true})
})

interface Received {
  exitCode: number
  stdout: Buffer
  stderr: string
}

async function receive(input: Buffer, args: string[] = []): Promise<Received> {
  const {marker, env: marked} = runMarker(work)
  const r = await execa(NODE, [BIN, 'migrate-receive', ...args], {
    reject: false,
    input,
    encoding: 'buffer',
    stripFinalNewline: false,
    env: {XL_TS_BACKEND: 'sim', XL_TS_ROOT: target, ...marked},
    timeout: 60_000,
  })
  expect(await waitNoMarked(marker), 'no process of the receiver is left').toEqual([])
  return {exitCode: r.exitCode ?? -1, stdout: Buffer.from(r.stdout), stderr: Buffer.from(r.stderr).toString('utf8')}
}

const xlHeaderLength = (b: Buffer) => 48 + b.readUInt32LE(44)

function rec(type: number, length: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt32LE(type, 0)
  b.writeUInt32LE(length, 4)
  return b
}

async function refused(input: Buffer, says: string, code: number): Promise<void> {
  const r = await receive(input)
  expect(r.exitCode, r.stderr).toBe(1)
  expect(r.stdout.equals(BANNER), 'stdout is the banner and nothing else').toBe(true)
  const lines = r.stderr.split('\n').filter(Boolean)
  expect(lines[0]).toBe('migration target: Ready to receive domain.')
  expect(lines).toContain(says)
  expect(lines[lines.length - 1]).toBe(`migration target: Domain creation failed (code ${code}).`)
  expect(r.stderr).not.toMatch(/^\s+at /m)
  expect(await guests(target), 'no domain is left').toEqual([])
}

describe('migrate-receive with bad input', () => {
  it('garbage: wrong magic', async () => {
    await refused(Buffer.from('this is not a migration stream at all, not even close to one'.repeat(20)), 'File has wrong magic number - corrupt or for a different tool?', -6)
  })

  it('nothing at all, or a header cut short', async () => {
    await refused(Buffer.alloc(0), 'file/stream truncated reading header from <incoming migration stream>: 0 of 48 bytes', -6)
    await refused(savefile.subarray(0, 20), 'file/stream truncated reading header from <incoming migration stream>: 20 of 48 bytes', -6)
  })

  it('a wrong byte order, an unknown mandatory flag, truncated optional data', async () => {
    const order = Buffer.from(savefile.subarray(0, 48))
    order.writeUInt32BE(0x01020304, 32)
    await refused(order, 'File has wrong byte order', -6)
    const flags = Buffer.from(savefile.subarray(0, 48))
    flags.writeUInt32LE(0x7, 36)
    await refused(flags, 'Savefile has mandatory flag(s) 0x4 which are not supported; need newer xl', -6)
    const r = await receive(savefile.subarray(0, 60))
    expect(r.exitCode).toBe(1)
    expect(r.stderr).toMatch(/Savefile truncated/)
  })

  it('a stream cut short inside the memory: the half-built domain is destroyed', async () => {
    const r = await receive(savefile.subarray(0, Math.floor(savefile.length / 2)))
    expect(r.exitCode, r.stderr).toBe(1)
    expect(r.stdout.equals(BANNER)).toBe(true)
    expect(r.stderr).toMatch(/^xl-ts: error: Restore failed: libxc PAGE_DATA record #\d+ .*stream ends after/m)
    expect(r.stderr).toContain('migration target: Domain creation failed (code -3).')
    expect(await guests(target)).toEqual([])
  })

  it('an oversize libxl record and an oversize libxc record', async () => {
    const xl = savefile.subarray(0, xlHeaderLength(savefile))
    const r1 = await receive(Buffer.concat([xl, encodeLibxlHeader(), rec(3, 0xfffffff0), Buffer.alloc(64)]))
    expect(r1.exitCode).toBe(1)
    expect(r1.stderr).toMatch(/libxl EMULATOR_CONTEXT record #0 at offset \d+ .*length 4294967280 exceeds the maximum/)
    expect(await guests(target)).toEqual([])
    const libxc = [encodeImageHeader(), encodeDomainHeader({type: 2, pageShift: 12, xenMajor: 4, xenMinor: 17}), rec(1, 200 * 1024 * 1024)]
    const r2 = await receive(Buffer.concat([xl, encodeLibxlHeader(), rec(1, 0), ...libxc, Buffer.alloc(64)]))
    expect(r2.exitCode).toBe(1)
    expect(r2.stderr).toMatch(/libxc PAGE_DATA record #0 .*length 209715200 exceeds the maximum of 134217728 bytes/)
    expect(r2.stderr).toContain('migration target: Domain creation failed (code -3).')
    expect(await guests(target)).toEqual([])
  })
})

describe('migrate-receive with a whole stream', () => {
  it('and no GO: reports failure (status 0xff), destroys its copy, gives permission back, exits 0 (as xl)', async () => {
    const r = await receive(savefile)
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.stdout.equals(Buffer.concat([BANNER, READY, REPORT, Buffer.from([0xff]), GO]))).toBe(true)
    expect(r.stderr).toContain('file/stream truncated reading GO message from migration stream')
    expect(r.stderr).toContain('migration target: Failure, destroying our copy.')
    expect(r.stderr).toContain('migration target: Cleanup OK, granting sender permission to resume.')
    expect(await guests(target)).toEqual([])
  })

  it('and GO: starts the domain under its name and reports success (status 0)', async () => {
    const r = await receive(Buffer.concat([savefile, GO]))
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.stdout.equals(Buffer.concat([BANNER, READY, REPORT, Buffer.from([0])]))).toBe(true)
    const there = await guests(target)
    expect(there.map((d) => d.name)).toEqual(['rx'])
    expect(isRunning(there[0]!)).toBe(true)
    // With -p it stays paused; the name is taken now, so the start fails and the copy goes.
    const again = await receive(Buffer.concat([savefile, GO]), ['-p'])
    expect(again.exitCode).toBe(0)
    expect(again.stdout.subarray(0, BANNER.length + READY.length + REPORT.length + 1).equals(Buffer.concat([BANNER, READY, REPORT, Buffer.from([6])]))).toBe(true)
    expect(again.stderr).toContain('Domain with name "rx" already exists.')
    expect((await guests(target)).map((d) => d.name)).toEqual(['rx'])
    for (const d of await guests(target)) await execa(NODE, [BIN, '--root', target, 'destroy', String(d.domid)], {env: {XL_TS_BACKEND: 'sim'}})
  })

  it('a usage error: the usage text, exit 1, nothing on stdout; what it started while loading is gone', async () => {
    const started = Date.now()
    // receive() also checks that no process of the receiver is left (its guardian, its helper).
    const r = await receive(Buffer.alloc(0), ['unexpected'])
    expect(r.exitCode, r.stderr).toBe(1)
    expect(r.stdout.length).toBe(0)
    expect(r.stderr).toContain('Usage: xl-ts migrate-receive')
    expect(Date.now() - started, 'they do not hold the command up').toBeLessThan(10_000)
  })

  for (const flag of ['-r', '--colo']) {
    it(`${flag}: a stream that ends at once gets the banner, xl's failure line, exit 1`, async () => {
      const r = await receive(Buffer.alloc(0), [flag])
      expect(r.exitCode, r.stderr).toBe(1)
      expect(r.stdout.equals(BANNER)).toBe(true)
      expect(r.stderr.split('\n')).toContain('migration target: Domain creation failed (code -6).')
    })
  }
})
