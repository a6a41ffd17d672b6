/**
 * Round trips: every record type, alone and in the streams Xen writes, goes encode -> the readers
 * (on a BufferSource) -> an equal record -> re-encode, byte-identical. Then the same as properties
 * over random valid streams (fast-check).
 */
import fc from 'fast-check'
import {describe, expect, it} from 'vitest'
import {
  BackChannelReader,
  BufferSource,
  DOMAIN_TYPE,
  LIBXC,
  LibxcReader,
  PAGE_TYPE,
  REC_TYPE_OPTIONAL,
  StreamError,
  XEN_CPUID_NO_SUBLEAF,
  decodeLibxcRecord,
  decodeLibxlRecord,
  encodeDomainHeader,
  encodeImageHeader,
  encodeLibxcRecord,
  encodeLibxlRecord,
  libxcTypeName,
  libxlTypeName,
  readMigrationStream,
  readRecordBody,
  readRecordHeader,
  type LibxcDomainHeader,
  type LibxcRecord,
  type LibxlRecord,
  type StreamType,
} from '../src/toolstack/stream/index.js'
import {
  arbAnyLibxcRecord,
  arbDirtyPfnList,
  arbEmulatorContext,
  arbStreamModel,
  arbXenstoreData,
  canonical,
  collect,
  encodeModel,
  itemsOf,
  reencode,
} from './support/arb-streams.js'
import {backChannelStream, checkpointedStream, libxcStream, libxlStream, pageContent, xlFile} from './support/synthetic-guest.js'

const HVM: LibxcDomainHeader = {type: DOMAIN_TYPE.X86_HVM, pageShift: 12, xenMajor: 4, xenMinor: 17}
const PV: LibxcDomainHeader = {type: DOMAIN_TYPE.X86_PV, pageShift: 12, xenMajor: 4, xenMinor: 17}
const join = (parts: Buffer[]): Buffer => Buffer.concat(parts)
const page = (n: number): Buffer => pageContent(42, n, 0)

// -------------------------------------------------------------------------------------------------
// Every libxc record type, read by LibxcReader in a stream where it is valid

interface LibxcCase {
  readonly record: LibxcRecord
  readonly domain: LibxcDomainHeader
  readonly streamType: StreamType
  /** Records that must precede it for the ordering rules. */
  readonly before: LibxcRecord[]
}

const SDE: LibxcRecord = {kind: 'STATIC_DATA_END'}
const CTX: LibxcRecord = {kind: 'HVM_CONTEXT', context: Buffer.from('vcpu state')}
const PV_INFO: LibxcRecord = {kind: 'X86_PV_INFO', guestWidth: 8, ptLevels: 4}
const vcpu = (kind: 'X86_PV_VCPU_BASIC' | 'X86_PV_VCPU_EXTENDED' | 'X86_PV_VCPU_XSAVE' | 'X86_PV_VCPU_MSRS', len: number): LibxcRecord => ({
  kind,
  vcpuId: 3,
  context: Buffer.alloc(len, 0x5a),
})

const LIBXC_CASES: [string, LibxcCase][] = [
  ['END (0x00)', {record: {kind: 'END'}, domain: HVM, streamType: 'plain', before: [SDE, CTX]}],
  [
    'PAGE_DATA (0x01)',
    {
      record: {
        kind: 'PAGE_DATA',
        pfns: [0, 0xfffffffffffff, 0x12345678, 7, 8, 9],
        types: [PAGE_TYPE.NOTAB, PAGE_TYPE.XTAB, PAGE_TYPE.L2TAB_PINNED, PAGE_TYPE.BROKEN, PAGE_TYPE.XALLOC, PAGE_TYPE.L4TAB],
        pages: [page(0), page(1), page(2)],
      },
      domain: HVM,
      streamType: 'plain',
      before: [SDE],
    },
  ],
  ['X86_PV_INFO (0x02)', {record: {kind: 'X86_PV_INFO', guestWidth: 4, ptLevels: 3}, domain: PV, streamType: 'plain', before: []}],
  [
    'X86_PV_P2M_FRAMES (0x03)',
    {
      record: {kind: 'X86_PV_P2M_FRAMES', startPfn: 0, endPfn: 0x3ffff, frames: [0x1234n, 0xffffffffffffffffn]},
      domain: PV,
      streamType: 'plain',
      before: [PV_INFO, SDE],
    },
  ],
  ['X86_PV_VCPU_BASIC (0x04)', {record: vcpu('X86_PV_VCPU_BASIC', 5136), domain: PV, streamType: 'plain', before: []}],
  ['X86_PV_VCPU_EXTENDED (0x05)', {record: vcpu('X86_PV_VCPU_EXTENDED', 131), domain: PV, streamType: 'plain', before: []}],
  ['X86_PV_VCPU_XSAVE (0x06)', {record: vcpu('X86_PV_VCPU_XSAVE', 0), domain: PV, streamType: 'plain', before: []}],
  ['SHARED_INFO (0x07)', {record: {kind: 'SHARED_INFO', page: page(7)}, domain: PV, streamType: 'plain', before: []}],
  [
    'X86_TSC_INFO (0x08)',
    {record: {kind: 'X86_TSC_INFO', mode: 2, khz: 0xffffffff, nsec: 0xffffffffffffffffn, incarnation: 9}, domain: HVM, streamType: 'plain', before: []},
  ],
  ['HVM_CONTEXT (0x09)', {record: {kind: 'HVM_CONTEXT', context: Buffer.from('odd-length ctx')}, domain: HVM, streamType: 'plain', before: []}],
  [
    'HVM_PARAMS (0x0a)',
    {
      record: {kind: 'HVM_PARAMS', params: [{index: 1n, value: 0xfeffcn}, {index: 0xffffffffffffffffn, value: 0n}]},
      domain: HVM,
      streamType: 'plain',
      before: [],
    },
  ],
  ['HVM_PARAMS with no params (0x0a)', {record: {kind: 'HVM_PARAMS', params: []}, domain: HVM, streamType: 'plain', before: []}],
  ['X86_PV_VCPU_MSRS (0x0c)', {record: vcpu('X86_PV_VCPU_MSRS', 48), domain: PV, streamType: 'plain', before: []}],
  ['VERIFY (0x0d)', {record: {kind: 'VERIFY'}, domain: HVM, streamType: 'plain', before: [SDE]}],
  ['CHECKPOINT (0x0e)', {record: {kind: 'CHECKPOINT'}, domain: HVM, streamType: 'remus', before: [SDE, CTX]}],
  ['STATIC_DATA_END (0x10)', {record: SDE, domain: HVM, streamType: 'plain', before: []}],
  [
    'X86_CPUID_POLICY (0x11)',
    {
      record: {
        kind: 'X86_CPUID_POLICY',
        leaves: [
          {leaf: 0, subleaf: XEN_CPUID_NO_SUBLEAF, a: 0xd, b: 0x756e6547, c: 0x6c65746e, d: 0x49656e69},
          {leaf: 0xffffffff, subleaf: 0, a: 0xffffffff, b: 0, c: 1, d: 2},
        ],
      },
      domain: PV,
      streamType: 'plain',
      before: [],
    },
  ],
  [
    'X86_MSR_POLICY (0x12)',
    {record: {kind: 'X86_MSR_POLICY', msrs: [{index: 0xc0000080, flags: 0, value: 0xffffffffffffffffn}]}, domain: HVM, streamType: 'plain', before: []},
  ],
  [
    'unknown OPTIONAL record (bit 31)',
    {record: {kind: 'OPTIONAL', type: 0x80000123, body: Buffer.from('skip me')}, domain: HVM, streamType: 'plain', before: []},
  ],
]

describe('every libxc record type round-trips through LibxcReader', () => {
  it('covers every type 0x00-0x12 but TOOLSTACK and CHECKPOINT_DIRTY_PFN_LIST (back channel, below)', () => {
    const covered = new Set(LIBXC_CASES.map(([, c]) => (c.record.kind === 'OPTIONAL' ? -1 : LIBXC[c.record.kind])))
    const missing = Object.values(LIBXC).filter((t) => !covered.has(t))
    expect(missing).toEqual([LIBXC.TOOLSTACK, LIBXC.CHECKPOINT_DIRTY_PFN_LIST])
  })

  it.each(LIBXC_CASES)('%s', async (_name, c) => {
    const before = c.before.flatMap(encodeLibxcRecord)
    const target = join(encodeLibxcRecord(c.record))
    const headers = join([encodeImageHeader(), encodeDomainHeader(c.domain)])
    const stream = join([headers, ...before, target])
    const reader = new LibxcReader(new BufferSource(stream), {streamType: c.streamType})
    await reader.readHeaders()
    for (const _ of c.before) await reader.next()
    const read = await reader.next()
    expect(canonical(read.record)).toEqual(canonical(c.record))
    expect(read.index).toBe(c.before.length)
    expect(read.offset).toBe(stream.length - target.length)
    expect(read.length).toBe(target.readUInt32LE(4))
    expect(target.length % 8).toBe(0)
    expect(join(encodeLibxcRecord(read.record)).equals(target)).toBe(true)
  })

  it('an unknown OPTIONAL record is returned and the stream goes on', async () => {
    const stream = join([
      encodeImageHeader(),
      encodeDomainHeader(HVM),
      ...[
        {kind: 'OPTIONAL', type: (REC_TYPE_OPTIONAL | 0x7fffffff) >>> 0, body: Buffer.alloc(0)},
        SDE,
        {kind: 'OPTIONAL', type: 0x80000013, body: Buffer.from([1, 2, 3])},
        CTX,
        {kind: 'END'},
      ].flatMap((r) => encodeLibxcRecord(r as LibxcRecord)),
    ])
    const events = await collect(readMigrationStream(new BufferSource(stream), {format: 'libxc', streamType: 'plain'}))
    expect(itemsOf(events).map((i) => i.record.kind)).toEqual(['OPTIONAL', 'STATIC_DATA_END', 'OPTIONAL', 'HVM_CONTEXT', 'END'])
    expect(reencode(events).equals(stream)).toBe(true)
  })

  it('TOOLSTACK (0x0b) encodes but is rejected on read', async () => {
    const stream = join([encodeImageHeader(), encodeDomainHeader(HVM), ...encodeLibxcRecord({kind: 'TOOLSTACK', blob: Buffer.from('x')})])
    const reader = new LibxcReader(new BufferSource(stream), {streamType: 'plain'})
    await reader.readHeaders()
    const err = await reader.next().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(StreamError)
    expect(err).toMatchObject({code: 'unknown-record', format: 'libxc', offset: 40, record: {name: 'TOOLSTACK', index: 0, type: 0x0b}})
  })
})

// -------------------------------------------------------------------------------------------------
// libxl records

async function readOneRecord(bytes: Buffer, format: 'libxl' | 'libxc') {
  const source = new BufferSource(bytes)
  const opts = {format, index: 0, nameOf: format === 'libxl' ? libxlTypeName : libxcTypeName}
  const raw = await readRecordBody(source, (await readRecordHeader(source, opts))!, opts)
  expect(source.remaining).toBe(0)
  return raw
}

const LIBXL_CASES: [string, LibxlRecord][] = [
  ['END (0)', {kind: 'END'}],
  ['LIBXC_CONTEXT (1)', {kind: 'LIBXC_CONTEXT'}],
  [
    'EMULATOR_XENSTORE_DATA (2)',
    {kind: 'EMULATOR_XENSTORE_DATA', emulator: 2, index: 0, entries: [['physmap/f0000000/start_addr', 'f0000000'], ['physmap/f0000000/name', 'vga.vram']]},
  ],
  ['EMULATOR_XENSTORE_DATA with no entries (2)', {kind: 'EMULATOR_XENSTORE_DATA', emulator: 1, index: 3, entries: []}],
  ['EMULATOR_CONTEXT (3)', {kind: 'EMULATOR_CONTEXT', emulator: 0, index: 1, blob: Buffer.from('QEVM\0\0\0\x03')}],
  ['CHECKPOINT_END (4)', {kind: 'CHECKPOINT_END'}],
  ['CHECKPOINT_STATE NEW (5)', {kind: 'CHECKPOINT_STATE', state: 'NEW'}],
  ['CHECKPOINT_STATE SVM_SUSPENDED (5)', {kind: 'CHECKPOINT_STATE', state: 'SVM_SUSPENDED'}],
  ['CHECKPOINT_STATE SVM_READY (5)', {kind: 'CHECKPOINT_STATE', state: 'SVM_READY'}],
  ['CHECKPOINT_STATE SVM_RESUMED (5)', {kind: 'CHECKPOINT_STATE', state: 'SVM_RESUMED'}],
]

describe('every libxl record type round-trips', () => {
  it.each(LIBXL_CASES)('%s', async (_name, record) => {
    const bytes = join(encodeLibxlRecord(record))
    const decoded = decodeLibxlRecord(await readOneRecord(bytes, 'libxl'))
    expect(canonical(decoded)).toEqual(canonical(record))
    expect(join(encodeLibxlRecord(decoded)).equals(bytes)).toBe(true)
  })
})

// -------------------------------------------------------------------------------------------------
// Whole streams as Xen writes them

describe('synthetic Xen streams round-trip through readMigrationStream', () => {
  const cases: [string, Buffer, 'xl' | 'libxl' | 'libxc', StreamType, string][] = [
    ['xl file (plain, with xenstore data)', xlFile({pages: 40, xenstoreData: true}), 'xl', 'plain', 'END'],
    ['libxl stream', libxlStream({pages: 9}), 'libxl', 'plain', 'END'],
    ['bare libxc stream', libxcStream({pages: 9}), 'libxc', 'plain', 'END'],
    ['Remus stream, read as remus', checkpointedStream({pages: 12}, 'remus', 3), 'libxl', 'remus', 'eof'],
    ['Remus stream, read as unknown', checkpointedStream({pages: 12, xenstoreData: true}, 'remus', 3), 'libxl', 'unknown', 'eof'],
    ['COLO stream, read as colo', checkpointedStream({pages: 12}, 'colo', 3), 'libxl', 'colo', 'eof'],
    ['COLO stream, read as unknown', checkpointedStream({pages: 12, xenstoreData: true}, 'colo', 4), 'libxl', 'unknown', 'eof'],
  ]

  it.each(cases)('%s', async (_name, bytes, format, streamType, last) => {
    const source = new BufferSource(bytes)
    const events = await collect(readMigrationStream(source, {format, streamType}))
    expect(source.remaining).toBe(0)
    const final = events.at(-1)!
    expect(final.layer === 'eof' ? 'eof' : final.layer === 'libxl' || final.layer === 'libxc' ? final.record.kind : final.layer).toBe(last)
    expect(reencode(events).equals(bytes)).toBe(true)
  })

  it('every libxl record type appears in these streams', async () => {
    const kinds = new Set<string>()
    const streams = [
      ['xl', xlFile({pages: 2, xenstoreData: true})],
      ['libxl', checkpointedStream({pages: 2, xenstoreData: true}, 'colo', 2)],
    ] as const
    for (const [format, bytes] of streams) {
      const events = await collect(readMigrationStream(new BufferSource(bytes), {format, streamType: 'unknown'}))
      for (const ev of events) if (ev.layer === 'libxl') kinds.add(ev.record.kind)
    }
    expect([...kinds].sort()).toEqual(['CHECKPOINT_END', 'CHECKPOINT_STATE', 'EMULATOR_CONTEXT', 'EMULATOR_XENSTORE_DATA', 'END', 'LIBXC_CONTEXT'])
  })

  it('a COLO stream counts its checkpoints', async () => {
    const events = await collect(readMigrationStream(new BufferSource(checkpointedStream({pages: 3}, 'colo', 3)), {format: 'libxl', streamType: 'unknown'}))
    expect(events.at(-1)).toMatchObject({layer: 'eof', checkpoints: 3})
  })
})

describe('back channel round-trips', () => {
  it('SVM_READY, SVM_RESUMED, then SVM_SUSPENDED, CHECKPOINT_DIRTY_PFN_LIST, SVM_READY, SVM_RESUMED', async () => {
    const dirty = (round: number): number[] => (round === 2 ? [] : [round, 0xfffffffffffff, 0x10000 + round])
    const bytes = backChannelStream(4, dirty)
    const reader = new BackChannelReader(new BufferSource(bytes), {p2mSize: 2 ** 52})
    const reads = []
    for (let r = await reader.next(true); r; r = await reader.next(true)) reads.push(r)
    expect(reads.map((r) => (r.record.kind === 'CHECKPOINT_STATE' ? r.record.state : 'DIRTY'))).toEqual([
      'SVM_READY', 'SVM_RESUMED',
      'SVM_SUSPENDED', 'DIRTY', 'SVM_READY', 'SVM_RESUMED',
      'SVM_SUSPENDED', 'DIRTY', 'SVM_READY', 'SVM_RESUMED',
      'SVM_SUSPENDED', 'DIRTY', 'SVM_READY', 'SVM_RESUMED',
    ])
    expect(reads.map((r) => r.index)).toEqual(reads.map((_, i) => i))
    expect(reads.filter((r) => r.record.kind === 'CHECKPOINT_DIRTY_PFN_LIST').map((r) => r.record.kind === 'CHECKPOINT_DIRTY_PFN_LIST' && r.record.pfns)).toEqual([dirty(1), dirty(2), dirty(3)])
    const again = join(
      reads.flatMap((r) => (r.record.kind === 'CHECKPOINT_STATE' ? encodeLibxlRecord(r.record) : encodeLibxcRecord(r.record))),
    )
    expect(again.equals(bytes)).toBe(true)
  })
})

// -------------------------------------------------------------------------------------------------
// Properties

describe('properties', () => {
  it('any single libxc record: encode -> frame reader -> decode -> equal -> re-encode identical', async () => {
    await fc.assert(
      fc.asyncProperty(arbAnyLibxcRecord, async (record) => {
        const bytes = join(encodeLibxcRecord(record))
        const decoded = decodeLibxcRecord(await readOneRecord(bytes, 'libxc'))
        expect(canonical(decoded)).toEqual(canonical(record))
        expect(join(encodeLibxcRecord(decoded)).equals(bytes)).toBe(true)
      }),
      {numRuns: 150},
    )
  })

  it('any libxl emulator record round-trips', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(arbXenstoreData, arbEmulatorContext), async (record) => {
        const bytes = join(encodeLibxlRecord(record))
        const decoded = decodeLibxlRecord(await readOneRecord(bytes, 'libxl'))
        expect(canonical(decoded)).toEqual(canonical(record))
        expect(join(encodeLibxlRecord(decoded)).equals(bytes)).toBe(true)
      }),
      {numRuns: 100},
    )
  })

  it('random valid streams (xl/libxl/libxc, HVM/PV, v2/v3, plain/Remus/COLO) round-trip byte-identically', async () => {
    await fc.assert(
      fc.asyncProperty(arbStreamModel, async (m) => {
        const bytes = encodeModel(m)
        const source = new BufferSource(bytes)
        const events = await collect(readMigrationStream(source, {format: m.outer, streamType: m.readAs}))
        expect(source.remaining).toBe(0)
        expect(canonical(itemsOf(events))).toEqual(canonical(m.items))
        expect(events.at(-1)?.layer).toBe(m.mode === 'plain' ? (m.outer === 'libxc' ? 'libxc' : 'libxl') : 'eof')
        expect(reencode(events).equals(bytes)).toBe(true)
      }),
      {numRuns: 80},
    )
  })

  it('random bare libxc streams round-trip through LibxcReader', async () => {
    const arbBare = arbStreamModel.map((m) => ({...m, outer: 'libxc' as const, items: m.items.filter((i) => i.layer === 'libxc')}))
    await fc.assert(
      fc.asyncProperty(arbBare, async (m) => {
        const bytes = encodeModel(m)
        const source = new BufferSource(bytes)
        const reader = new LibxcReader(source, {streamType: m.mode})
        const {image, domain} = await reader.readHeaders()
        const out: Buffer[] = [encodeImageHeader(image), encodeDomainHeader(domain)]
        const records: LibxcRecord[] = []
        while (!reader.ended && source.remaining > 0) {
          const read = await reader.next()
          records.push(read.record)
          out.push(...encodeLibxcRecord(read.record))
        }
        expect(image.version).toBe(m.version)
        expect(domain).toEqual(m.domain)
        expect(canonical(records)).toEqual(canonical(m.items.map((i) => i.record)))
        expect(join(out).equals(bytes)).toBe(true)
      }),
      {numRuns: 40},
    )
  })

  it('random back-channel cycles round-trip', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbDirtyPfnList, {minLength: 0, maxLength: 4}), async (lists) => {
        const pfns = lists.map((l) => (l.kind === 'CHECKPOINT_DIRTY_PFN_LIST' ? l.pfns : []))
        const bytes = backChannelStream(lists.length + 1, (round) => pfns[round - 1]!)
        const reader = new BackChannelReader(new BufferSource(bytes))
        const out: Buffer[] = []
        const got: number[][] = []
        for (let r = await reader.next(true); r; r = await reader.next(true)) {
          if (r.record.kind === 'CHECKPOINT_DIRTY_PFN_LIST') got.push(r.record.pfns)
          out.push(...(r.record.kind === 'CHECKPOINT_STATE' ? encodeLibxlRecord(r.record) : encodeLibxcRecord(r.record)))
        }
        expect(got).toEqual(pfns)
        expect(join(out).equals(bytes)).toBe(true)
      }),
      {numRuns: 50},
    )
  })
})
