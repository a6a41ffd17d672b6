/**
 * Golden sizes and bytes of the three wire formats. Every expected byte string below is written out
 * by hand from XEN-FACTS (§1.9 xl header, §2 libxl stream v2, §3 libxc stream v3), not produced by
 * our encoders: the encoders must produce them, and the readers must decode them to the expected
 * values.
 */
import {describe, expect, it} from 'vitest'
import {
  BufferSource,
  CPUID_LEAF_SIZE,
  DOMAIN_HEADER_SIZE,
  DOMAIN_TYPE,
  IMAGE_HEADER_SIZE,
  LIBXC,
  LIBXL,
  LIBXL_HEADER_SIZE,
  MSR_ENTRY_SIZE,
  PAGE_TYPE,
  RECORD_HEADER_SIZE,
  REC_LENGTH_MAX,
  TSC_INFO_SIZE,
  XEN_CPUID_NO_SUBLEAF,
  XL_HEADER_SIZE,
  XL_MAGIC,
  decodeDomainHeader,
  decodeImageHeader,
  decodeLibxcRecord,
  decodeLibxlHeader,
  decodeLibxlRecord,
  encodeDomainHeader,
  encodeImageHeader,
  encodeLibxcRecord,
  encodeLibxlHeader,
  encodeLibxlRecord,
  encodeRecordHeader,
  encodeXlHeader,
  readMigrationStream,
  readRecordBody,
  readRecordHeader,
  readXlHeader,
  libxcTypeName,
  libxlTypeName,
  type LibxcRecord,
  type LibxlRecord,
  type PageDataRecord,
  type StreamEvent,
} from '../src/toolstack/stream/index.js'
import {canonical, collect} from './support/arb-streams.js'

/** Hex written with spaces, line breaks and `#` comments for readability. */
function hx(s: string): Buffer {
  const clean = s.replace(/#[^\n]*/g, '').replace(/\s+/g, '')
  if (!/^([0-9a-f]{2})*$/.test(clean)) throw new Error(`bad hex literal: ${s}`)
  return Buffer.from(clean, 'hex')
}

const join = (parts: Buffer[]): Buffer => Buffer.concat(parts)

/** Index of the first differing byte, or -1: a readable failure for long buffers. */
function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i
  return -1
}

async function decodeOneLibxc(bytes: Buffer): Promise<LibxcRecord> {
  const source = new BufferSource(bytes)
  const opts = {format: 'libxc' as const, index: 0, nameOf: libxcTypeName}
  const rec = decodeLibxcRecord(await readRecordBody(source, (await readRecordHeader(source, opts))!, opts))
  expect(source.remaining).toBe(0)
  return rec
}

async function decodeOneLibxl(bytes: Buffer): Promise<LibxlRecord> {
  const source = new BufferSource(bytes)
  const opts = {format: 'libxl' as const, index: 0, nameOf: libxlTypeName}
  const rec = decodeLibxlRecord(await readRecordBody(source, (await readRecordHeader(source, opts))!, opts))
  expect(source.remaining).toBe(0)
  return rec
}

// -------------------------------------------------------------------------------------------------
// Golden byte strings (XEN-FACTS)

/** §1.9: "Xen saved domain, xl format\n \0 \r", exactly 32 bytes. */
const XL_MAGIC_HEX = '58656e20736176656420646f6d61696e2c20786c20666f726d61740a2000200d'

/** §1.9: xl header with the JSON config `{"a":1}`: flags JSON|STREAMv2, optional data = u32 len + text + NUL. */
const XL_HEADER_GOLDEN = hx(`
  ${XL_MAGIC_HEX}
  04030201           # byteorder 0x01020304 in host (little-endian) order
  03000000           # mandatory_flags: bit 0 JSON, bit 1 STREAMv2
  00000000           # optional_flags
  0c000000           # optional_data_len = 4 + 8
  08000000           # config_len, including the NUL
  7b2261223a317d00   # {"a":1} NUL
`)

/** §2.1: "LibxlFmt", version 2, options 0, big-endian. */
const LIBXL_HEADER_GOLDEN = hx('4c6962786c466d74 00000002 00000000')

/** §3.1: marker, "XENF", version 3, options 0 (little-endian body), reserved 0; big-endian. */
const IMAGE_HEADER_GOLDEN = hx('ffffffffffffffff 58454e46 00000003 0000 0000 00000000')

/** §3.2: x86 HVM (2), page_shift 12, reserved 0, Xen 4.17; little-endian. */
const DOMAIN_HEADER_GOLDEN = hx('02000000 0c00 0000 04000000 11000000')

/** §3.3 / §2.2: record header {u32 type; u32 length}, little-endian: X86_CPUID_POLICY of 72 bytes. */
const RECORD_HEADER_GOLDEN = hx('11000000 48000000')

/** §2.3: CHECKPOINT_STATE: type 5, length 4, u32 id, 4 bytes of zero padding. */
const CHECKPOINT_STATE_NEW_GOLDEN = hx('05000000 04000000 00000000 00000000')
const CHECKPOINT_STATE_READY_GOLDEN = hx('05000000 04000000 02000000 00000000')

const PAGE_A = Buffer.alloc(4096, 0xa5)
const PAGE_C = Buffer.alloc(4096, 0x3c)
/**
 * §3.4 PAGE_DATA: count 3, _res1 0, three pfn words (type in bits 63-60, reserved 59-52, pfn 51-0),
 * then the data of the two pages whose type carries data (NOTAB, L1TAB pinned), in pfn order. XTAB
 * carries none. Length 8 + 3*8 + 2*4096 = 8224 = 0x2020, already 8-aligned: no padding.
 */
const PAGE_DATA_HEAD_GOLDEN = hx(`
  01000000 20200000
  03000000 00000000
  0100000000000000
  452301efcdab00f0
  436587a9cbed0f90
`)
const PAGE_DATA_GOLDEN = join([PAGE_DATA_HEAD_GOLDEN, PAGE_A, PAGE_C])
const PAGE_DATA_RECORD: PageDataRecord = {
  kind: 'PAGE_DATA',
  pfns: [0x1, 0xabcdef012345, 0xfedcba9876543],
  types: [PAGE_TYPE.NOTAB, PAGE_TYPE.XTAB, PAGE_TYPE.L1TAB_PINNED],
  pages: [PAGE_A, PAGE_C],
}

/** §3.4 X86_TSC_INFO: mode, khz, nsec, incarnation, _res1 (24 bytes). */
const TSC_GOLDEN = hx('08000000 18000000 01000000 009f2400 efcdab8967452301 07000000 00000000')

/** §3.4 X86_CPUID_POLICY: one xen_cpuid_leaf_t {leaf, subleaf, a, b, c, d} (24 bytes): "GenuineIntel". */
const CPUID_GOLDEN = hx('11000000 18000000 00000000 ffffffff 0d000000 47656e75 6e74656c 696e6549')

/** §3.4 X86_MSR_POLICY: one xen_msr_entry_t {u32 idx; u32 flags; u64 val} (16 bytes). */
const MSR_GOLDEN = hx('12000000 10000000 ce000000 00000000 0000008000000000')

/** §3.4 HVM_PARAMS: count 1, _res1, {u64 index; u64 value}: STORE_PFN = 0xfeffc. */
const HVM_PARAMS_GOLDEN = hx('0a000000 18000000 01000000 00000000 0100000000000000 fcef0f0000000000')

/** §2.3 EMULATOR_CONTEXT: emulator id 2 (qemu upstream), index 0, blob "abc", 5 bytes padding. */
const EMULATOR_CONTEXT_GOLDEN = hx('03000000 0b000000 02000000 00000000 616263 0000000000')

/** §2.3 EMULATOR_XENSTORE_DATA: emulator header then "a\0b\0", 4 bytes padding. */
const XENSTORE_GOLDEN = hx('02000000 0c000000 02000000 00000000 61006200 00000000')

/** Empty records: libxc END, libxl LIBXC_CONTEXT, libxc STATIC_DATA_END, libxl END. */
const LIBXC_END_GOLDEN = hx('00000000 00000000')
const LIBXC_CONTEXT_GOLDEN = hx('01000000 00000000')
const STATIC_DATA_END_GOLDEN = hx('10000000 00000000')
const LIBXL_END_GOLDEN = hx('00000000 00000000')

// -------------------------------------------------------------------------------------------------

describe('golden sizes', () => {
  it.each([
    ['libxc image header', IMAGE_HEADER_SIZE, 24],
    ['libxc domain header', DOMAIN_HEADER_SIZE, 16],
    ['record header', RECORD_HEADER_SIZE, 8],
    ['X86_TSC_INFO body', TSC_INFO_SIZE, 24],
    ['CPUID leaf', CPUID_LEAF_SIZE, 24],
    ['MSR entry', MSR_ENTRY_SIZE, 16],
    ['xl header', XL_HEADER_SIZE, 48],
    ['libxl header', LIBXL_HEADER_SIZE, 16],
  ])('%s is %i bytes', (_name, constant, expected) => {
    expect(constant).toBe(expected)
  })

  it('encoders produce headers of those sizes', () => {
    expect(encodeImageHeader().length).toBe(24)
    expect(encodeDomainHeader({type: DOMAIN_TYPE.X86_PV, pageShift: 12, xenMajor: 4, xenMinor: 19}).length).toBe(16)
    expect(encodeRecordHeader(LIBXC.END, 0).length).toBe(8)
    expect(encodeXlHeader().length).toBe(48)
    expect(encodeLibxlHeader().length).toBe(16)
    expect(XL_MAGIC.length).toBe(32)
  })

  it('records carry bodies of those sizes', () => {
    const bodyLength = (parts: Buffer[]): number => parts[0]!.readUInt32LE(4)
    expect(bodyLength(encodeLibxcRecord({kind: 'X86_TSC_INFO', mode: 0, khz: 1, nsec: 2n, incarnation: 3}))).toBe(24)
    const leaf = {leaf: 1, subleaf: 2, a: 3, b: 4, c: 5, d: 6}
    expect(bodyLength(encodeLibxcRecord({kind: 'X86_CPUID_POLICY', leaves: [leaf, leaf, leaf]}))).toBe(3 * 24)
    const msr = {index: 1, flags: 0, value: 2n}
    expect(bodyLength(encodeLibxcRecord({kind: 'X86_MSR_POLICY', msrs: [msr, msr]}))).toBe(2 * 16)
  })

  it('REC_LENGTH_MAX is 128 MiB', () => {
    expect(REC_LENGTH_MAX).toBe(128 * 1024 * 1024)
  })
})

describe('golden bytes: headers', () => {
  it('xl magic', () => {
    expect(XL_MAGIC.toString('hex')).toBe(XL_MAGIC_HEX)
  })

  it('xl header with a small JSON config', async () => {
    expect(XL_HEADER_GOLDEN.length).toBe(60)
    expect(encodeXlHeader({config: '{"a":1}'}).toString('hex')).toBe(XL_HEADER_GOLDEN.toString('hex'))
    const source = new BufferSource(XL_HEADER_GOLDEN)
    expect(await readXlHeader(source)).toEqual({mandatoryFlags: 3, optionalFlags: 0, config: '{"a":1}'})
    expect(source.remaining).toBe(0)
  })

  it('xl header without config: STREAMv2 only, no optional data', () => {
    expect(encodeXlHeader().toString('hex')).toBe(`${XL_MAGIC_HEX}04030201020000000000000000000000`)
  })

  it('libxl header', () => {
    expect(encodeLibxlHeader().toString('hex')).toBe(LIBXL_HEADER_GOLDEN.toString('hex'))
    expect(decodeLibxlHeader(LIBXL_HEADER_GOLDEN)).toEqual({legacy: false})
    // The legacy converter's bit 1.
    expect(encodeLibxlHeader({legacy: true}).toString('hex')).toBe('4c6962786c466d740000000200000002')
  })

  it('libxc image header (v3)', () => {
    expect(encodeImageHeader().toString('hex')).toBe(IMAGE_HEADER_GOLDEN.toString('hex'))
    expect(decodeImageHeader(IMAGE_HEADER_GOLDEN)).toEqual({version: 3})
  })

  it('libxc domain header (x86 HVM, Xen 4.17)', () => {
    const h = {type: DOMAIN_TYPE.X86_HVM, pageShift: 12, xenMajor: 4, xenMinor: 17}
    expect(encodeDomainHeader(h).toString('hex')).toBe(DOMAIN_HEADER_GOLDEN.toString('hex'))
    expect(decodeDomainHeader(DOMAIN_HEADER_GOLDEN)).toEqual(h)
  })

  it('record header', async () => {
    expect(encodeRecordHeader(LIBXC.X86_CPUID_POLICY, 72).toString('hex')).toBe(RECORD_HEADER_GOLDEN.toString('hex'))
    const h = await readRecordHeader(new BufferSource(RECORD_HEADER_GOLDEN, 1000), {format: 'libxc', index: 0, nameOf: libxcTypeName})
    expect(h).toEqual({type: 0x11, length: 72, offset: 1000})
  })
})

describe('golden bytes: records', () => {
  const libxcCases: [string, LibxcRecord, Buffer][] = [
    ['END', {kind: 'END'}, LIBXC_END_GOLDEN],
    ['STATIC_DATA_END', {kind: 'STATIC_DATA_END'}, STATIC_DATA_END_GOLDEN],
    ['PAGE_DATA (NOTAB, XTAB with high pfn bits, pinned L1 with a 52-bit pfn)', PAGE_DATA_RECORD, PAGE_DATA_GOLDEN],
    ['X86_TSC_INFO', {kind: 'X86_TSC_INFO', mode: 1, khz: 2_400_000, nsec: 0x0123456789abcdefn, incarnation: 7}, TSC_GOLDEN],
    [
      'X86_CPUID_POLICY',
      {kind: 'X86_CPUID_POLICY', leaves: [{leaf: 0, subleaf: XEN_CPUID_NO_SUBLEAF, a: 0xd, b: 0x756e6547, c: 0x6c65746e, d: 0x49656e69}]},
      CPUID_GOLDEN,
    ],
    ['X86_MSR_POLICY', {kind: 'X86_MSR_POLICY', msrs: [{index: 0xce, flags: 0, value: 0x80000000n}]}, MSR_GOLDEN],
    ['HVM_PARAMS', {kind: 'HVM_PARAMS', params: [{index: 1n, value: 0xfeffcn}]}, HVM_PARAMS_GOLDEN],
  ]

  it.each(libxcCases)('libxc %s encodes to the golden bytes and decodes back', async (_name, record, golden) => {
    expect(join(encodeLibxcRecord(record)).toString('hex')).toBe(golden.toString('hex'))
    expect(canonical(await decodeOneLibxc(golden))).toEqual(canonical(record))
  })

  it('PAGE_DATA pfn words put the type in bits 63-60 and the pfn in bits 51-0', () => {
    const words = [0, 1, 2].map((i) => PAGE_DATA_GOLDEN.readBigUInt64LE(16 + 8 * i))
    expect(words).toEqual([0x0000000000000001n, 0xf000abcdef012345n, 0x900fedcba9876543n])
    for (const [i, w] of words.entries()) {
      expect(Number(w >> 60n)).toBe(PAGE_DATA_RECORD.types[i])
      expect((w >> 52n) & 0xffn).toBe(0n)
      expect(Number(w & 0xfffffffffffffn)).toBe(PAGE_DATA_RECORD.pfns[i])
    }
  })

  it('PAGE_DATA with the largest pfn and every data-less type', () => {
    const rec: LibxcRecord = {
      kind: 'PAGE_DATA',
      pfns: [2 ** 52 - 1, 0, 0x100000000],
      types: [PAGE_TYPE.BROKEN, PAGE_TYPE.XALLOC, PAGE_TYPE.L4TAB_PINNED],
      pages: [PAGE_A],
    }
    const head = hx('01000000 20100000 03000000 00000000 ffffffffffff0fd0 00000000000000e0 00000000010000c0')
    expect(join(encodeLibxcRecord(rec)).toString('hex')).toBe(join([head, PAGE_A]).toString('hex'))
  })

  const libxlCases: [string, LibxlRecord, Buffer][] = [
    ['LIBXC_CONTEXT', {kind: 'LIBXC_CONTEXT'}, LIBXC_CONTEXT_GOLDEN],
    ['END', {kind: 'END'}, LIBXL_END_GOLDEN],
    ['CHECKPOINT_END', {kind: 'CHECKPOINT_END'}, hx('04000000 00000000')],
    ['CHECKPOINT_STATE(NEW)', {kind: 'CHECKPOINT_STATE', state: 'NEW'}, CHECKPOINT_STATE_NEW_GOLDEN],
    ['CHECKPOINT_STATE(SVM_READY)', {kind: 'CHECKPOINT_STATE', state: 'SVM_READY'}, CHECKPOINT_STATE_READY_GOLDEN],
    ['EMULATOR_CONTEXT', {kind: 'EMULATOR_CONTEXT', emulator: 2, index: 0, blob: Buffer.from('abc')}, EMULATOR_CONTEXT_GOLDEN],
    ['EMULATOR_XENSTORE_DATA', {kind: 'EMULATOR_XENSTORE_DATA', emulator: 2, index: 0, entries: [['a', 'b']]}, XENSTORE_GOLDEN],
  ]

  it.each(libxlCases)('libxl %s encodes to the golden bytes and decodes back', async (_name, record, golden) => {
    expect(join(encodeLibxlRecord(record)).toString('hex')).toBe(golden.toString('hex'))
    expect(canonical(await decodeOneLibxl(golden))).toEqual(canonical(record))
  })

  it('record type numbers are Xen\'s', () => {
    expect(LIBXC).toEqual({
      END: 0x00, PAGE_DATA: 0x01, X86_PV_INFO: 0x02, X86_PV_P2M_FRAMES: 0x03, X86_PV_VCPU_BASIC: 0x04,
      X86_PV_VCPU_EXTENDED: 0x05, X86_PV_VCPU_XSAVE: 0x06, SHARED_INFO: 0x07, X86_TSC_INFO: 0x08,
      HVM_CONTEXT: 0x09, HVM_PARAMS: 0x0a, TOOLSTACK: 0x0b, X86_PV_VCPU_MSRS: 0x0c, VERIFY: 0x0d,
      CHECKPOINT: 0x0e, CHECKPOINT_DIRTY_PFN_LIST: 0x0f, STATIC_DATA_END: 0x10, X86_CPUID_POLICY: 0x11,
      X86_MSR_POLICY: 0x12,
    })
    expect(LIBXL).toEqual({END: 0, LIBXC_CONTEXT: 1, EMULATOR_XENSTORE_DATA: 2, EMULATOR_CONTEXT: 3, CHECKPOINT_END: 4, CHECKPOINT_STATE: 5})
  })
})

describe('golden bytes: a whole xl stream', () => {
  // xl header, libxl header, LIBXC_CONTEXT, libxc headers, STATIC_DATA_END, one page, TSC,
  // HVM_CONTEXT "ctx", HVM_PARAMS, libxc END, EMULATOR_CONTEXT, libxl END.
  const PAGE_ONE = hx('01000000 10100000 01000000 00000000 0500000000000000')
  const HVM_CONTEXT_GOLDEN = hx('09000000 03000000 637478 0000000000')
  const parts = [
    XL_HEADER_GOLDEN,
    LIBXL_HEADER_GOLDEN,
    LIBXC_CONTEXT_GOLDEN,
    IMAGE_HEADER_GOLDEN,
    DOMAIN_HEADER_GOLDEN,
    STATIC_DATA_END_GOLDEN,
    join([PAGE_ONE, PAGE_C]),
    TSC_GOLDEN,
    HVM_CONTEXT_GOLDEN,
    HVM_PARAMS_GOLDEN,
    LIBXC_END_GOLDEN,
    EMULATOR_CONTEXT_GOLDEN,
    LIBXL_END_GOLDEN,
  ]
  const stream = join(parts)
  const offsets = parts.map((_, i) => parts.slice(0, i).reduce((n, p) => n + p.length, 0))

  it('reads layer by layer, with each event at its offset', async () => {
    const events = await collect(readMigrationStream(new BufferSource(stream), {format: 'xl', streamType: 'plain'}))
    const summary = events.map((e: StreamEvent) => {
      if (e.layer === 'libxl' || e.layer === 'libxc') return [e.layer, e.record.kind, e.offset, e.index, e.length]
      return [e.layer, e.offset]
    })
    expect(summary).toEqual([
      ['xl', 0],
      ['libxl-header', 60],
      ['libxl', 'LIBXC_CONTEXT', offsets[2], 0, 0],
      ['libxc-header', offsets[3]],
      ['libxc', 'STATIC_DATA_END', offsets[5], 0, 0],
      ['libxc', 'PAGE_DATA', offsets[6], 1, 8 + 8 + 4096],
      ['libxc', 'X86_TSC_INFO', offsets[7], 2, 24],
      ['libxc', 'HVM_CONTEXT', offsets[8], 3, 3],
      ['libxc', 'HVM_PARAMS', offsets[9], 4, 24],
      ['libxc', 'END', offsets[10], 5, 0],
      ['libxl', 'EMULATOR_CONTEXT', offsets[11], 1, 11],
      ['libxl', 'END', offsets[12], 2, 0],
    ])
    expect(offsets[3]).toBe(60 + 16 + 8)
    const page = events.find((e) => e.layer === 'libxc' && e.record.kind === 'PAGE_DATA')
    expect(page?.layer === 'libxc' && page.record.kind === 'PAGE_DATA' && page.record.pfns).toEqual([5])
  })

  it('is what the encoders write for the same records', () => {
    const encoded = join([
      encodeXlHeader({config: '{"a":1}'}),
      encodeLibxlHeader(),
      ...encodeLibxlRecord({kind: 'LIBXC_CONTEXT'}),
      encodeImageHeader(),
      encodeDomainHeader({type: DOMAIN_TYPE.X86_HVM, pageShift: 12, xenMajor: 4, xenMinor: 17}),
      ...[
        {kind: 'STATIC_DATA_END'},
        {kind: 'PAGE_DATA', pfns: [5], types: [PAGE_TYPE.NOTAB], pages: [PAGE_C]},
        {kind: 'X86_TSC_INFO', mode: 1, khz: 2_400_000, nsec: 0x0123456789abcdefn, incarnation: 7},
        {kind: 'HVM_CONTEXT', context: Buffer.from('ctx')},
        {kind: 'HVM_PARAMS', params: [{index: 1n, value: 0xfeffcn}]},
        {kind: 'END'},
      ].flatMap((r) => encodeLibxcRecord(r as LibxcRecord)),
      ...encodeLibxlRecord({kind: 'EMULATOR_CONTEXT', emulator: 2, index: 0, blob: Buffer.from('abc')}),
      ...encodeLibxlRecord({kind: 'END'}),
    ])
    expect(encoded.length).toBe(stream.length)
    expect(firstDifference(encoded, stream)).toBe(-1)
  })
})
