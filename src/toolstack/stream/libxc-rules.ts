/**
 * Validation of single libxc records: the length rule of each type, reserved fields and bits,
 * PAGE_DATA arithmetic and value domains. Every rejection is a StreamError naming the record.
 * Rules that depend on the records around one (ordering) live in libxc-sequence.ts.
 */
import {fail, hex, type ErrorSite} from './errors.js'
import type {RawRecord} from './framing.js'
import {REC_TYPE_OPTIONAL} from './framing.js'
import {
  CPUID_LEAF_SIZE,
  HVM_PARAM_ENTRY_SIZE,
  LIBXC,
  MSR_ENTRY_SIZE,
  PAGE_SIZE,
  TSC_INFO_SIZE,
  isKnownLibxcType,
  isKnownPageType,
  libxcTypeName,
  PAGE_TYPE,
} from './libxc-format.js'
import {HOST_IS_LITTLE_ENDIAN, decodeCheckedBody, type LibxcRecord} from './libxc-records.js'

export function libxcSite(raw: RawRecord): ErrorSite {
  return {format: 'libxc', offset: raw.offset, record: {type: raw.type, name: libxcTypeName(raw.type), index: raw.index}}
}

function exactly(site: ErrorSite, body: Buffer, size: number): void {
  if (body.length !== size) fail(site, 'bad-length', `length ${body.length}, must be ${size}`)
}

function atLeast(site: ErrorSite, body: Buffer, size: number): void {
  if (body.length < size) fail(site, 'bad-length', `length ${body.length}, must be at least ${size}`)
}

function multipleOf(site: ErrorSite, body: Buffer, size: number, allowEmpty: boolean): void {
  if ((!allowEmpty && body.length === 0) || body.length % size !== 0) {
    fail(site, 'bad-length', `length ${body.length}, must be a ${allowEmpty ? '' : 'non-zero '}multiple of ${size}`)
  }
}

function zeroU32(site: ErrorSite, body: Buffer, offset: number, field: string): void {
  const v = body.readUInt32LE(offset)
  if (v !== 0) fail(site, 'reserved', `reserved field ${field} is ${hex(v)}, must be zero`)
}

/**
 * Checks a PAGE_DATA body and returns its pfns and types: one pass over the pfn words, as 32-bit
 * halves (low word: pfn bits 0-31; high word: type in bits 28-31, reserved 20-27, pfn bits 32-51).
 */
export function checkPageData(site: ErrorSite, body: Buffer): {pfns: number[]; types: number[]} {
  const count = checkPageDataCount(site, body, body.length)
  const {pfns, types} = checkPageDataHead(site, body.subarray(0, 8 + 8 * count), body.length)
  return {pfns, types}
}

/**
 * The first 8 bytes of a PAGE_DATA body of `length` bytes (`u32 count; u32 _res1`): checked, and
 * the count of pfns returned, so a reader knows how many bytes of pfn array follow (8 * count).
 */
export function checkPageDataCount(site: ErrorSite, first: Buffer, length: number): number {
  if (length < 8 || first.length < 8) fail(site, 'bad-length', `length ${length}, must be at least 8`)
  const count = first.readUInt32LE(0)
  zeroU32(site, first, 4, '_res1')
  if (count < 1) fail(site, 'bad-value', 'count is 0, a PAGE_DATA record carries at least one pfn')
  // Compare in floating point: count may be up to 2^32-1, so 8*count does not overflow a double.
  if (length < 8 + 8 * count) {
    fail(site, 'bad-length', `length ${length} is too short for ${count} pfns (${8 + 8 * count} bytes)`)
  }
  return count
}

/**
 * Checks the count and pfn array of a PAGE_DATA body of `length` bytes (`head` holds the first
 * 8 + 8 * count of them) and returns the pfns, their types and how many bytes of page data follow:
 * what a reader needs to move the page data itself, straight from its fd.
 */
export function checkPageDataHead(site: ErrorSite, head: Buffer, length: number): {pfns: number[]; types: number[]; dataBytes: number} {
  const count = checkPageDataCount(site, head, length)
  if (head.length < 8 + 8 * count) throw new RangeError(`a PAGE_DATA head of ${count} pfns needs ${8 + 8 * count} bytes, got ${head.length}`)
  const words =
    HOST_IS_LITTLE_ENDIAN && head.byteOffset % 4 === 0
      ? new Uint32Array(head.buffer, head.byteOffset + 8, 2 * count)
      : undefined
  const pfns = new Array<number>(count)
  const types = new Array<number>(count)
  let withData = 0
  for (let i = 0; i < count; i++) {
    const low = words ? words[2 * i]! : head.readUInt32LE(8 + 8 * i)
    const high = words ? words[2 * i + 1]! : head.readUInt32LE(12 + 8 * i)
    const type = high >>> 28
    const pfn = (high & 0xfffff) * 0x100000000 + low
    if (high & 0x0ff00000) fail(site, 'reserved', `reserved bits 52-59 set in pfn[${i}] (${hex((high >>> 20) & 0xff)})`)
    if (!isKnownPageType(type)) fail(site, 'bad-value', `unknown page type ${hex(type)} in pfn[${i}] (pfn ${hex(pfn)})`)
    if (type < PAGE_TYPE.BROKEN) withData++
    pfns[i] = pfn
    types[i] = type
  }
  const expected = 8 + 8 * count + PAGE_SIZE * withData
  if (length !== expected) {
    fail(site, 'bad-length', `length ${length}, expected 8 + ${8 * count} + ${PAGE_SIZE * withData} = ${expected} for ${count} pfns of which ${withData} carry data`)
  }
  return {pfns, types, dataBytes: PAGE_SIZE * withData}
}

function checkDirtyPfnList(site: ErrorSite, body: Buffer): void {
  multipleOf(site, body, 8, true)
  for (let o = 0; o < body.length; o += 8) {
    if (body.readUInt32LE(o + 4) >= 0x100000) {
      fail(site, 'pfn-out-of-range', `entry ${o / 8} (${hex(body.readBigUInt64LE(o))}) is not a 52-bit pfn`)
    }
  }
}

/** Checks a record's body against the rules of its type. */
export function checkLibxcBody(raw: RawRecord): void {
  const site = libxcSite(raw)
  const {body} = raw
  switch (raw.type) {
    case LIBXC.END:
    case LIBXC.VERIFY:
    case LIBXC.CHECKPOINT:
    case LIBXC.STATIC_DATA_END:
      return exactly(site, body, 0)
    case LIBXC.PAGE_DATA:
      checkPageData(site, body)
      return
    case LIBXC.X86_PV_INFO: {
      exactly(site, body, 8)
      const width = body.readUInt8(0)
      const levels = body.readUInt8(1)
      if (width !== 4 && width !== 8) fail(site, 'bad-value', `guest width ${width}, must be 4 or 8`)
      if (levels !== 3 && levels !== 4) fail(site, 'bad-value', `page-table levels ${levels}, must be 3 or 4`)
      if (body.readUInt16LE(2) !== 0 || body.readUInt32LE(4) !== 0) fail(site, 'reserved', 'reserved bytes 2-7 are not zero')
      return
    }
    case LIBXC.X86_PV_P2M_FRAMES: {
      atLeast(site, body, 8)
      multipleOf(site, body, 8, false)
      const start = body.readUInt32LE(0)
      const end = body.readUInt32LE(4)
      if (start > end) fail(site, 'bad-value', `start pfn ${hex(start)} exceeds end pfn ${hex(end)}`)
      return
    }
    case LIBXC.X86_PV_VCPU_BASIC:
    case LIBXC.X86_PV_VCPU_EXTENDED:
    case LIBXC.X86_PV_VCPU_XSAVE:
    case LIBXC.X86_PV_VCPU_MSRS:
      atLeast(site, body, 8)
      return zeroU32(site, body, 4, '_res1')
    case LIBXC.SHARED_INFO:
      return exactly(site, body, PAGE_SIZE)
    case LIBXC.X86_TSC_INFO:
      exactly(site, body, TSC_INFO_SIZE)
      return zeroU32(site, body, 20, '_res1')
    case LIBXC.HVM_CONTEXT:
      return atLeast(site, body, 1)
    case LIBXC.HVM_PARAMS: {
      atLeast(site, body, 8)
      const count = body.readUInt32LE(0)
      zeroU32(site, body, 4, '_res1')
      const expected = 8 + HVM_PARAM_ENTRY_SIZE * count
      if (body.length !== expected) fail(site, 'bad-length', `length ${body.length}, expected ${expected} for ${count} params`)
      return
    }
    case LIBXC.TOOLSTACK:
      return fail(site, 'unknown-record', 'TOOLSTACK records are deprecated and no receiver handles them')
    case LIBXC.CHECKPOINT_DIRTY_PFN_LIST:
      return checkDirtyPfnList(site, body)
    case LIBXC.X86_CPUID_POLICY:
      return multipleOf(site, body, CPUID_LEAF_SIZE, false)
    case LIBXC.X86_MSR_POLICY:
      multipleOf(site, body, MSR_ENTRY_SIZE, false)
      for (let o = 0; o < body.length; o += MSR_ENTRY_SIZE) zeroU32(site, body, o + 4, `flags of MSR entry ${o / MSR_ENTRY_SIZE}`)
      return
    default:
      if (isKnownLibxcType(raw.type)) throw new Error(`no rule for libxc record ${raw.type}`)
      if ((raw.type & REC_TYPE_OPTIONAL) === 0) {
        fail(site, 'unknown-record', `mandatory record type ${hex(raw.type, 8)} is not defined by libxc stream v3`)
      }
  }
}

/** Checks a framed record and decodes its body. */
export function decodeLibxcRecord(raw: RawRecord): LibxcRecord {
  if (raw.type === LIBXC.PAGE_DATA) {
    // The hot path: check and decode in one pass over the pfn words.
    const {pfns, types} = checkPageData(libxcSite(raw), raw.body)
    const data = raw.body.subarray(8 + 8 * pfns.length)
    return {kind: 'PAGE_DATA', pfns, types, pages: data.length ? [data] : []}
  }
  checkLibxcBody(raw)
  return decodeCheckedBody(raw.type, raw.body)
}
