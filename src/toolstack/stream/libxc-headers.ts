/** The libxc image header (24 bytes, big-endian) and domain header (16 bytes, little-endian). */
import type {ByteSource} from './byte-source.js'
import {fail, hex, type ErrorSite} from './errors.js'
import {
  DOMAIN_HEADER_SIZE,
  DOMAIN_TYPE,
  IHDR_ID,
  IHDR_MARKER,
  IHDR_OPT_BIG_ENDIAN,
  IHDR_OPT_RESERVED_MASK,
  IHDR_VERSION,
  IMAGE_HEADER_SIZE,
  PAGE_SHIFT,
  type DomainType,
} from './libxc-format.js'

export interface LibxcImageHeader {
  /** 2 or 3; writers emit 3. */
  version: number
}

export interface LibxcDomainHeader {
  type: DomainType
  pageShift: number
  /** 0 for a stream converted from the legacy format. */
  xenMajor: number
  xenMinor: number
}

export function encodeImageHeader(h: LibxcImageHeader = {version: IHDR_VERSION}): Buffer {
  const b = Buffer.alloc(IMAGE_HEADER_SIZE)
  b.writeBigUInt64BE(IHDR_MARKER, 0)
  b.writeUInt32BE(IHDR_ID, 8)
  b.writeUInt32BE(h.version, 12)
  b.writeUInt16BE(0, 16) // options: little-endian body
  return b
}

export function encodeDomainHeader(h: LibxcDomainHeader): Buffer {
  const b = Buffer.alloc(DOMAIN_HEADER_SIZE)
  b.writeUInt32LE(h.type, 0)
  b.writeUInt16LE(h.pageShift, 4)
  b.writeUInt32LE(h.xenMajor, 8)
  b.writeUInt32LE(h.xenMinor, 12)
  return b
}

async function readExactly(source: ByteSource, size: number, site: ErrorSite): Promise<Buffer> {
  const b = await source.read(size)
  if (b.length < size) fail(site, 'truncated', `stream ends after ${b.length} of ${size} bytes`)
  return b
}

export function decodeImageHeader(b: Buffer, offset = 0): LibxcImageHeader {
  const site: ErrorSite = {format: 'libxc', offset, part: 'image header'}
  const marker = b.readBigUInt64BE(0)
  if (marker !== IHDR_MARKER) fail(site, 'bad-magic', `marker ${hex(marker, 16)}, expected ${hex(IHDR_MARKER, 16)}`)
  const id = b.readUInt32BE(8)
  if (id !== IHDR_ID) fail(site, 'bad-magic', `id ${hex(id, 8)}, expected ${hex(IHDR_ID, 8)} ("XENF")`)
  const version = b.readUInt32BE(12)
  if (version < 2 || version > 3) fail(site, 'bad-version', `version ${version}, expected 2 <= version <= 3`)
  const options = b.readUInt16BE(16)
  if (options & IHDR_OPT_RESERVED_MASK) fail(site, 'reserved', `reserved option bits set: ${hex(options & IHDR_OPT_RESERVED_MASK, 4)}`)
  if (options & IHDR_OPT_BIG_ENDIAN) fail(site, 'bad-options', 'big-endian streams are not supported')
  const res1 = b.readUInt16BE(18)
  const res2 = b.readUInt32BE(20)
  if (res1 || res2) fail(site, 'reserved', `reserved fields are ${hex(res1, 4)}:${hex(res2, 8)}, must be zero`)
  return {version}
}

export function decodeDomainHeader(b: Buffer, offset = 0): LibxcDomainHeader {
  const site: ErrorSite = {format: 'libxc', offset, part: 'domain header'}
  const type = b.readUInt32LE(0)
  if (type !== DOMAIN_TYPE.X86_PV && type !== DOMAIN_TYPE.X86_HVM) {
    fail(site, 'bad-value', `domain type ${hex(type)} is not x86 PV (1) or x86 HVM (2)`)
  }
  const pageShift = b.readUInt16LE(4)
  if (pageShift !== PAGE_SHIFT) fail(site, 'bad-value', `page shift ${pageShift}, expected ${PAGE_SHIFT}`)
  const res = b.readUInt16LE(6)
  if (res) fail(site, 'reserved', `reserved field is ${hex(res, 4)}, must be zero`)
  return {type, pageShift, xenMajor: b.readUInt32LE(8), xenMinor: b.readUInt32LE(12)}
}

export async function readImageHeader(source: ByteSource): Promise<LibxcImageHeader> {
  const offset = source.offset
  return decodeImageHeader(await readExactly(source, IMAGE_HEADER_SIZE, {format: 'libxc', offset, part: 'image header'}), offset)
}

export async function readDomainHeader(source: ByteSource): Promise<LibxcDomainHeader> {
  const offset = source.offset
  return decodeDomainHeader(await readExactly(source, DOMAIN_HEADER_SIZE, {format: 'libxc', offset, part: 'domain header'}), offset)
}

export function domainTypeName(type: number): string {
  return type === DOMAIN_TYPE.X86_HVM ? 'x86 HVM' : type === DOMAIN_TYPE.X86_PV ? 'x86 PV' : hex(type)
}
