/**
 * Typed bodies of libxc records and their pure encoders/decoders. Decoders expect a body that passed
 * `checkLibxcBody` (libxc-rules.ts); `decodeLibxcRecord` there runs both.
 */
import {REC_LENGTH_MAX, coalesceViews, encodeRecordHeader, frameRecord} from './framing.js'
import {
  CPUID_LEAF_SIZE,
  HVM_PARAM_ENTRY_SIZE,
  LIBXC,
  MSR_ENTRY_SIZE,
  PAGE_SIZE,
  PFN_LIMIT,
  TSC_INFO_SIZE,
  pageTypeHasData,
} from './libxc-format.js'

export interface CpuidLeaf {
  leaf: number
  subleaf: number
  a: number
  b: number
  c: number
  d: number
}

export interface MsrEntry {
  index: number
  /** Must be zero (MBZ). */
  flags: number
  value: bigint
}

export interface HvmParam {
  index: bigint
  value: bigint
}

export type PvVcpuKind = 'X86_PV_VCPU_BASIC' | 'X86_PV_VCPU_EXTENDED' | 'X86_PV_VCPU_XSAVE' | 'X86_PV_VCPU_MSRS'

export type LibxcRecord =
  | {kind: 'END'}
  | PageDataRecord
  | {kind: 'X86_PV_INFO'; guestWidth: number; ptLevels: number}
  | {kind: 'X86_PV_P2M_FRAMES'; startPfn: number; endPfn: number; frames: bigint[]}
  | {kind: PvVcpuKind; vcpuId: number; context: Buffer}
  | {kind: 'SHARED_INFO'; page: Buffer}
  | {kind: 'X86_TSC_INFO'; mode: number; khz: number; nsec: bigint; incarnation: number}
  | {kind: 'HVM_CONTEXT'; context: Buffer}
  | {kind: 'HVM_PARAMS'; params: HvmParam[]}
  | {kind: 'TOOLSTACK'; blob: Buffer}
  | {kind: 'VERIFY'}
  | {kind: 'CHECKPOINT'}
  | {kind: 'CHECKPOINT_DIRTY_PFN_LIST'; pfns: number[]}
  | {kind: 'STATIC_DATA_END'}
  | {kind: 'X86_CPUID_POLICY'; leaves: CpuidLeaf[]}
  | {kind: 'X86_MSR_POLICY'; msrs: MsrEntry[]}
  /** An unknown record with the optional bit set: kept so it can be shown or passed on. */
  | {kind: 'OPTIONAL'; type: number; body: Buffer}

/**
 * PAGE_DATA: `u32 count; u32 _res1; u64 pfn[count]; page_data[N][4096]`. `pages` holds the data of
 * the pages whose type carries data, in pfn order; as one Buffer or several (any split at page
 * boundaries), so a writer can pass guest pages without copying them.
 */
export interface PageDataRecord {
  kind: 'PAGE_DATA'
  pfns: number[]
  types: number[]
  pages: Buffer[]
}

export type LibxcKind = LibxcRecord['kind']

/** Bytes of page data a PAGE_DATA record must carry for its types. */
export function pageDataBytes(types: readonly number[]): number {
  let n = 0
  for (const t of types) if (pageTypeHasData(t)) n++
  return n * PAGE_SIZE
}

// ---------------------------------------------------------------------------------------------
// Encoding

/** Typed-array views read and write the host's byte order; the fast paths below need it little. */
export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

function empty(type: number): Buffer[] {
  return frameRecord(type, [])
}

/** The pfn word: `(type << 60) | pfn`, written as two little-endian u32 halves. */
export function writePfnWord(buf: Buffer, offset: number, pfn: number, type: number): void {
  if (!Number.isInteger(pfn) || pfn < 0 || pfn >= PFN_LIMIT) throw new RangeError(`pfn ${pfn} is not a 52-bit frame number`)
  if (!Number.isInteger(type) || type < 0 || type > 0xf) throw new RangeError(`page type ${type} is not 4 bits`)
  const high = Math.floor(pfn / 2 ** 32)
  buf.writeUInt32LE(pfn >>> 0, offset)
  buf.writeUInt32LE(((type << 28) | high) >>> 0, offset + 4)
}

/** Header and pfn array of a PAGE_DATA record; the page buffers follow as given (neighbours joined). */
export function encodePageData(rec: Omit<PageDataRecord, 'kind'>): Buffer[] {
  const head = pageDataHead(rec.pfns, rec.types)
  let given = 0
  for (const p of rec.pages) given += p.length
  const expected = pageDataBytes(rec.types)
  if (given !== expected) throw new RangeError(`PAGE_DATA carries ${given} bytes of pages, its types need ${expected}`)
  return frameRecord(LIBXC.PAGE_DATA, [head, ...coalesceViews(rec.pages)])
}

/**
 * The record header and pfn array of a PAGE_DATA record whose page data the writer sends itself
 * (fd to fd, never through a buffer): the record is these parts followed by exactly
 * pageDataBytes(types) bytes of pages in pfn order. No padding follows: the length is a multiple of 8.
 */
export function encodePageDataHead(pfns: readonly number[], types: readonly number[]): Buffer[] {
  const head = pageDataHead(pfns, types)
  const length = head.length + pageDataBytes(types)
  if (length > REC_LENGTH_MAX) throw new RangeError(`PAGE_DATA of ${length} bytes exceeds REC_LENGTH_MAX (${REC_LENGTH_MAX})`)
  return [encodeRecordHeader(LIBXC.PAGE_DATA, length), head]
}

/** A run of bytes in a file of pages (page pfn at byte pfn * 4096): where page data comes from or goes. */
export interface FileRun {
  readonly offset: number
  readonly length: number
}

/** The runs of a file of pages that hold `pfns`, in their order, neighbours joined. */
export function pageFileRuns(pfns: readonly number[]): FileRun[] {
  const runs: FileRun[] = []
  let start = -1
  let count = 0
  for (const pfn of pfns) {
    if (count && pfn === start + count) {
      count++
      continue
    }
    if (count) runs.push({offset: start * PAGE_SIZE, length: count * PAGE_SIZE})
    start = pfn
    count = 1
  }
  if (count) runs.push({offset: start * PAGE_SIZE, length: count * PAGE_SIZE})
  return runs
}

/** `u32 count; u32 _res1; u64 pfn[count]` with each type in the top 4 bits of its pfn word. */
function pageDataHead(pfns: readonly number[], types: readonly number[]): Buffer {
  const count = pfns.length
  if (count === 0) throw new RangeError('PAGE_DATA needs at least one pfn')
  if (types.length !== count) throw new RangeError('PAGE_DATA pfns and types differ in length')
  // A fresh allocation is 8-byte aligned, so the pfn words can be written as 32-bit halves directly.
  const head = Buffer.alloc(8 + 8 * count)
  const words = new Uint32Array(head.buffer, head.byteOffset, head.length / 4)
  words[0] = count
  for (let i = 0; i < count; i++) {
    const pfn = pfns[i]!
    const type = types[i]!
    if (HOST_IS_LITTLE_ENDIAN && pfn >>> 0 === pfn && (type & 0xf) === type) {
      words[2 + 2 * i] = pfn
      words[3 + 2 * i] = type << 28
    } else {
      writePfnWord(head, 8 + 8 * i, pfn, type)
    }
  }
  return head
}

function vcpuBody(vcpuId: number, context: Buffer): Buffer[] {
  const head = Buffer.alloc(8)
  head.writeUInt32LE(vcpuId, 0)
  return [head, context]
}

function u64List(values: readonly (bigint | number)[], prefix = 0): Buffer {
  const buf = Buffer.alloc(prefix + 8 * values.length)
  values.forEach((v, i) => buf.writeBigUInt64LE(BigInt(v), prefix + 8 * i))
  return buf
}

/** Encodes a record as buffers for a vectored write (header, body parts, padding). */
export function encodeLibxcRecord(rec: LibxcRecord): Buffer[] {
  switch (rec.kind) {
    case 'END':
    case 'VERIFY':
    case 'CHECKPOINT':
    case 'STATIC_DATA_END':
      return empty(LIBXC[rec.kind])
    case 'PAGE_DATA':
      return encodePageData(rec)
    case 'X86_PV_INFO': {
      const b = Buffer.alloc(8)
      b.writeUInt8(rec.guestWidth, 0)
      b.writeUInt8(rec.ptLevels, 1)
      return frameRecord(LIBXC.X86_PV_INFO, [b])
    }
    case 'X86_PV_P2M_FRAMES': {
      const b = u64List(rec.frames, 8)
      b.writeUInt32LE(rec.startPfn, 0)
      b.writeUInt32LE(rec.endPfn, 4)
      return frameRecord(LIBXC.X86_PV_P2M_FRAMES, [b])
    }
    case 'X86_PV_VCPU_BASIC':
    case 'X86_PV_VCPU_EXTENDED':
    case 'X86_PV_VCPU_XSAVE':
    case 'X86_PV_VCPU_MSRS':
      return frameRecord(LIBXC[rec.kind], vcpuBody(rec.vcpuId, rec.context))
    case 'SHARED_INFO':
      if (rec.page.length !== PAGE_SIZE) throw new RangeError('SHARED_INFO must be one page')
      return frameRecord(LIBXC.SHARED_INFO, [rec.page])
    case 'X86_TSC_INFO': {
      const b = Buffer.alloc(TSC_INFO_SIZE)
      b.writeUInt32LE(rec.mode, 0)
      b.writeUInt32LE(rec.khz, 4)
      b.writeBigUInt64LE(rec.nsec, 8)
      b.writeUInt32LE(rec.incarnation, 16)
      return frameRecord(LIBXC.X86_TSC_INFO, [b])
    }
    case 'HVM_CONTEXT':
      if (rec.context.length === 0) throw new RangeError('HVM_CONTEXT must not be empty')
      return frameRecord(LIBXC.HVM_CONTEXT, [rec.context])
    case 'HVM_PARAMS': {
      const b = Buffer.alloc(8 + HVM_PARAM_ENTRY_SIZE * rec.params.length)
      b.writeUInt32LE(rec.params.length, 0)
      rec.params.forEach((p, i) => {
        b.writeBigUInt64LE(p.index, 8 + 16 * i)
        b.writeBigUInt64LE(p.value, 16 + 16 * i)
      })
      return frameRecord(LIBXC.HVM_PARAMS, [b])
    }
    case 'TOOLSTACK':
      return frameRecord(LIBXC.TOOLSTACK, [rec.blob])
    case 'CHECKPOINT_DIRTY_PFN_LIST':
      return frameRecord(LIBXC.CHECKPOINT_DIRTY_PFN_LIST, [u64List(rec.pfns)])
    case 'X86_CPUID_POLICY': {
      const b = Buffer.alloc(CPUID_LEAF_SIZE * rec.leaves.length)
      rec.leaves.forEach((l, i) => {
        const o = CPUID_LEAF_SIZE * i
        b.writeUInt32LE(l.leaf, o)
        b.writeUInt32LE(l.subleaf, o + 4)
        b.writeUInt32LE(l.a, o + 8)
        b.writeUInt32LE(l.b, o + 12)
        b.writeUInt32LE(l.c, o + 16)
        b.writeUInt32LE(l.d, o + 20)
      })
      return frameRecord(LIBXC.X86_CPUID_POLICY, [b])
    }
    case 'X86_MSR_POLICY': {
      const b = Buffer.alloc(MSR_ENTRY_SIZE * rec.msrs.length)
      rec.msrs.forEach((m, i) => {
        const o = MSR_ENTRY_SIZE * i
        b.writeUInt32LE(m.index, o)
        b.writeUInt32LE(m.flags, o + 4)
        b.writeBigUInt64LE(m.value, o + 8)
      })
      return frameRecord(LIBXC.X86_MSR_POLICY, [b])
    }
    case 'OPTIONAL':
      return frameRecord(rec.type, [rec.body])
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding (of bodies already checked by the rules)

export function readPfnWord(body: Buffer, offset: number): {pfn: number; type: number; reserved: number} {
  const low = body.readUInt32LE(offset)
  const high = body.readUInt32LE(offset + 4)
  return {pfn: (high & 0xfffff) * 2 ** 32 + low, type: high >>> 28, reserved: (high >>> 20) & 0xff}
}

function readU64s(body: Buffer, from: number): bigint[] {
  const out: bigint[] = []
  for (let o = from; o + 8 <= body.length; o += 8) out.push(body.readBigUInt64LE(o))
  return out
}

export function decodeCheckedBody(type: number, body: Buffer): LibxcRecord {
  switch (type) {
    case LIBXC.END:
      return {kind: 'END'}
    case LIBXC.VERIFY:
      return {kind: 'VERIFY'}
    case LIBXC.CHECKPOINT:
      return {kind: 'CHECKPOINT'}
    case LIBXC.STATIC_DATA_END:
      return {kind: 'STATIC_DATA_END'}
    case LIBXC.PAGE_DATA: {
      const count = body.readUInt32LE(0)
      const pfns = new Array<number>(count)
      const types = new Array<number>(count)
      for (let i = 0; i < count; i++) {
        const w = readPfnWord(body, 8 + 8 * i)
        pfns[i] = w.pfn
        types[i] = w.type
      }
      const data = body.subarray(8 + 8 * count)
      return {kind: 'PAGE_DATA', pfns, types, pages: data.length ? [data] : []}
    }
    case LIBXC.X86_PV_INFO:
      return {kind: 'X86_PV_INFO', guestWidth: body.readUInt8(0), ptLevels: body.readUInt8(1)}
    case LIBXC.X86_PV_P2M_FRAMES:
      return {
        kind: 'X86_PV_P2M_FRAMES',
        startPfn: body.readUInt32LE(0),
        endPfn: body.readUInt32LE(4),
        frames: readU64s(body, 8),
      }
    case LIBXC.X86_PV_VCPU_BASIC:
    case LIBXC.X86_PV_VCPU_EXTENDED:
    case LIBXC.X86_PV_VCPU_XSAVE:
    case LIBXC.X86_PV_VCPU_MSRS: {
      const kind = (
        {
          [LIBXC.X86_PV_VCPU_BASIC]: 'X86_PV_VCPU_BASIC',
          [LIBXC.X86_PV_VCPU_EXTENDED]: 'X86_PV_VCPU_EXTENDED',
          [LIBXC.X86_PV_VCPU_XSAVE]: 'X86_PV_VCPU_XSAVE',
          [LIBXC.X86_PV_VCPU_MSRS]: 'X86_PV_VCPU_MSRS',
        } as const
      )[type]
      return {kind, vcpuId: body.readUInt32LE(0), context: body.subarray(8)}
    }
    case LIBXC.SHARED_INFO:
      return {kind: 'SHARED_INFO', page: body}
    case LIBXC.X86_TSC_INFO:
      return {
        kind: 'X86_TSC_INFO',
        mode: body.readUInt32LE(0),
        khz: body.readUInt32LE(4),
        nsec: body.readBigUInt64LE(8),
        incarnation: body.readUInt32LE(16),
      }
    case LIBXC.HVM_CONTEXT:
      return {kind: 'HVM_CONTEXT', context: body}
    case LIBXC.HVM_PARAMS: {
      const count = body.readUInt32LE(0)
      const params: HvmParam[] = []
      for (let i = 0; i < count; i++) {
        params.push({index: body.readBigUInt64LE(8 + 16 * i), value: body.readBigUInt64LE(16 + 16 * i)})
      }
      return {kind: 'HVM_PARAMS', params}
    }
    case LIBXC.TOOLSTACK:
      return {kind: 'TOOLSTACK', blob: body}
    case LIBXC.CHECKPOINT_DIRTY_PFN_LIST:
      return {kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: readU64s(body, 0).map(Number)}
    case LIBXC.X86_CPUID_POLICY: {
      const leaves: CpuidLeaf[] = []
      for (let o = 0; o < body.length; o += CPUID_LEAF_SIZE) {
        leaves.push({
          leaf: body.readUInt32LE(o),
          subleaf: body.readUInt32LE(o + 4),
          a: body.readUInt32LE(o + 8),
          b: body.readUInt32LE(o + 12),
          c: body.readUInt32LE(o + 16),
          d: body.readUInt32LE(o + 20),
        })
      }
      return {kind: 'X86_CPUID_POLICY', leaves}
    }
    case LIBXC.X86_MSR_POLICY: {
      const msrs: MsrEntry[] = []
      for (let o = 0; o < body.length; o += MSR_ENTRY_SIZE) {
        msrs.push({index: body.readUInt32LE(o), flags: body.readUInt32LE(o + 4), value: body.readBigUInt64LE(o + 8)})
      }
      return {kind: 'X86_MSR_POLICY', msrs}
    }
    default:
      return {kind: 'OPTIONAL', type, body}
  }
}
