/**
 * docs/json.md stays honest: every event a command's --json can emit, every field of it and every
 * value of its enumerations is named there, under that command and that event, with the schema
 * version the code writes. The events and fields come from the code itself: the renderers run on
 * one sample of every event kind (the samples are typed so that a new kind does not compile until
 * it has one), the TypeScript union types where the command writes an event as it is, and a run of
 * `list --json`.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {MIGRATION_JSON_VERSION, migrationJson} from '../src/render/migration-progress.js'
import {errorJson, formatJson, rowJson, RowMaker, summaryJson, type JsonObject, type SummaryContext} from '../src/render/stream-summary.js'
import {UnknownFormatError, type InspectEvent} from '../src/render/stream-inspect.js'
import type {MigrationEvent} from '../src/toolstack/xl/migration-events.js'
import {DOMAIN_TYPE, StreamError, type BackChannelRecord, type LibxcRecord, type LibxlRecord} from '../src/toolstack/stream/index.js'
import {ROOT, cleanupHost, ensureBuilt, newHost, xl} from './support/cli.js'

const DOC = fs.readFileSync(path.join(ROOT, 'docs', 'json.md'), 'utf8')
const source = (file: string): string => fs.readFileSync(path.join(ROOT, file), 'utf8')

/** The text under `## title` up to the next `## `. */
function section(title: string): string {
  const at = DOC.indexOf(`\n## ${title}\n`)
  expect(at, `docs/json.md has a section "## ${title}"`).toBeGreaterThanOrEqual(0)
  const next = DOC.indexOf('\n## ', at + 1)
  return DOC.slice(at, next < 0 ? undefined : next)
}

/** The text under `### name` (inside a section) up to the next heading. */
function subsection(text: string, name: string): string {
  const at = text.indexOf(`\n### ${name}\n`)
  expect(at, `a subsection "### ${name}"`).toBeGreaterThanOrEqual(0)
  const next = text.slice(at + 1).search(/\n#{2,3} /)
  return text.slice(at, next < 0 ? undefined : at + 1 + next)
}

/** What a text names as `code`. */
function codes(text: string): Set<string> {
  return new Set([...text.matchAll(/`([^`\n]+)`/g)].map(m => m[1] as string))
}

function expectNamed(text: string, names: Iterable<string>, where: string): void {
  const named = codes(text)
  const missing = [...names].filter(n => !named.has(n))
  expect(missing, `not in docs/json.md (${where})`).toEqual([])
}

/** The string literals of a union type `export type NAME = | 'a' | 'b' ...` in a source file. */
function unionValues(text: string, name: string): string[] {
  const m = new RegExp(`export type ${name} =([\\s\\S]*?)(?:\\n\\n|\\nexport )`).exec(text)
  expect(m, `type ${name}`).not.toBeNull()
  const body = (m?.[1] ?? '').replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '')
  return [...body.matchAll(/'([^']+)'/g)].map(v => v[1] as string)
}

/** Keys of an object, and of the objects inside it (not of arrays), as `a` and `a.b`. */
function keysOf(o: JsonObject): string[] {
  return Object.entries(o).flatMap(([k, v]) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? [k, ...Object.keys(v)] : [k]))
}

describe('migrate --json', () => {
  const text = section('migrate --json')
  // One of every kind (the type makes a new kind fail to compile here until it has a sample).
  const samples: {[K in MigrationEvent['kind']]: MigrationEvent & {kind: K}} = {
    line: {kind: 'line', text: 'Migration successful.'},
    log: {kind: 'log', level: 'info', text: 'x'},
    phase: {kind: 'phase', phase: 'precopy', atMs: 1},
    iteration: {kind: 'iteration', iteration: 1, pages: 10, dirty: 2, ms: 3, bandwidthMiBps: 4, dirtyRatePps: 5, predictedDowntimeMs: 6},
    pages: {kind: 'pages', pass: 'iteration 1', iteration: 1, done: 1, total: 2, bandwidthMiBps: 3, etaMs: 4, dirtyRatePps: 5},
    result: {
      kind: 'result',
      ok: false,
      domain: 'vm1',
      domid: 7,
      outcome: 'resumed',
      exitCode: 1,
      totalMs: 1,
      downtimeMs: null,
      iterations: 0,
      pagesSent: 0,
      pausedPages: 0,
      bytes: 0,
      bandwidthMiBps: 0,
      error: 'why',
    },
  }

  it('names every event and every field of it, under its own heading', () => {
    const written = Object.values(samples)
      .map(e => migrationJson(e, 7))
      .filter((o): o is NonNullable<typeof o> => o !== undefined)
    expect(written.map(o => o.event)).toEqual(['phase', 'iteration', 'result'])
    for (const o of written) expectNamed(subsection(text, String(o.event)), Object.keys(o), `migrate event ${o.event}`)
  })

  it('names every phase and outcome', () => {
    const events = source('src/toolstack/xl/migration-events.ts')
    expectNamed(text, unionValues(events, 'MigrationPhase'), 'migrate phases')
    expectNamed(text, unionValues(events, 'MigrationOutcome'), 'migrate outcomes')
  })

  it('gives the schema version the code writes', () => {
    expect(text).toMatch(new RegExp(`schema version ${MIGRATION_JSON_VERSION}\\b`))
    const v = MIGRATION_JSON_VERSION
    expect(Object.values(samples).map(e => migrationJson(e, 0)?.v).filter(x => x !== undefined)).toEqual([v, v, v])
  })
})

describe('remus --json', () => {
  const text = section('remus --json')
  const primary = source('src/toolstack/replication/events.ts')
  const command = source('src/commands/remus.ts')

  /** The members of RemusEvent: kind, fields, and the member's text. */
  function remusEvents(): {kind: string; fields: string[]; text: string}[] {
    const m = /export type RemusEvent =([\s\S]*?)\nexport type /.exec(primary)
    expect(m, 'type RemusEvent').not.toBeNull()
    return (m?.[1] ?? '')
      .split(/\n {2}\| /)
      .map(t => t.replace(/\/\*[\s\S]*?\*\//g, ''))
      .filter(t => /kind: '/.test(t))
      .map(t => ({
        kind: /kind: '([^']+)'/.exec(t)?.[1] as string,
        fields: [...t.matchAll(/readonly (\w+)\??:/g)].map(f => f[1] as string).filter(f => f !== 'kind'),
        text: t,
      }))
  }

  it('the command writes every event but line and log as {v, event: kind, ...fields}', () => {
    expect(command).toMatch(/if \(e\.kind === 'line'\) return /)
    expect(command).toMatch(/if \(e\.kind === 'log'\) return /)
    expect(command).toMatch(/JSON\.stringify\(\{v: 1, event: e\.kind, \.\.\.withoutKind\(e\)\}\)/)
    expect(remusEvents().map(e => e.kind)).toEqual(['line', 'log', 'checkpoint', 'ack', 'netbuf-release', 'result'])
  })

  it('names every event and every field of it, under its own heading', () => {
    for (const e of remusEvents().filter(e => e.kind !== 'line' && e.kind !== 'log')) {
      expectNamed(subsection(text, e.kind), ['v', 'event', ...e.fields], `remus event ${e.kind}`)
    }
  })

  it('names the release event colo-compare\'s frames make, and its fields', () => {
    const m = /JSON\.stringify\(\{v: 1, event: 'release', ([^}]*)\}\)/.exec(command)
    expect(m, 'remus.ts writes a release event').not.toBeNull()
    // `atMs: atMs - started, via, ...frameFields(frame)`: keys, shorthands, and a spread.
    // (Commas inside a call's parentheses do not split.)
    const parts = (m?.[1] ?? '').split(/,(?![^(]*\))/).map(p => p.trim())
    const own = parts.filter(p => !p.startsWith('...')).map(p => (p.split(':')[0] as string).trim())
    expect(own).toEqual(['atMs', 'via'])
    expect(m?.[1]).toContain('...frameFields(frame')
    const frame = /function frameFields[\s\S]*?\n\}/.exec(command)?.[0] ?? ''
    const frameKeys = [...frame.matchAll(/return \{([^}]*)\}/g)].flatMap(r => [...(r[1] as string).matchAll(/(\w+):/g)].map(f => f[1] as string))
    expect(frameKeys.length).toBeGreaterThan(0)
    expectNamed(subsection(text, 'release'), ['v', 'event', ...own, ...frameKeys], 'remus event release')
  })

  it('names every outcome, checkpoint reason and release path', () => {
    expectNamed(text, unionValues(primary, 'RemusOutcome'), 'remus outcomes')
    const checkpoint = remusEvents().find(e => e.kind === 'checkpoint')?.text ?? ''
    const reasons = [...(/reason\?: ([^\n]*)/.exec(checkpoint)?.[1] ?? '').matchAll(/'([^']+)'/g)].map(r => r[1] as string)
    expect(reasons).toEqual(['first', 'timer', 'divergence'])
    expectNamed(subsection(text, 'checkpoint'), reasons, 'checkpoint reasons')
    expectNamed(subsection(text, 'release'), unionValues(source('src/toolstack/colo/compare-proxy.ts'), 'ReleaseReason'), 'release via')
  })

  it('gives the schema version the code writes', () => {
    const versions = new Set([...command.matchAll(/JSON\.stringify\(\{v: (\d+)/g)].map(v => Number(v[1])))
    expect([...versions]).toEqual([1])
    expect(text).toMatch(/schema version 1\b/)
  })
})

describe('list --json', () => {
  let root: string
  beforeAll(async () => {
    await ensureBuilt()
    root = newHost('jdoc')
  })
  afterAll(async () => {
    await cleanupHost(root)
  })

  it('names every field of a domain and of its state', async () => {
    const text = section('list --json')
    const r = await xl(['list', '--json'], {root})
    expect(r.exitCode, r.stderr).toBe(0)
    const [dom0] = JSON.parse(r.stdout) as JsonObject[]
    const state = unionFields(source('src/toolstack/hypervisor/port.ts'), 'DomainState')
    expect(state).toContain('shutdownReason')
    expectNamed(text, [...keysOf(dom0 as JsonObject), ...state], 'list --json')
  })
})

/** The fields of `export interface NAME {...}` in a source file. */
function unionFields(text: string, name: string): string[] {
  const body = new RegExp(`export interface ${name} \\{([\\s\\S]*?)\\n\\}`).exec(text)?.[1] ?? ''
  return [...body.replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/^\s+(\w+)\??:/gm)].map(f => f[1] as string)
}

describe('stream inspect --json', () => {
  const text = section('stream inspect --json')
  const buf = Buffer.alloc(8)
  const libxl: {[K in LibxlRecord['kind']]: LibxlRecord & {kind: K}} = {
    END: {kind: 'END'},
    LIBXC_CONTEXT: {kind: 'LIBXC_CONTEXT'},
    EMULATOR_XENSTORE_DATA: {kind: 'EMULATOR_XENSTORE_DATA', emulator: 2, index: 0, entries: [['k', 'v']]},
    EMULATOR_CONTEXT: {kind: 'EMULATOR_CONTEXT', emulator: 2, index: 0, blob: buf},
    CHECKPOINT_END: {kind: 'CHECKPOINT_END'},
    CHECKPOINT_STATE: {kind: 'CHECKPOINT_STATE', state: 'NEW'},
  }
  const libxc: {[K in LibxcRecord['kind']]: LibxcRecord & {kind: K}} = {
    END: {kind: 'END'},
    PAGE_DATA: {kind: 'PAGE_DATA', pfns: [1, 2], types: [0, 0], pages: [Buffer.alloc(8192)]},
    X86_PV_INFO: {kind: 'X86_PV_INFO', guestWidth: 8, ptLevels: 4},
    X86_PV_P2M_FRAMES: {kind: 'X86_PV_P2M_FRAMES', startPfn: 0, endPfn: 511, frames: [1n]},
    X86_PV_VCPU_BASIC: {kind: 'X86_PV_VCPU_BASIC', vcpuId: 0, context: buf},
    X86_PV_VCPU_EXTENDED: {kind: 'X86_PV_VCPU_EXTENDED', vcpuId: 0, context: buf},
    X86_PV_VCPU_XSAVE: {kind: 'X86_PV_VCPU_XSAVE', vcpuId: 0, context: buf},
    X86_PV_VCPU_MSRS: {kind: 'X86_PV_VCPU_MSRS', vcpuId: 0, context: buf},
    SHARED_INFO: {kind: 'SHARED_INFO', page: Buffer.alloc(4096)},
    X86_TSC_INFO: {kind: 'X86_TSC_INFO', mode: 0, khz: 1, nsec: 2n, incarnation: 0},
    HVM_CONTEXT: {kind: 'HVM_CONTEXT', context: buf},
    HVM_PARAMS: {kind: 'HVM_PARAMS', params: [{index: 1n, value: 2n}]},
    TOOLSTACK: {kind: 'TOOLSTACK', blob: buf},
    VERIFY: {kind: 'VERIFY'},
    CHECKPOINT: {kind: 'CHECKPOINT'},
    CHECKPOINT_DIRTY_PFN_LIST: {kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: [3, 4]},
    STATIC_DATA_END: {kind: 'STATIC_DATA_END'},
    X86_CPUID_POLICY: {kind: 'X86_CPUID_POLICY', leaves: [{leaf: 0, subleaf: 0, a: 0, b: 0, c: 0, d: 0}]},
    X86_MSR_POLICY: {kind: 'X86_MSR_POLICY', msrs: [{index: 1, flags: 0, value: 0n}]},
    OPTIONAL: {kind: 'OPTIONAL', type: 0x80000123, body: buf},
  }
  const back: {[K in BackChannelRecord['kind']]: BackChannelRecord & {kind: K}} = {
    CHECKPOINT_STATE: {kind: 'CHECKPOINT_STATE', state: 'SVM_READY'},
    CHECKPOINT_DIRTY_PFN_LIST: {kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: [5]},
  }
  const at = {offset: 0, index: 0, length: 8}
  const events: InspectEvent[] = [
    {layer: 'format', format: 'xl', sniffed: true},
    {layer: 'xl', header: {mandatoryFlags: 3, optionalFlags: 0, config: '{"c_info":{"name":"vm"}}'}, offset: 0, length: 100},
    {layer: 'libxl-header', header: {legacy: false}, offset: 100},
    {layer: 'libxc-header', image: {version: 3}, domain: {type: DOMAIN_TYPE.X86_HVM, pageShift: 12, xenMajor: 4, xenMinor: 17}, offset: 116},
    ...Object.values(libxl).map((record): InspectEvent => ({layer: 'libxl', record, ...at})),
    ...Object.values(libxc).map((record): InspectEvent => ({layer: 'libxc', record, ...at})),
    {layer: 'eof', offset: 1000, checkpoints: 2},
    ...Object.values(back).map((record): InspectEvent => ({layer: 'back', record, ...at})),
    {layer: 'eof', offset: 2000, checkpoints: 1, expecting: 'SVM_READY'},
  ]
  const maker = new RowMaker()
  const objects: JsonObject[] = events.flatMap(ev => [...[formatJson(ev)].filter((o): o is JsonObject => o !== undefined), ...maker.rows(ev).map(rowJson)])
  const ENVELOPE = {header: ['event', 'layer', 'offset', 'part', 'length'], record: ['event', 'layer', 'offset', 'index', 'type', 'typeId', 'length']}

  /** The table rows of the section whose first cell names `name`. */
  const rowsNaming = (name: string): string => text.split('\n').filter(l => l.startsWith('| ') && codes(l.split(' | ')[0] as string).has(name)).join('\n')

  it('every object carries the schema version the command writes, which the section gives', () => {
    const command = source('src/commands/stream/inspect.ts')
    expect(command).toMatch(/JSON\.stringify\(\{v: INSPECT_JSON_VERSION, \.\.\.o\}\)/)
    expect(command).toMatch(/export const INSPECT_JSON_VERSION = 1\b/)
    expect(text).toMatch(/schema version 1\b/)
    expectNamed(text, ['v'], 'stream inspect --json')
  })

  it('names every kind of object', () => {
    const kinds = new Set(objects.map(o => String(o.event)))
    expect([...kinds]).toEqual(['format', 'header', 'record', 'eof'])
    for (const k of [...kinds, 'summary', 'error']) subsection(text, k)
  })

  it('names the fields of format, eof and every header part', () => {
    for (const o of objects.filter(o => o.event === 'format' || o.event === 'eof')) expectNamed(subsection(text, String(o.event)), Object.keys(o), String(o.event))
    const headers = objects.filter(o => o.event === 'header')
    expect(headers.map(o => o.part)).toEqual(['savefile header', 'header', 'image header', 'domain header'])
    for (const o of headers) {
      expectNamed(subsection(text, 'header'), ENVELOPE.header, 'header')
      expectNamed(rowsNaming(String(o.part)), Object.keys(o).filter(k => !ENVELOPE.header.includes(k)), `header part ${o.part}`)
    }
  })

  it('names every record type and its fields', () => {
    const records = objects.filter(o => o.event === 'record')
    expect(records).toHaveLength(Object.keys(libxl).length + Object.keys(libxc).length + Object.keys(back).length)
    const recordText = subsection(text, 'record')
    for (const o of records) {
      expectNamed(recordText, ENVELOPE.record, 'record')
      // An unknown optional record shows its type in hex: the doc names it OPTIONAL.
      const type = o.layer === 'libxc' && /^0x/.test(String(o.type)) ? 'OPTIONAL' : String(o.type)
      const extra = Object.keys(o).filter(k => !ENVELOPE.record.includes(k))
      if (extra.length === 0) expectNamed(recordText, [type], `record ${type} (no more fields)`)
      else expectNamed(rowsNaming(type), extra, `record ${type}`)
    }
  })

  it('names the fields of the summary and of an error', () => {
    const summary = {format: 'xl' as const, streamType: 'plain' as const, records: {libxl: 1, libxc: 1, back: 0}, headers: 4, pages: {records: 1, pfns: 1, withData: 1, bytes: 4096}, dirtyPfns: 0, checkpoints: 0, end: 'END' as const}
    const ctx: SummaryContext = {summary, bytes: 100, sniffed: true, trailingBytes: 4}
    expectNamed(subsection(text, 'summary'), keysOf(summaryJson(ctx)), 'summary')
    const errors = [
      errorJson(new StreamError('libxc', 'truncated', 847, 'stream ends', {type: 1, name: 'PAGE_DATA', index: 3}), ctx),
      errorJson(new UnknownFormatError(0, Buffer.alloc(0)), ctx),
      errorJson(Object.assign(new Error('read failed'), {code: 'EIO', syscall: 'read'}), ctx),
    ]
    for (const e of errors) expectNamed(subsection(text, 'error'), Object.keys(e), 'error')
    const record = errors[0]?.record as JsonObject
    expectNamed(subsection(text, 'error'), Object.keys(record), 'error record')
  })

  it('names every error code, stream type, format and end', () => {
    expectNamed(subsection(text, 'error'), [...unionValues(source('src/toolstack/stream/errors.ts'), 'StreamErrorCode'), 'unknown-format'], 'error codes')
    expectNamed(subsection(text, 'summary'), unionValues(source('src/render/stream-inspect.ts'), 'DetectedStreamType'), 'stream types')
    expectNamed(subsection(text, 'summary'), ['END', 'eof', 'none'], 'ends')
    expectNamed(subsection(text, 'format'), ['xl', 'libxl', 'libxc', 'back-channel'], 'formats')
  })
})

describe('the README links it', () => {
  it('from its Commands section', () => {
    const readme = source('README.md')
    const commands = readme.slice(readme.indexOf('\n## Commands\n'), readme.indexOf('\n## ', readme.indexOf('\n## Commands\n') + 1))
    expect(commands).toContain('(docs/json.md)')
  })
})
