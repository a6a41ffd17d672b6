/**
 * Malformed streams. Every row is a stream built by mutating a valid synthetic stream or by hand,
 * the way to read it, and what the reader must say: a StreamError (never another exception) with
 * its code, a piece of its message and, where it means something, the format, record name, record
 * index and byte offset it names. Truncations are generated over every boundary of a real stream.
 * Fuzzing then checks that no mutation of a valid stream escapes as anything but a StreamError and
 * that no read asks for more than a record can hold.
 */
import fc from 'fast-check'
import {describe, expect, it} from 'vitest'
import {
  BufferSource,
  CHECKPOINT_STATE,
  LIBXC,
  LIBXL,
  LibxcSequence,
  PAGE_SIZE,
  REC_LENGTH_MAX,
  StreamError,
  XL_OPTIONAL_DATA_MAX,
  encodeLibxcRecord,
  encodeLibxlRecord,
  encodeRecordHeader,
  type LibxcRecord,
  type LibxlRecord,
  type StreamErrorCode,
  type StreamFormat,
} from '../src/toolstack/stream/index.js'
import {
  CountingSource,
  HVM_417,
  PV_417,
  SMALL_GUEST,
  StreamLayout,
  checkpointedLayout,
  patched,
  spliced,
  truncationCases,
  tryRead,
  u16be,
  u32be,
  u32le,
  u64le,
  words,
  xlPlainLayout,
  readAll,
  type ReadMode,
} from './support/malformed-streams.js'
import {backChannelStream, checkpointedStream, endOfCheckpoint, pageContent, xlFile} from './support/synthetic-guest.js'

const ROW_TIMEOUT = 2000
const READ_BOUND = REC_LENGTH_MAX + 8

interface Where {
  readonly format: StreamFormat
  readonly offset: number
  readonly record?: {readonly name: string; readonly index: number}
  readonly part?: string
}

interface Row {
  readonly name: string
  readonly bytes: Buffer
  readonly mode: ReadMode
  readonly code: StreamErrorCode
  /** A substring of the error's detail. */
  readonly message: string
  /** Where the error must point; omitted only where no single place is meaningful. */
  readonly where?: Where
  /** Bound on the largest read() the reader may ask for. */
  readonly maxRead?: number
}

const XL: ReadMode = {format: 'xl', streamType: 'plain'}
const LIBXL_REMUS: ReadMode = {format: 'libxl', streamType: 'remus'}
const LIBXL_COLO: ReadMode = {format: 'libxl', streamType: 'colo'}
const LIBXC_PLAIN: ReadMode = {format: 'libxc', streamType: 'plain'}
const BACK: ReadMode = {format: 'back-channel'}

/** Where a part of a layout is: a record (by name and occurrence) or a header part. */
function at(l: StreamLayout, format: StreamFormat, name: string, nth = 0): Where {
  const p = l.find(format, name, nth)
  return p.kind === 'record' ? {format, offset: p.offset, record: {name: p.name!, index: p.index!}} : {format, offset: p.offset, part: p.kind}
}

/** Offset of byte `field` of the body of a record of a layout. */
function bodyAt(l: StreamLayout, format: StreamFormat, name: string, field: number, nth = 0): number {
  return l.find(format, name, nth).offset + 8 + field
}

// -------------------------------------------------------------------------------------------------
// The valid streams the rows start from

const base = xlPlainLayout()
const BASE = base.bytes()
const libxlHdr = base.find('libxl', 'header').offset
const imageHdr = base.find('libxc', 'image header').offset
const domainHdr = base.find('libxc', 'domain header').offset
/** Where the libxl records after the libxc stream start (the EMULATOR_XENSTORE_DATA record). */
const afterLibxc = base.find('libxl', 'EMULATOR_XENSTORE_DATA').offset

const remus = checkpointedLayout({pages: 3}, 'remus', 2)
const REMUS = remus.bytes()
const colo = checkpointedLayout({pages: 3}, 'colo', 3)
const COLO = colo.bytes()

const hvm = (version = 3): StreamLayout => new StreamLayout().libxcHeaders(HVM_417, version)
const pv = (version = 3): StreamLayout => new StreamLayout().libxcHeaders(PV_417, version)

const SDE: LibxcRecord = {kind: 'STATIC_DATA_END'}
const CTX: LibxcRecord = {kind: 'HVM_CONTEXT', context: Buffer.from('ctx')}
const TSC: LibxcRecord = {kind: 'X86_TSC_INFO', mode: 0, khz: 1000, nsec: 1n, incarnation: 0}
const PV_INFO: LibxcRecord = {kind: 'X86_PV_INFO', guestWidth: 8, ptLevels: 4}
const ONE_PAGE: LibxcRecord = {kind: 'PAGE_DATA', pfns: [1], types: [0], pages: [pageContent(1, 1, 0)]}
const NEW: LibxlRecord = {kind: 'CHECKPOINT_STATE', state: 'NEW'}
const libxlBytes = (r: LibxlRecord): Buffer => Buffer.concat(encodeLibxlRecord(r))
const libxcBytes = (r: LibxcRecord): Buffer => Buffer.concat(encodeLibxcRecord(r))

/** A hand-built stream, returned with its layout so rows can say where the fault is. */
function built(l: StreamLayout, format: StreamFormat, name: string, nth = 0): {bytes: Buffer; where: Where} {
  return {bytes: l.bytes(), where: at(l, format, name, nth)}
}

// -------------------------------------------------------------------------------------------------
// The table

const ROWS: Row[] = [
  // ---- xl savefile header
  {
    name: 'xl: bad magic',
    bytes: patched(BASE, 0, Buffer.from('Xen saved domain, XL format')),
    mode: XL,
    code: 'bad-magic',
    message: 'File has wrong magic number',
    where: {format: 'xl', offset: 0, part: 'savefile header'},
  },
  {
    name: 'xl: byte order mark written big-endian',
    bytes: patched(BASE, 32, u32be(0x01020304)),
    mode: XL,
    code: 'bad-options',
    message: 'File has wrong byte order (0x04030201)',
    where: {format: 'xl', offset: 0, part: 'savefile header'},
  },
  {
    name: 'xl: unknown mandatory flag bit 2',
    bytes: patched(BASE, 36, u32le(0x7)),
    mode: XL,
    code: 'bad-options',
    message: 'mandatory flag(s) 0x4 which are not supported',
    where: {format: 'xl', offset: 0, part: 'savefile header'},
  },
  {
    name: 'xl: unknown mandatory flag bit 31',
    bytes: patched(BASE, 36, u32le(0x80000003)),
    mode: XL,
    code: 'bad-options',
    message: 'mandatory flag(s) 0x80000000 which are not supported',
    where: {format: 'xl', offset: 0, part: 'savefile header'},
  },
  {
    name: 'xl: legacy stream (STREAMv2 flag clear)',
    bytes: patched(BASE, 36, u32le(0x1)),
    mode: XL,
    code: 'bad-version',
    message: 'legacy (pre-STREAMv2) savefile',
    where: {format: 'xl', offset: 0, part: 'savefile header'},
  },
  {
    name: 'xl: optional data length over the bound',
    bytes: patched(BASE, 44, u32le(XL_OPTIONAL_DATA_MAX + 1)),
    mode: XL,
    code: 'too-long',
    message: `optional data of ${XL_OPTIONAL_DATA_MAX + 1} bytes exceeds the maximum`,
    where: {format: 'xl', offset: 0, part: 'savefile header'},
    maxRead: 48,
  },
  {
    name: 'xl: config length beyond the optional data',
    bytes: patched(BASE, 48, u32le(0x10000)),
    mode: XL,
    code: 'truncated',
    message: 'Savefile truncated: config of 65536 bytes in 287 bytes',
    where: {format: 'xl', offset: 48, part: 'optional data'},
  },
  {
    name: 'xl: optional data too short for the config length',
    bytes: Buffer.concat([patched(BASE.subarray(0, 48), 44, u32le(3)), Buffer.from([1, 0, 0])]),
    mode: XL,
    code: 'truncated',
    message: 'no room for the config length',
    where: {format: 'xl', offset: 48, part: 'optional data'},
  },

  // ---- libxl header
  {
    name: 'libxl: bad ident',
    bytes: patched(BASE, libxlHdr + 7, [0x75]),
    mode: XL,
    code: 'bad-magic',
    message: 'ident 0x4c6962786c466d75, expected 0x4c6962786c466d74',
    where: {format: 'libxl', offset: libxlHdr, part: 'header'},
  },
  {
    name: 'libxl: version 3',
    bytes: patched(BASE, libxlHdr + 8, u32be(3)),
    mode: XL,
    code: 'bad-version',
    message: 'version 3, expected 2',
    where: {format: 'libxl', offset: libxlHdr, part: 'header'},
  },
  {
    name: 'libxl: version 1',
    bytes: patched(BASE, libxlHdr + 8, u32be(1)),
    mode: XL,
    code: 'bad-version',
    message: 'version 1, expected 2',
    where: {format: 'libxl', offset: libxlHdr, part: 'header'},
  },
  {
    name: 'libxl: big-endian option bit',
    bytes: patched(BASE, libxlHdr + 12, u32be(1)),
    mode: XL,
    code: 'bad-options',
    message: 'big-endian',
    where: {format: 'libxl', offset: libxlHdr, part: 'header'},
  },
  {
    name: 'libxl: reserved option bit 2',
    bytes: patched(BASE, libxlHdr + 12, u32be(4)),
    mode: XL,
    code: 'reserved',
    message: 'reserved option bits set: 0x00000004',
    where: {format: 'libxl', offset: libxlHdr, part: 'header'},
  },
  {
    name: 'libxl: reserved option bit 31',
    bytes: patched(BASE, libxlHdr + 12, u32be(0x80000000)),
    mode: XL,
    code: 'reserved',
    message: 'reserved option bits set: 0x80000000',
    where: {format: 'libxl', offset: libxlHdr, part: 'header'},
  },

  // ---- libxc image and domain headers
  {
    name: 'libxc: bad marker',
    bytes: patched(BASE, imageHdr + 7, [0xfe]),
    mode: XL,
    code: 'bad-magic',
    message: 'marker 0xfffffffffffffffe',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: bad ident',
    bytes: patched(BASE, imageHdr + 8, Buffer.from('XENG')),
    mode: XL,
    code: 'bad-magic',
    message: 'id 0x58454e47, expected 0x58454e46',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: version 1',
    bytes: patched(BASE, imageHdr + 12, u32be(1)),
    mode: XL,
    code: 'bad-version',
    message: 'version 1, expected 2 <= version <= 3',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: version 4',
    bytes: patched(BASE, imageHdr + 12, u32be(4)),
    mode: XL,
    code: 'bad-version',
    message: 'version 4, expected 2 <= version <= 3',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: big-endian option bit',
    bytes: patched(BASE, imageHdr + 16, u16be(1)),
    mode: XL,
    code: 'bad-options',
    message: 'big-endian',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: reserved option bit 1',
    bytes: patched(BASE, imageHdr + 16, u16be(2)),
    mode: XL,
    code: 'reserved',
    message: 'reserved option bits set: 0x0002',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: reserved option bit 15 with big-endian',
    bytes: patched(BASE, imageHdr + 16, u16be(0x8001)),
    mode: XL,
    code: 'reserved',
    message: 'reserved option bits set: 0x8000',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: image header reserved u16 not zero',
    bytes: patched(BASE, imageHdr + 18, u16be(1)),
    mode: XL,
    code: 'reserved',
    message: 'reserved fields are 0x0001:0x00000000',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: image header reserved u32 not zero',
    bytes: patched(BASE, imageHdr + 20, u32be(0xdead)),
    mode: XL,
    code: 'reserved',
    message: 'reserved fields are 0x0000:0x0000dead',
    where: {format: 'libxc', offset: imageHdr, part: 'image header'},
  },
  {
    name: 'libxc: domain header reserved field not zero',
    bytes: patched(BASE, domainHdr + 6, [1, 0]),
    mode: XL,
    code: 'reserved',
    message: 'reserved field is 0x0001',
    where: {format: 'libxc', offset: domainHdr, part: 'domain header'},
  },
  {
    name: 'libxc: domain type 3',
    bytes: patched(BASE, domainHdr, u32le(3)),
    mode: XL,
    code: 'bad-value',
    message: 'domain type 0x3 is not x86 PV (1) or x86 HVM (2)',
    where: {format: 'libxc', offset: domainHdr, part: 'domain header'},
  },
  {
    name: 'libxc: domain type 0',
    bytes: patched(BASE, domainHdr, u32le(0)),
    mode: XL,
    code: 'bad-value',
    message: 'domain type 0x0',
    where: {format: 'libxc', offset: domainHdr, part: 'domain header'},
  },
  {
    name: 'libxc: page shift 13',
    bytes: patched(BASE, domainHdr + 4, [13, 0]),
    mode: XL,
    code: 'bad-value',
    message: 'page shift 13, expected 12',
    where: {format: 'libxc', offset: domainHdr, part: 'domain header'},
  },

  // ---- framing: lengths over the bound, padding
  {
    name: 'libxc: record length REC_LENGTH_MAX + 1',
    bytes: patched(BASE, base.find('libxc', 'PAGE_DATA').offset + 4, u32le(REC_LENGTH_MAX + 1)),
    mode: XL,
    code: 'too-long',
    message: `length ${REC_LENGTH_MAX + 1} exceeds the maximum of ${REC_LENGTH_MAX} bytes`,
    where: at(base, 'libxc', 'PAGE_DATA'),
    maxRead: 1024,
  },
  {
    name: 'libxc: record length 0xffffffff',
    bytes: patched(BASE, base.find('libxc', 'HVM_CONTEXT').offset + 4, u32le(0xffffffff)),
    mode: XL,
    code: 'too-long',
    message: 'length 4294967295 exceeds the maximum',
    where: at(base, 'libxc', 'HVM_CONTEXT'),
    maxRead: 5 * PAGE_SIZE,
  },
  {
    name: 'libxl: record length 0xfffffff8',
    bytes: patched(BASE, base.find('libxl', 'EMULATOR_CONTEXT').offset + 4, u32le(0xfffffff8)),
    mode: XL,
    code: 'too-long',
    message: 'length 4294967288 exceeds the maximum',
    where: at(base, 'libxl', 'EMULATOR_CONTEXT'),
    maxRead: 5 * PAGE_SIZE,
  },
  {
    name: 'libxc: record length exactly REC_LENGTH_MAX on a short stream',
    bytes: patched(BASE, base.find('libxc', 'HVM_CONTEXT').offset + 4, u32le(REC_LENGTH_MAX)),
    mode: XL,
    code: 'truncated',
    message: `of ${REC_LENGTH_MAX} body bytes`,
    where: at(base, 'libxc', 'HVM_CONTEXT'),
    maxRead: REC_LENGTH_MAX,
  },
  {
    name: 'libxl: non-zero padding (EMULATOR_XENSTORE_DATA)',
    bytes: patched(BASE, afterLibxc + 8 + 111, [0x01]),
    mode: XL,
    code: 'bad-padding',
    message: 'padding byte 6 is 0x1, not zero',
    where: at(base, 'libxl', 'EMULATOR_XENSTORE_DATA'),
  },
  (() => {
    const l = hvm().libxc(SDE).raw('libxc', LIBXC.HVM_CONTEXT, Buffer.from('ctx'), {padding: Buffer.from([0, 0, 0, 0, 0x80])})
    return {
      name: 'libxc: non-zero padding (HVM_CONTEXT)',
      ...built(l, 'libxc', 'HVM_CONTEXT'),
      mode: LIBXC_PLAIN,
      code: 'bad-padding' as const,
      message: 'padding byte 4 is 0x80',
    }
  })(),

  // ---- libxc record lengths and fields
  {
    name: 'libxc: END with length 1',
    ...built(hvm().libxc(SDE, CTX).raw('libxc', LIBXC.END, Buffer.alloc(1)), 'libxc', 'END'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 1, must be 0',
  },
  {
    name: 'libxc: STATIC_DATA_END with length 8',
    ...built(hvm().raw('libxc', LIBXC.STATIC_DATA_END, Buffer.alloc(8)), 'libxc', 'STATIC_DATA_END'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 8, must be 0',
  },
  {
    name: 'libxc: X86_TSC_INFO with length 23',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.X86_TSC_INFO, Buffer.alloc(23)), 'libxc', 'X86_TSC_INFO'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 23, must be 24',
  },
  {
    name: 'libxc: X86_TSC_INFO reserved field not zero',
    ...built(hvm().raw('libxc', LIBXC.X86_TSC_INFO, words(0, 1000, 0, 0, 0, 7)), 'libxc', 'X86_TSC_INFO'),
    mode: LIBXC_PLAIN,
    code: 'reserved',
    message: 'reserved field _res1 is 0x7',
  },
  {
    name: 'libxc: SHARED_INFO with length 4095',
    ...built(pv().libxc(PV_INFO).raw('libxc', LIBXC.SHARED_INFO, Buffer.alloc(4095)), 'libxc', 'SHARED_INFO'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 4095, must be 4096',
  },
  {
    name: 'libxc: HVM_PARAMS count 2 but one entry',
    ...built(hvm().raw('libxc', LIBXC.HVM_PARAMS, Buffer.concat([words(2, 0), u64le(1n), u64le(2n)])), 'libxc', 'HVM_PARAMS'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 24, expected 40 for 2 params',
  },
  {
    name: 'libxc: HVM_PARAMS count 0 but one entry',
    ...built(hvm().raw('libxc', LIBXC.HVM_PARAMS, Buffer.concat([words(0, 0), u64le(1n), u64le(2n)])), 'libxc', 'HVM_PARAMS'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 24, expected 8 for 0 params',
  },
  {
    name: 'libxc: HVM_PARAMS count 0xffffffff',
    ...built(hvm().raw('libxc', LIBXC.HVM_PARAMS, Buffer.concat([words(0xffffffff, 0), u64le(1n), u64le(2n)])), 'libxc', 'HVM_PARAMS'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'for 4294967295 params',
  },
  {
    name: 'libxc: HVM_PARAMS shorter than its header',
    ...built(hvm().raw('libxc', LIBXC.HVM_PARAMS, words(1)), 'libxc', 'HVM_PARAMS'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 4, must be at least 8',
  },
  {
    name: 'libxc: X86_CPUID_POLICY with length 25',
    ...built(hvm().raw('libxc', LIBXC.X86_CPUID_POLICY, Buffer.alloc(25)), 'libxc', 'X86_CPUID_POLICY'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 25, must be a non-zero multiple of 24',
  },
  {
    name: 'libxc: X86_CPUID_POLICY empty',
    ...built(hvm().raw('libxc', LIBXC.X86_CPUID_POLICY, Buffer.alloc(0)), 'libxc', 'X86_CPUID_POLICY'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 0, must be a non-zero multiple of 24',
  },
  {
    name: 'libxc: X86_MSR_POLICY with length 8',
    ...built(hvm().raw('libxc', LIBXC.X86_MSR_POLICY, Buffer.alloc(8)), 'libxc', 'X86_MSR_POLICY'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 8, must be a non-zero multiple of 16',
  },
  {
    name: 'libxc: X86_MSR_POLICY entry with non-zero flags',
    bytes: patched(BASE, bodyAt(base, 'libxc', 'X86_MSR_POLICY', 16 + 4), u32le(1)),
    mode: XL,
    code: 'reserved',
    message: 'reserved field flags of MSR entry 1 is 0x1',
    where: at(base, 'libxc', 'X86_MSR_POLICY'),
  },
  {
    name: 'libxc: X86_MSR_POLICY first entry with non-zero flags',
    ...built(hvm().raw('libxc', LIBXC.X86_MSR_POLICY, Buffer.concat([words(0xce, 0x80000000), u64le(0n)])), 'libxc', 'X86_MSR_POLICY'),
    mode: LIBXC_PLAIN,
    code: 'reserved',
    message: 'reserved field flags of MSR entry 0 is 0x80000000',
  },
  {
    name: 'libxc: X86_PV_INFO guest width 5',
    ...built(pv().raw('libxc', LIBXC.X86_PV_INFO, Buffer.from([5, 4, 0, 0, 0, 0, 0, 0])), 'libxc', 'X86_PV_INFO'),
    mode: LIBXC_PLAIN,
    code: 'bad-value',
    message: 'guest width 5, must be 4 or 8',
  },
  {
    name: 'libxc: X86_PV_INFO 2 page-table levels',
    ...built(pv().raw('libxc', LIBXC.X86_PV_INFO, Buffer.from([8, 2, 0, 0, 0, 0, 0, 0])), 'libxc', 'X86_PV_INFO'),
    mode: LIBXC_PLAIN,
    code: 'bad-value',
    message: 'page-table levels 2, must be 3 or 4',
  },
  {
    name: 'libxc: X86_PV_INFO reserved bytes',
    ...built(pv().raw('libxc', LIBXC.X86_PV_INFO, Buffer.from([8, 4, 0, 0, 0, 0, 0, 1])), 'libxc', 'X86_PV_INFO'),
    mode: LIBXC_PLAIN,
    code: 'reserved',
    message: 'reserved bytes 2-7',
  },
  {
    name: 'libxc: X86_PV_P2M_FRAMES with length 12',
    ...built(pv().libxc(PV_INFO, SDE).raw('libxc', LIBXC.X86_PV_P2M_FRAMES, words(0, 1, 2)), 'libxc', 'X86_PV_P2M_FRAMES'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 12, must be a non-zero multiple of 8',
  },
  {
    name: 'libxc: X86_PV_P2M_FRAMES start above end',
    ...built(pv().libxc(PV_INFO, SDE).raw('libxc', LIBXC.X86_PV_P2M_FRAMES, words(5, 4)), 'libxc', 'X86_PV_P2M_FRAMES'),
    mode: LIBXC_PLAIN,
    code: 'bad-value',
    message: 'start pfn 0x5 exceeds end pfn 0x4',
  },
  {
    name: 'libxc: X86_PV_VCPU_XSAVE shorter than its header',
    ...built(pv().raw('libxc', LIBXC.X86_PV_VCPU_XSAVE, words(0)), 'libxc', 'X86_PV_VCPU_XSAVE'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 4, must be at least 8',
  },
  {
    name: 'libxc: X86_PV_VCPU_BASIC reserved field',
    ...built(pv().raw('libxc', LIBXC.X86_PV_VCPU_BASIC, words(0, 1, 2, 3)), 'libxc', 'X86_PV_VCPU_BASIC'),
    mode: LIBXC_PLAIN,
    code: 'reserved',
    message: 'reserved field _res1 is 0x1',
  },
  {
    name: 'libxc: empty HVM_CONTEXT',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.HVM_CONTEXT, Buffer.alloc(0)), 'libxc', 'HVM_CONTEXT'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 0, must be at least 1',
  },

  // ---- PAGE_DATA
  {
    name: 'PAGE_DATA: count 0',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.PAGE_DATA, words(0, 0)), 'libxc', 'PAGE_DATA'),
    mode: LIBXC_PLAIN,
    code: 'bad-value',
    message: 'count is 0',
  },
  {
    name: 'PAGE_DATA: shorter than its header',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.PAGE_DATA, words(1)), 'libxc', 'PAGE_DATA'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 4, must be at least 8',
  },
  {
    name: 'PAGE_DATA: count 0xffffffff, one pfn',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.PAGE_DATA, Buffer.concat([words(0xffffffff, 0), u64le(1n), Buffer.alloc(PAGE_SIZE)])), 'libxc', 'PAGE_DATA'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'too short for 4294967295 pfns',
  },
  {
    name: 'PAGE_DATA: count 3 but one pfn and one page (count too big)',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.PAGE_DATA, Buffer.concat([words(3, 0), u64le(1n), Buffer.alloc(PAGE_SIZE)])), 'libxc', 'PAGE_DATA'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 4112, expected 8 + 24 + 12288 = 12320 for 3 pfns of which 3 carry data',
  },
  {
    name: 'PAGE_DATA: count 1 but two pages (count too small)',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.PAGE_DATA, Buffer.concat([words(1, 0), u64le(1n), Buffer.alloc(2 * PAGE_SIZE)])), 'libxc', 'PAGE_DATA'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'length 8208, expected 8 + 8 + 4096 = 4112',
  },
  {
    name: 'PAGE_DATA: an XTAB pfn carrying a page',
    ...built(hvm().libxc(SDE).raw('libxc', LIBXC.PAGE_DATA, Buffer.concat([words(1, 0), u64le(0xf000000000000001n), Buffer.alloc(PAGE_SIZE)])), 'libxc', 'PAGE_DATA'),
    mode: LIBXC_PLAIN,
    code: 'bad-length',
    message: 'expected 8 + 8 + 0 = 16 for 1 pfns of which 0 carry data',
  },
  {
    name: 'PAGE_DATA: reserved pfn bit 52',
    bytes: patched(BASE, bodyAt(base, 'libxc', 'PAGE_DATA', 8 + 8 + 4), u32le(0x00100000)),
    mode: XL,
    code: 'reserved',
    message: 'reserved bits 52-59 set in pfn[1] (0x1)',
    where: at(base, 'libxc', 'PAGE_DATA'),
  },
  {
    name: 'PAGE_DATA: reserved pfn bit 59 (second record)',
    bytes: patched(BASE, bodyAt(base, 'libxc', 'PAGE_DATA', 8 + 4, 1), u32le(0x08000000)),
    mode: XL,
    code: 'reserved',
    message: 'reserved bits 52-59 set in pfn[0] (0x80)',
    where: at(base, 'libxc', 'PAGE_DATA', 1),
  },
  {
    name: 'PAGE_DATA: reserved _res1',
    bytes: patched(BASE, bodyAt(base, 'libxc', 'PAGE_DATA', 4), u32le(1)),
    mode: XL,
    code: 'reserved',
    message: 'reserved field _res1 is 0x1',
    where: at(base, 'libxc', 'PAGE_DATA'),
  },
  ...[5, 6, 7, 8].map(
    (type): Row => ({
      name: `PAGE_DATA: page type ${type}`,
      bytes: patched(BASE, bodyAt(base, 'libxc', 'PAGE_DATA', 8 + 8 * 2 + 7), [type << 4]),
      mode: XL,
      code: 'bad-value',
      message: `unknown page type 0x${type} in pfn[2] (pfn 0x2)`,
      where: at(base, 'libxc', 'PAGE_DATA'),
    }),
  ),
  {
    name: 'PAGE_DATA: pfn beyond p2mSize',
    bytes: BASE,
    mode: {format: 'xl', streamType: 'plain', p2mSize: 2},
    code: 'pfn-out-of-range',
    message: 'pfn 0x2 (index 2) is outside the domain (p2m size 0x2)',
    where: at(base, 'libxc', 'PAGE_DATA'),
  },
  {
    name: 'PAGE_DATA: pfn 52 bits wide, p2mSize 2^40',
    ...built(
      hvm().libxc(SDE, {kind: 'PAGE_DATA', pfns: [0, 2 ** 52 - 1], types: [15, 15], pages: []}),
      'libxc',
      'PAGE_DATA',
    ),
    mode: {format: 'libxc', streamType: 'plain', p2mSize: 2 ** 40},
    code: 'pfn-out-of-range',
    message: 'pfn 0xfffffffffffff (index 1)',
  },

  // ---- unknown records
  {
    name: 'libxc: unknown mandatory record 0x13',
    ...built(hvm().libxc(SDE).raw('libxc', 0x13, Buffer.alloc(3)), 'libxc', '0x00000013'),
    mode: LIBXC_PLAIN,
    code: 'unknown-record',
    message: 'mandatory record type 0x00000013 is not defined',
  },
  {
    name: 'libxc: unknown mandatory record 0x7fffffff',
    bytes: spliced(BASE, base.find('libxc', 'END').offset, Buffer.concat([encodeRecordHeader(0x7fffffff, 0)])),
    mode: XL,
    code: 'unknown-record',
    message: 'mandatory record type 0x7fffffff',
    where: {format: 'libxc', offset: base.find('libxc', 'END').offset, record: {name: '0x7fffffff', index: 8}},
  },
  {
    name: 'libxc: TOOLSTACK (deprecated)',
    ...built(hvm().raw('libxc', LIBXC.TOOLSTACK, Buffer.from('blob')), 'libxc', 'TOOLSTACK'),
    mode: LIBXC_PLAIN,
    code: 'unknown-record',
    message: 'TOOLSTACK records are deprecated',
  },
  {
    name: 'libxl: unknown record 6',
    bytes: spliced(BASE, libxlHdr + 16, encodeRecordHeader(6, 0)),
    mode: XL,
    code: 'unknown-record',
    message: 'record type 0x00000006 is not defined by libxl stream v2',
    where: {format: 'libxl', offset: libxlHdr + 16, record: {name: '0x00000006', index: 0}},
  },
  {
    name: 'libxl: unknown record with the optional bit (0x80000006)',
    bytes: spliced(BASE, afterLibxc, Buffer.concat([encodeRecordHeader(0x80000006, 3), Buffer.from([1, 2, 3, 0, 0, 0, 0, 0])])),
    mode: XL,
    code: 'unknown-record',
    message: 'record type 0x80000006 is not defined by libxl stream v2',
    where: {format: 'libxl', offset: afterLibxc, record: {name: '0x80000006', index: 1}},
  },

  // ---- libxl records
  {
    name: 'libxl: END with length 8',
    bytes: patched(BASE, base.find('libxl', 'END').offset + 4, u32le(8)),
    mode: XL,
    code: 'truncated',
    message: 'stream ends after 0 of 8 body bytes',
    where: at(base, 'libxl', 'END'),
  },
  {
    name: 'libxl: END with a body',
    bytes: Buffer.concat([BASE.subarray(0, base.find('libxl', 'END').offset), encodeRecordHeader(LIBXL.END, 1), Buffer.alloc(8)]),
    mode: XL,
    code: 'bad-length',
    message: 'length 1, must be 0',
    where: at(base, 'libxl', 'END'),
  },
  {
    name: 'libxl: LIBXC_CONTEXT with a body',
    bytes: spliced(BASE, libxlHdr + 16, Buffer.concat([encodeRecordHeader(LIBXL.LIBXC_CONTEXT, 4), Buffer.alloc(8)]), 8),
    mode: XL,
    code: 'bad-length',
    message: 'length 4, must be 0',
    where: at(base, 'libxl', 'LIBXC_CONTEXT'),
  },
  {
    name: 'libxl: EMULATOR_CONTEXT with unknown emulator id 3',
    bytes: patched(BASE, bodyAt(base, 'libxl', 'EMULATOR_CONTEXT', 0), u32le(3)),
    mode: XL,
    code: 'bad-value',
    message: 'unknown emulator id 0x3',
    where: at(base, 'libxl', 'EMULATOR_CONTEXT'),
  },
  {
    name: 'libxl: EMULATOR_XENSTORE_DATA shorter than the emulator header',
    bytes: spliced(BASE, afterLibxc, Buffer.concat([encodeRecordHeader(LIBXL.EMULATOR_XENSTORE_DATA, 4), Buffer.alloc(8)]), 120),
    mode: XL,
    code: 'bad-length',
    message: 'length 4, must be at least 8 (emulator header)',
    where: at(base, 'libxl', 'EMULATOR_XENSTORE_DATA'),
  },
  {
    name: 'libxl: xenstore data not NUL terminated',
    bytes: patched(BASE, bodyAt(base, 'libxl', 'EMULATOR_XENSTORE_DATA', 104), Buffer.from('m')),
    mode: XL,
    code: 'bad-value',
    message: 'xenstore data is not NUL terminated',
    where: at(base, 'libxl', 'EMULATOR_XENSTORE_DATA'),
  },
  {
    name: 'libxl: xenstore data with an odd number of strings',
    bytes: spliced(
      BASE,
      afterLibxc,
      (() => {
        const body = Buffer.concat([words(2, 0), Buffer.from('key\0value\0orphan\0')])
        return Buffer.concat([encodeRecordHeader(LIBXL.EMULATOR_XENSTORE_DATA, body.length), body, Buffer.alloc(7)])
      })(),
      120,
    ),
    mode: XL,
    code: 'bad-value',
    message: 'xenstore data holds 3 strings, expected key/value pairs',
    where: at(base, 'libxl', 'EMULATOR_XENSTORE_DATA'),
  },
  {
    name: 'libxl: CHECKPOINT_STATE with unknown id 4',
    bytes: patched(COLO, bodyAt(colo, 'libxl', 'CHECKPOINT_STATE', 0), u32le(4)),
    mode: LIBXL_COLO,
    code: 'bad-value',
    message: 'unknown checkpoint state id 4',
    where: at(colo, 'libxl', 'CHECKPOINT_STATE'),
  },
  {
    name: 'libxl: CHECKPOINT_STATE with length 8',
    bytes: patched(COLO, colo.find('libxl', 'CHECKPOINT_STATE').offset + 4, u32le(8)),
    mode: LIBXL_COLO,
    code: 'bad-length',
    message: 'length 8, must be 4',
    where: at(colo, 'libxl', 'CHECKPOINT_STATE'),
  },

  // ---- libxc ordering
  {
    name: 'order: CHECKPOINT in a plain stream',
    bytes: REMUS,
    mode: {format: 'libxl', streamType: 'plain'},
    code: 'bad-order',
    message: 'CHECKPOINT in a non-checkpointed stream',
    where: at(remus, 'libxc', 'CHECKPOINT'),
  },
  {
    name: 'order: CHECKPOINT_DIRTY_PFN_LIST in a forward stream',
    bytes: spliced(BASE, base.find('libxc', 'X86_TSC_INFO').offset, libxcBytes({kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: [1, 2]})),
    mode: XL,
    code: 'bad-order',
    message: 'CHECKPOINT_DIRTY_PFN_LIST is only valid on the COLO back channel',
    where: {format: 'libxc', offset: base.find('libxc', 'X86_TSC_INFO').offset, record: {name: 'CHECKPOINT_DIRTY_PFN_LIST', index: 5}},
  },
  {
    name: 'order: STATIC_DATA_END in a v2 stream',
    ...built(hvm(2).libxc(SDE), 'libxc', 'STATIC_DATA_END'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'STATIC_DATA_END in a v2 stream',
  },
  {
    name: 'order: X86_CPUID_POLICY in a v2 stream',
    bytes: patched(BASE, imageHdr + 12, u32be(2)),
    mode: XL,
    code: 'bad-order',
    message: 'X86_CPUID_POLICY in a v2 stream',
    where: at(base, 'libxc', 'X86_CPUID_POLICY'),
  },
  {
    name: 'order: duplicate STATIC_DATA_END',
    ...built(hvm().libxc(SDE, SDE), 'libxc', 'STATIC_DATA_END', 1),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'multiple STATIC_DATA_END records',
  },
  {
    name: 'order: PAGE_DATA before STATIC_DATA_END in v3',
    ...built(hvm().libxc(ONE_PAGE, SDE), 'libxc', 'PAGE_DATA'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'PAGE_DATA before STATIC_DATA_END',
  },
  {
    name: 'order: X86_MSR_POLICY after STATIC_DATA_END',
    ...built(hvm().libxc(SDE, {kind: 'X86_MSR_POLICY', msrs: [{index: 1, flags: 0, value: 0n}]}), 'libxc', 'X86_MSR_POLICY'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'X86_MSR_POLICY after STATIC_DATA_END',
  },
  {
    name: 'order: PV record (SHARED_INFO) in an HVM stream',
    bytes: spliced(BASE, base.find('libxc', 'HVM_CONTEXT').offset, libxcBytes({kind: 'SHARED_INFO', page: Buffer.alloc(PAGE_SIZE)})),
    mode: XL,
    code: 'bad-order',
    message: 'SHARED_INFO is not valid in an x86 HVM stream',
    where: {format: 'libxc', offset: base.find('libxc', 'HVM_CONTEXT').offset, record: {name: 'SHARED_INFO', index: 6}},
  },
  {
    name: 'order: PV record (X86_PV_INFO) in an HVM stream',
    ...built(hvm().libxc(PV_INFO), 'libxc', 'X86_PV_INFO'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'X86_PV_INFO is not valid in an x86 HVM stream',
  },
  {
    name: 'order: HVM_CONTEXT in a PV stream',
    ...built(pv().libxc(PV_INFO, SDE, TSC, CTX), 'libxc', 'HVM_CONTEXT'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'HVM_CONTEXT is not valid in an x86 PV stream',
  },
  {
    name: 'order: HVM_PARAMS in a PV stream',
    ...built(pv().libxc({kind: 'HVM_PARAMS', params: []}), 'libxc', 'HVM_PARAMS'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'HVM_PARAMS is not valid in an x86 PV stream',
  },
  {
    name: 'order: END before HVM_CONTEXT in an HVM stream',
    ...built(hvm().libxc(SDE, ONE_PAGE, TSC, {kind: 'END'}), 'libxc', 'END'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'END before any HVM_CONTEXT',
  },
  {
    name: 'order: CHECKPOINT before HVM_CONTEXT in an HVM stream',
    ...built(hvm().libxc(SDE, ONE_PAGE, {kind: 'CHECKPOINT'}), 'libxc', 'CHECKPOINT'),
    mode: {format: 'libxc', streamType: 'remus'},
    code: 'bad-order',
    message: 'CHECKPOINT before any HVM_CONTEXT',
  },
  {
    name: 'order: X86_PV_P2M_FRAMES before X86_PV_INFO',
    ...built(pv().libxc(SDE, {kind: 'X86_PV_P2M_FRAMES', startPfn: 0, endPfn: 1, frames: [1n]}), 'libxc', 'X86_PV_P2M_FRAMES'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'X86_PV_P2M_FRAMES before X86_PV_INFO',
  },
  {
    name: 'order: X86_PV_P2M_FRAMES before STATIC_DATA_END in v3',
    ...built(pv().libxc(PV_INFO, {kind: 'X86_PV_P2M_FRAMES', startPfn: 0, endPfn: 1, frames: [1n]}), 'libxc', 'X86_PV_P2M_FRAMES'),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'X86_PV_P2M_FRAMES before STATIC_DATA_END',
  },
  {
    name: 'order: duplicate X86_PV_INFO',
    ...built(pv().libxc(PV_INFO, PV_INFO), 'libxc', 'X86_PV_INFO', 1),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'multiple X86_PV_INFO records',
  },
  {
    name: 'order: VERIFY in a checkpointed stream',
    ...built(hvm().libxc(SDE, {kind: 'VERIFY'}), 'libxc', 'VERIFY'),
    mode: {format: 'libxc', streamType: 'colo'},
    code: 'bad-order',
    message: 'VERIFY in a checkpointed stream',
  },
  {
    name: 'order: second VERIFY',
    ...built(hvm().libxc(SDE, {kind: 'VERIFY'}, ONE_PAGE, {kind: 'VERIFY'}), 'libxc', 'VERIFY', 1),
    mode: LIBXC_PLAIN,
    code: 'bad-order',
    message: 'multiple VERIFY records',
  },
  {
    name: 'order: a libxc record after libxc END is no libxl record',
    bytes: spliced(BASE, afterLibxc, libxcBytes(TSC)),
    mode: XL,
    code: 'unknown-record',
    message: 'record type 0x00000008 is not defined by libxl stream v2',
    where: {format: 'libxl', offset: afterLibxc, record: {name: '0x00000008', index: 1}},
  },

  // ---- libxl ordering
  {
    name: 'order: CHECKPOINT_END outside a checkpoint',
    bytes: spliced(BASE, afterLibxc, libxlBytes({kind: 'CHECKPOINT_END'})),
    mode: XL,
    code: 'bad-order',
    message: 'unexpected CHECKPOINT_END outside a checkpoint',
    where: {format: 'libxl', offset: afterLibxc, record: {name: 'CHECKPOINT_END', index: 1}},
  },
  {
    name: 'order: CHECKPOINT_STATE in a plain stream',
    bytes: spliced(BASE, afterLibxc, libxlBytes(NEW)),
    mode: XL,
    code: 'bad-order',
    message: 'unexpected CHECKPOINT_STATE',
    where: {format: 'libxl', offset: afterLibxc, record: {name: 'CHECKPOINT_STATE', index: 1}},
  },
  {
    name: 'order: CHECKPOINT_STATE with a back-channel id (SVM_READY) on the main stream',
    bytes: patched(COLO, bodyAt(colo, 'libxl', 'CHECKPOINT_STATE', 0), u32le(CHECKPOINT_STATE.SVM_READY)),
    mode: LIBXL_COLO,
    code: 'bad-value',
    message: 'CHECKPOINT_STATE(SVM_READY) travels on the back channel, not the main stream',
    where: at(colo, 'libxl', 'CHECKPOINT_STATE'),
  },
  {
    name: 'order: COLO stream without CHECKPOINT_STATE(NEW) after CHECKPOINT_END',
    bytes: REMUS,
    mode: LIBXL_COLO,
    code: 'bad-order',
    message: 'expected CHECKPOINT_STATE(NEW) after CHECKPOINT_END in a COLO stream',
    // The record after the first CHECKPOINT_END: libxc's X86_TSC_INFO, read where a libxl record may stand.
    where: {format: 'libxl', offset: remus.find('libxl', 'CHECKPOINT_END').offset + 8},
  },
  {
    name: 'order: second LIBXC_CONTEXT',
    bytes: spliced(BASE, afterLibxc, libxlBytes({kind: 'LIBXC_CONTEXT'})),
    mode: XL,
    code: 'bad-order',
    message: 'a second LIBXC_CONTEXT',
    where: {format: 'libxl', offset: afterLibxc, record: {name: 'LIBXC_CONTEXT', index: 1}},
  },
  {
    name: 'order: EMULATOR_CONTEXT before LIBXC_CONTEXT',
    bytes: spliced(BASE, libxlHdr + 16, libxlBytes({kind: 'EMULATOR_CONTEXT', emulator: 2, index: 0, blob: Buffer.from('q')})),
    mode: XL,
    code: 'bad-order',
    message: 'EMULATOR_CONTEXT outside the libxl records that follow the libxc stream',
    where: {format: 'libxl', offset: libxlHdr + 16, record: {name: 'EMULATOR_CONTEXT', index: 0}},
  },
  (() => {
    const l = new StreamLayout()
      .libxlHeader()
      .libxl({kind: 'LIBXC_CONTEXT'})
      .libxcHeaders(PV_417)
      .libxc(PV_INFO, SDE, TSC, {kind: 'END'})
      .libxl({kind: 'EMULATOR_XENSTORE_DATA', emulator: 2, index: 0, entries: []})
    return {
      name: 'order: EMULATOR_XENSTORE_DATA in a PV stream',
      ...built(l, 'libxl', 'EMULATOR_XENSTORE_DATA'),
      mode: {format: 'libxl', streamType: 'plain'} as const,
      code: 'bad-order' as const,
      message: 'EMULATOR_XENSTORE_DATA in a stream of a guest that is not HVM',
    }
  })(),
  {
    name: 'order: libxl END before LIBXC_CONTEXT',
    bytes: spliced(BASE, libxlHdr + 16, libxlBytes({kind: 'END'})),
    mode: XL,
    code: 'bad-order',
    message: 'END before the libxc stream (no LIBXC_CONTEXT)',
    where: {format: 'libxl', offset: libxlHdr + 16, record: {name: 'END', index: 0}},
  },
  {
    name: 'order: libxl END inside a checkpoint',
    bytes: spliced(REMUS, remus.find('libxl', 'EMULATOR_CONTEXT').offset, libxlBytes({kind: 'END'})),
    mode: LIBXL_REMUS,
    code: 'bad-order',
    message: 'END inside a checkpoint',
    where: {format: 'libxl', offset: remus.find('libxl', 'EMULATOR_CONTEXT').offset, record: {name: 'END', index: 1}},
  },
  {
    name: 'order: checkpointed stream cut inside a checkpoint (after CHECKPOINT)',
    bytes: REMUS.subarray(0, remus.find('libxl', 'EMULATOR_CONTEXT').offset),
    mode: LIBXL_REMUS,
    code: 'truncated',
    message: 'stream ends after 0 of 8 header bytes',
    where: {format: 'libxl', offset: remus.find('libxl', 'EMULATOR_CONTEXT').offset, part: 'record header #1'},
  },

  // ---- back channel
  {
    name: 'back channel: SVM_RESUMED first',
    bytes: libxlBytes({kind: 'CHECKPOINT_STATE', state: 'SVM_RESUMED'}),
    mode: BACK,
    code: 'bad-order',
    message: 'got SVM_RESUMED, expected SVM_READY',
    where: {format: 'back-channel', offset: 0, record: {name: 'CHECKPOINT_STATE', index: 0}},
  },
  {
    name: 'back channel: CHECKPOINT_STATE(NEW) on the back channel',
    bytes: libxlBytes(NEW),
    mode: BACK,
    code: 'bad-order',
    message: 'got NEW, expected SVM_READY',
    where: {format: 'back-channel', offset: 0, record: {name: 'CHECKPOINT_STATE', index: 0}},
  },
  {
    name: 'back channel: dirty pfn list before SVM_SUSPENDED',
    bytes: Buffer.concat([backChannelStream(1, () => []), libxcBytes({kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: [1]})]),
    mode: BACK,
    code: 'bad-order',
    message: 'got CHECKPOINT_DIRTY_PFN_LIST, expected SVM_SUSPENDED',
    where: {format: 'back-channel', offset: 32, record: {name: 'CHECKPOINT_DIRTY_PFN_LIST', index: 2}},
  },
  {
    name: 'back channel: dirty pfn beyond p2mSize',
    bytes: backChannelStream(2, () => [3, 0x100, 4]),
    mode: {format: 'back-channel', p2mSize: 0x100},
    code: 'pfn-out-of-range',
    message: 'pfn 0x100 (entry 1) is outside the domain (p2m size 0x100)',
    where: {format: 'back-channel', offset: 48, record: {name: 'CHECKPOINT_DIRTY_PFN_LIST', index: 3}},
  },
  {
    name: 'back channel: dirty pfn wider than 52 bits',
    bytes: Buffer.concat([
      backChannelStream(1, () => []),
      libxlBytes({kind: 'CHECKPOINT_STATE', state: 'SVM_SUSPENDED'}),
      encodeRecordHeader(LIBXC.CHECKPOINT_DIRTY_PFN_LIST, 8),
      u64le(1n << 52n),
    ]),
    mode: BACK,
    code: 'pfn-out-of-range',
    message: 'entry 0 (0x10000000000000) is not a 52-bit pfn',
    where: {format: 'back-channel', offset: 48, record: {name: 'CHECKPOINT_DIRTY_PFN_LIST', index: 3}},
  },
  {
    name: 'back channel: dirty pfn list with length 12',
    bytes: Buffer.concat([
      backChannelStream(1, () => []),
      libxlBytes({kind: 'CHECKPOINT_STATE', state: 'SVM_SUSPENDED'}),
      encodeRecordHeader(LIBXC.CHECKPOINT_DIRTY_PFN_LIST, 12),
      Buffer.alloc(16),
    ]),
    mode: BACK,
    code: 'bad-length',
    message: 'length 12, must be a multiple of 8',
    where: {format: 'back-channel', offset: 48, record: {name: 'CHECKPOINT_DIRTY_PFN_LIST', index: 3}},
  },
  {
    name: 'back channel: CHECKPOINT_STATE with length 0',
    bytes: encodeRecordHeader(LIBXL.CHECKPOINT_STATE, 0),
    mode: BACK,
    code: 'bad-length',
    message: 'length 0, must be 4',
    where: {format: 'back-channel', offset: 0, record: {name: 'CHECKPOINT_STATE', index: 0}},
  },
  {
    name: 'back channel: a record that does not travel there (PAGE_DATA)',
    bytes: Buffer.concat([backChannelStream(1, () => []), libxcBytes(ONE_PAGE)]),
    mode: BACK,
    code: 'unknown-record',
    message: 'record type 0x00000001 does not travel on the back channel',
    where: {format: 'back-channel', offset: 32, record: {name: '0x00000001', index: 2}},
  },
  {
    // Xen 4.18+ (XEN-FACTS §12.1) writes a 16-byte record header for the dirty list: the list is
    // read 8 bytes early and its last pfn is left to be read as the next record header.
    name: 'back channel: dirty pfn list written with a 16-byte header (Xen 4.18+)',
    bytes: Buffer.concat([
      backChannelStream(1, () => []),
      libxlBytes({kind: 'CHECKPOINT_STATE', state: 'SVM_SUSPENDED'}),
      encodeRecordHeader(LIBXC.CHECKPOINT_DIRTY_PFN_LIST, 16),
      Buffer.alloc(8),
      u64le(0x10n),
      u64le(0x42n),
      libxlBytes({kind: 'CHECKPOINT_STATE', state: 'SVM_READY'}),
    ]),
    mode: BACK,
    code: 'unknown-record',
    message: 'record type 0x00000042 does not travel on the back channel',
    where: {format: 'back-channel', offset: 72, record: {name: '0x00000042', index: 4}},
  },
  {
    name: 'back channel: cut inside a record',
    bytes: backChannelStream(2, () => [1, 2, 3]).subarray(0, 60),
    mode: BACK,
    code: 'truncated',
    message: 'stream ends after 4 of 24 body bytes',
    where: {format: 'back-channel', offset: 48, record: {name: 'CHECKPOINT_DIRTY_PFN_LIST', index: 3}},
  },
]

// -------------------------------------------------------------------------------------------------

async function expectRejection(row: Row): Promise<StreamError> {
  const source = new CountingSource(new BufferSource(row.bytes))
  const reading = readAll(source, row.mode)
  await expect(reading).rejects.toBeInstanceOf(StreamError)
  const error = (await reading.catch((e: unknown) => e)) as StreamError
  expect(error.name).toBe('StreamError')
  expect(error.code).toBe(row.code)
  expect(error.detail).toContain(row.message)
  expect(error.message).toContain(row.message)
  expect(source.maxRequest).toBeLessThanOrEqual(row.maxRead ?? READ_BOUND)
  if (row.where) {
    const w = row.where
    expect(error.format).toBe(w.format)
    expect(error.offset).toBe(w.offset)
    expect(error.message).toContain(`at offset ${w.offset} (0x${w.offset.toString(16)})`)
    if (w.record) {
      expect(error.record?.name).toBe(w.record.name)
      expect(error.record?.index).toBe(w.record.index)
      expect(error.message).toContain(`${w.format} ${w.record.name} record #${w.record.index} at offset ${w.offset}`)
    }
    if (w.part) {
      expect(error.record).toBeUndefined()
      expect(error.part).toBe(w.part)
      expect(error.message).toContain(`${w.format} ${w.part} at offset ${w.offset}`)
    }
  }
  return error
}

describe('the valid streams the rows start from', () => {
  it('are the synthetic streams, and read without error', async () => {
    expect(BASE.equals(xlFile(SMALL_GUEST))).toBe(true)
    expect(REMUS.equals(checkpointedStream({pages: 3}, 'remus', 2))).toBe(true)
    expect(COLO.equals(checkpointedStream({pages: 3}, 'colo', 3))).toBe(true)
    for (const [bytes, mode] of [
      [BASE, XL],
      [REMUS, LIBXL_REMUS],
      [COLO, LIBXL_COLO],
      [backChannelStream(3, (r) => [r]), BACK],
    ] as const) {
      const {error, source} = await tryRead(bytes, mode)
      expect(error).toBeUndefined()
      expect(source.offset).toBe(bytes.length)
    }
  })
})

describe('malformed inputs: table', () => {
  it('has at least 35 rows, with distinct names', () => {
    expect(ROWS.length).toBeGreaterThanOrEqual(35)
    expect(new Set(ROWS.map((r) => r.name)).size).toBe(ROWS.length)
  })

  it('names the place of the fault for almost every row', () => {
    expect(ROWS.filter((r) => !r.where).map((r) => r.name)).toEqual([])
  })

  it.each(ROWS.map((r) => [r.name, r] as const))('%s', async (_name, row) => {
    await expectRejection(row)
  }, ROW_TIMEOUT)
})

describe('malformed inputs: truncation at every boundary of a real stream', () => {
  const cases = truncationCases(base)

  it('covers every header and record of the stream', () => {
    const offsets = new Set(cases.map((c) => c.offset))
    for (const p of base.parts) expect(offsets.has(p.offset), `${p.format} ${p.name ?? p.kind}`).toBe(true)
    expect(cases.length).toBeGreaterThan(80)
    // At least one cut in padding: the xenstore record is padded.
    expect(cases.some((c) => c.name.includes('padding'))).toBe(true)
  })

  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    await expectRejection({
      name: c.name,
      bytes: BASE.subarray(0, c.cut),
      mode: XL,
      code: 'truncated',
      message: c.message,
      where: {format: c.format, offset: c.offset, ...(c.record ? {record: c.record} : {}), ...(c.part ? {part: c.part} : {})},
    })
  }, ROW_TIMEOUT)

  it('a checkpointed stream may end only between checkpoints', async () => {
    const ends = new Set<number>()
    for (const p of colo.parts) {
      if (p.format === 'libxl' && (p.name === 'CHECKPOINT_END' || p.name === 'CHECKPOINT_STATE')) ends.add(p.offset + p.size)
    }
    expect(ends.size).toBe(5)
    const cuts = new Set<number>()
    for (const p of colo.parts) for (const d of [0, 1, 7, 8, 9, p.size - 1]) if (d < p.size) cuts.add(p.offset + d)
    for (const cut of [...cuts].sort((a, b) => a - b)) {
      const {events, error} = await tryRead(COLO.subarray(0, cut), {format: 'libxl', streamType: 'unknown'})
      if (ends.has(cut)) {
        expect(error, `cut at ${cut}`).toBeUndefined()
        expect(events?.at(-1), `cut at ${cut}`).toMatchObject({layer: 'eof', offset: cut})
      } else {
        expect(error, `cut at ${cut}`).toBeInstanceOf(StreamError)
        expect((error as StreamError).code, `cut at ${cut}`).toBe('truncated')
      }
    }
  })
})

describe('accepted inputs that look odd', () => {
  it('an unknown OPTIONAL libxc record is returned, not an error, and indexes go on', async () => {
    const sde = base.find('libxc', 'STATIC_DATA_END')
    const optional = libxcBytes({kind: 'OPTIONAL', type: 0x80000042, body: Buffer.from('future')})
    const {events, error} = await tryRead(spliced(BASE, sde.offset + 8, optional), XL)
    expect(error).toBeUndefined()
    const libxc = events!.filter((e) => 'layer' in e && e.layer === 'libxc')
    const opt = libxc[3]
    expect(opt).toMatchObject({layer: 'libxc', index: 3, offset: sde.offset + 8, length: 6, record: {kind: 'OPTIONAL', type: 0x80000042}})
    expect(libxc[4]).toMatchObject({index: 4, record: {kind: 'PAGE_DATA'}})
  })

  it('PAGE_DATA with no STATIC_DATA_END in a v2 stream (inferred)', async () => {
    const {error, events} = await tryRead(hvm(2).libxc(ONE_PAGE, TSC, CTX, {kind: 'END'}).bytes(), LIBXC_PLAIN)
    expect(error).toBeUndefined()
    expect(events?.length).toBe(5)
  })

  it('X86_PV_P2M_FRAMES with no STATIC_DATA_END in a v2 PV stream (inferred)', async () => {
    const l = pv(2).libxc(PV_INFO, {kind: 'X86_PV_P2M_FRAMES', startPfn: 0, endPfn: 511, frames: [7n]}, ONE_PAGE, {kind: 'END'})
    expect((await tryRead(l.bytes(), LIBXC_PLAIN)).error).toBeUndefined()
  })

  it('zero-content records older Xen wrote (HVM_PARAMS, PV vCPU records)', async () => {
    const h = hvm().libxc(SDE, {kind: 'HVM_PARAMS', params: []}, CTX, {kind: 'END'})
    expect((await tryRead(h.bytes(), LIBXC_PLAIN)).error).toBeUndefined()
    const p = pv().libxc(PV_INFO, {kind: 'X86_PV_VCPU_XSAVE', vcpuId: 0, context: Buffer.alloc(0)}, {kind: 'END'})
    expect((await tryRead(p.bytes(), LIBXC_PLAIN)).error).toBeUndefined()
  })

  it('the reader stops at libxl END and leaves what follows unread', async () => {
    const trailing = Buffer.from('domain is yours, you are cleared to unpause\0')
    const source = new CountingSource(new BufferSource(Buffer.concat([BASE, trailing])))
    const events = await readAll(source, XL)
    expect(events.at(-1)).toMatchObject({layer: 'libxl', record: {kind: 'END'}})
    expect(source.offset).toBe(BASE.length)
  })

  it('the bare libxc reader stops at END and leaves a following record unread', async () => {
    const l = hvm().libxc(SDE, CTX, {kind: 'END'})
    const bytes = Buffer.concat([l.bytes(), libxcBytes(TSC)])
    const source = new CountingSource(new BufferSource(bytes))
    await readAll(source, LIBXC_PLAIN)
    expect(source.offset).toBe(l.size)
  })

  it('a record after END is an ordering error for the libxc rules', () => {
    const seq = new LibxcSequence({version: 3, domainType: 2, streamType: 'plain'})
    const site = (index: number) => ({format: 'libxc' as const, offset: 100 + 8 * index, record: {type: 0, name: 'X', index}})
    seq.check({kind: 'STATIC_DATA_END'}, site(0))
    seq.check({kind: 'HVM_CONTEXT', context: Buffer.from('c')}, site(1))
    seq.check({kind: 'END'}, site(2))
    expect(() => seq.check(TSC, site(3))).toThrow(StreamError)
    expect(() => seq.check(TSC, site(3))).toThrow('libxc X record #3 at offset 124 (0x7c): record after END')
  })

  it('a checkpointed stream that ends after CHECKPOINT_STATE(NEW)', async () => {
    const bytes = Buffer.concat([checkpointedStream({pages: 2}, 'colo', 2), libxlBytes(NEW)])
    const {error, events} = await tryRead(bytes, LIBXL_COLO)
    expect(error).toBeUndefined()
    expect(events?.at(-1)).toMatchObject({layer: 'eof', checkpoints: 2, offset: bytes.length})
  })

  it('two checkpoints of a bare libxc Remus stream may end after CHECKPOINT', async () => {
    const l = hvm().libxc(SDE, ...endOfCheckpoint(0), {kind: 'CHECKPOINT'}, ONE_PAGE, ...endOfCheckpoint(1), {kind: 'CHECKPOINT'})
    const {error, events} = await tryRead(l.bytes(), {format: 'libxc', streamType: 'remus'})
    expect(error).toBeUndefined()
    expect(events?.at(-1)).toMatchObject({layer: 'eof', checkpoints: 2})
  })
})

// -------------------------------------------------------------------------------------------------
// Fuzzing

/** Offsets where the grammar lives: every header and the first bytes of every record. */
function structuralOffsets(l: StreamLayout): number[] {
  const out: number[] = []
  for (const p of l.parts) for (let d = 0; d < Math.min(p.size, p.kind === 'record' ? 24 : p.size); d++) out.push(p.offset + d)
  return out
}

const INTERESTING_U32 = [0, 1, 2, 3, 4, 5, 7, 8, 0xf, 0x10, 0x12, 0x13, 0xff, 0x1000, 0x7fffffff, 0x80000000, 0x80000001, 0xffffffff, REC_LENGTH_MAX, REC_LENGTH_MAX + 1]

type Mutation =
  | {op: 'byte'; at: number; value: number}
  | {op: 'bit'; at: number; bit: number}
  | {op: 'u32'; at: number; value: number}
  | {op: 'cut'; at: number}

function arbMutations(l: StreamLayout, size: number): fc.Arbitrary<Mutation[]> {
  const where = fc.oneof(fc.nat({max: size - 1}), fc.constantFrom(...structuralOffsets(l)))
  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({op: fc.constant('byte' as const), at: where, value: fc.nat({max: 255})}),
    fc.record({op: fc.constant('bit' as const), at: where, bit: fc.nat({max: 7})}),
    fc.record({op: fc.constant('u32' as const), at: where, value: fc.constantFrom(...INTERESTING_U32)}),
    fc.record({op: fc.constant('cut' as const), at: fc.nat({max: size})}),
  )
  return fc.array(mutation, {minLength: 1, maxLength: 4})
}

function mutate(bytes: Buffer, mutations: readonly Mutation[]): Buffer {
  let out = Buffer.from(bytes)
  for (const m of mutations) {
    if (m.op === 'cut') out = out.subarray(0, Math.min(m.at, out.length))
    else if (m.at >= out.length) continue
    else if (m.op === 'byte') out[m.at] = m.value
    else if (m.op === 'bit') out[m.at] = out[m.at]! ^ (1 << m.bit)
    else if (m.at + 4 <= out.length) out.writeUInt32LE(m.value >>> 0, m.at)
  }
  return out
}

describe('fuzz: mutated valid streams parse or fail with a StreamError only', () => {
  const small = xlPlainLayout({pages: 2, seed: 3, xenstoreData: true})
  const targets: [string, StreamLayout, ReadMode][] = [
    ['xl plain stream', small, XL],
    ['COLO stream read as unknown', checkpointedLayout({pages: 2, xenstoreData: true}, 'colo', 3), {format: 'libxl', streamType: 'unknown'}],
    ['Remus stream read as remus, with p2mSize', checkpointedLayout({pages: 2}, 'remus', 2), {format: 'libxl', streamType: 'remus', p2mSize: 2}],
  ]

  it.each(targets)('%s', async (_name, layout, mode) => {
    const bytes = layout.bytes()
    const outcomes = {accepted: 0, rejected: 0}
    await fc.assert(
      fc.asyncProperty(arbMutations(layout, bytes.length), async (mutations) => {
        const {error, source} = await tryRead(mutate(bytes, mutations), mode)
        if (error !== undefined && !(error instanceof StreamError)) throw error
        outcomes[error ? 'rejected' : 'accepted']++
        expect(source.maxRequest).toBeLessThanOrEqual(READ_BOUND)
      }),
      {numRuns: 300},
    )
    expect(outcomes.rejected).toBeGreaterThan(0)
  }, 20_000)

  it('back channel', async () => {
    const l = new StreamLayout().backChannel({kind: 'CHECKPOINT_STATE', state: 'SVM_READY'}, {kind: 'CHECKPOINT_STATE', state: 'SVM_RESUMED'})
    for (const r of [1, 2]) {
      l.backChannel(
        {kind: 'CHECKPOINT_STATE', state: 'SVM_SUSPENDED'},
        {kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: [r, r + 1, 0xffff]},
        {kind: 'CHECKPOINT_STATE', state: 'SVM_READY'},
        {kind: 'CHECKPOINT_STATE', state: 'SVM_RESUMED'},
      )
    }
    const bytes = l.bytes()
    expect(bytes.equals(backChannelStream(3, (r) => [r, r + 1, 0xffff]))).toBe(true)
    await fc.assert(
      fc.asyncProperty(arbMutations(l, bytes.length), fc.option(fc.nat({max: 0x20000}), {nil: undefined}), async (mutations, p2mSize) => {
        const {error, source} = await tryRead(mutate(bytes, mutations), p2mSize === undefined ? BACK : {format: 'back-channel', p2mSize})
        if (error !== undefined && !(error instanceof StreamError)) throw error
        expect(source.maxRequest).toBeLessThanOrEqual(READ_BOUND)
      }),
      {numRuns: 300},
    )
  }, 20_000)
})
