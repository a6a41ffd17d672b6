/**
 * The xl savefile / migration preamble (XEN-FACTS §1.9): 32-byte magic, byte-order mark, flags and
 * optional data (u32 config length + the config with its NUL), all in host (x86: little) byte order.
 */
import type {ByteSource} from './byte-source.js'
import {fail, hex, type ErrorSite} from './errors.js'

export const XL_MAGIC = Buffer.from('Xen saved domain, xl format\n \0 \r', 'latin1')
export const XL_HEADER_SIZE = 48
export const XL_BYTEORDER = 0x01020304
export const XL_FLAG_JSON = 0x1
export const XL_FLAG_STREAMV2 = 0x2
const XL_KNOWN_MANDATORY = XL_FLAG_JSON | XL_FLAG_STREAMV2
/** Bound on the optional data we accept from a peer: a domain config is far smaller. */
export const XL_OPTIONAL_DATA_MAX = 16 * 1024 * 1024

export interface XlHeader {
  mandatoryFlags: number
  optionalFlags: number
  /**
   * The domain config: JSON when mandatoryFlags has JSON, else xl.cfg text. Without its trailing
   * NUL. Absent when the file carries no config.
   */
  config?: string
}

/** What follows the header: 2 = a libxl v2 stream, 1 = a legacy stream. */
export function xlStreamVersion(h: XlHeader): 1 | 2 {
  return h.mandatoryFlags & XL_FLAG_STREAMV2 ? 2 : 1
}

/** Encodes the header and optional data as xl writes them: flags JSON|STREAMv2 when a config is given. */
export function encodeXlHeader(opts: {config?: string; mandatoryFlags?: number; optionalFlags?: number} = {}): Buffer {
  const config = opts.config === undefined ? undefined : Buffer.concat([Buffer.from(opts.config, 'utf8'), Buffer.alloc(1)])
  const mandatory = opts.mandatoryFlags ?? (XL_FLAG_STREAMV2 | (config ? XL_FLAG_JSON : 0))
  const optLen = config ? 4 + config.length : 0
  const b = Buffer.alloc(XL_HEADER_SIZE + optLen)
  XL_MAGIC.copy(b, 0)
  b.writeUInt32LE(XL_BYTEORDER, 32)
  b.writeUInt32LE(mandatory, 36)
  b.writeUInt32LE(opts.optionalFlags ?? 0, 40)
  b.writeUInt32LE(optLen, 44)
  if (config) {
    b.writeUInt32LE(config.length, 48)
    config.copy(b, 52)
  }
  return b
}

export interface XlFixedHeader {
  mandatoryFlags: number
  optionalFlags: number
  optionalDataLength: number
}

export function decodeXlFixedHeader(b: Buffer, offset = 0): XlFixedHeader {
  const site: ErrorSite = {format: 'xl', offset, part: 'savefile header'}
  if (!b.subarray(0, 32).equals(XL_MAGIC)) fail(site, 'bad-magic', 'File has wrong magic number - corrupt or for a different tool?')
  const order = b.readUInt32LE(32)
  if (order !== XL_BYTEORDER) fail(site, 'bad-options', `File has wrong byte order (${hex(order, 8)})`)
  const mandatoryFlags = b.readUInt32LE(36)
  const unknown = (mandatoryFlags & ~XL_KNOWN_MANDATORY) >>> 0
  if (unknown) fail(site, 'bad-options', `Savefile has mandatory flag(s) ${hex(unknown)} which are not supported; need newer xl`)
  const optionalDataLength = b.readUInt32LE(44)
  if (optionalDataLength > XL_OPTIONAL_DATA_MAX) {
    fail(site, 'too-long', `optional data of ${optionalDataLength} bytes exceeds the maximum of ${XL_OPTIONAL_DATA_MAX}`)
  }
  return {mandatoryFlags, optionalFlags: b.readUInt32LE(40), optionalDataLength}
}

export function decodeXlOptionalData(fixed: XlFixedHeader, data: Buffer, offset: number): XlHeader {
  const site: ErrorSite = {format: 'xl', offset, part: 'optional data'}
  const header: XlHeader = {mandatoryFlags: fixed.mandatoryFlags, optionalFlags: fixed.optionalFlags}
  if (data.length === 0) return header
  if (data.length < 4) fail(site, 'truncated', 'Savefile truncated: no room for the config length')
  const configLength = data.readUInt32LE(0)
  if (configLength > data.length - 4) {
    fail(site, 'truncated', `Savefile truncated: config of ${configLength} bytes in ${data.length - 4} bytes of optional data`)
  }
  let config = data.subarray(4, 4 + configLength)
  if (config.length && config[config.length - 1] === 0) config = config.subarray(0, config.length - 1)
  header.config = config.toString('utf8')
  return header
}

/** Reads the header and its optional data: exactly 48 + optional_data_len bytes. */
export async function readXlHeader(source: ByteSource): Promise<XlHeader> {
  const offset = source.offset
  const b = await source.read(XL_HEADER_SIZE)
  if (b.length < XL_HEADER_SIZE) {
    fail({format: 'xl', offset, part: 'savefile header'}, 'truncated', `stream ends after ${b.length} of ${XL_HEADER_SIZE} header bytes`)
  }
  const fixed = decodeXlFixedHeader(b, offset)
  const dataOffset = source.offset
  const data = await source.read(fixed.optionalDataLength)
  if (data.length < fixed.optionalDataLength) {
    fail({format: 'xl', offset: dataOffset, part: 'optional data'}, 'truncated', `Savefile truncated: ${data.length} of ${fixed.optionalDataLength} bytes of optional data`)
  }
  return decodeXlOptionalData(fixed, data, dataOffset)
}
