/**
 * The xl layer of a savefile and of a migration stream (XEN-FACTS §1.9; xl_saverestore.c
 * save_domain_core_writeconfig, xl_vmcontrol.c create_domain): the 48-byte header, then the optional
 * data `u32 config_len` + the domain config JSON with its NUL. Written and read on a raw fd with
 * exact lengths: what follows belongs to the libxl layer.
 */
import {writeAll} from '../fd/index.js'
import {
  StreamError,
  XL_BYTEORDER,
  XL_FLAG_JSON,
  XL_FLAG_STREAMV2,
  XL_HEADER_SIZE,
  XL_MAGIC,
  decodeXlFixedHeader,
  decodeXlOptionalData,
  encodeXlHeader,
  fail,
  type ByteSource,
} from '../stream/index.js'
import {fromStreamError, ioError} from '../libxl/index.js'
import type {MigrateEventHandler, SavefileInfo} from '../libxl/index.js'

export interface WriteSavefileHeaderOptions {
  /** The stream fd (a file or the migration stream). */
  readonly fd: number
  /** The domain config as libxl JSON; absent: the savefile carries no config. */
  readonly configJson?: string
  /** How the destination is named in events (the file name; xl's `source`). */
  readonly source: string
  readonly onEvent?: MigrateEventHandler
}

/** The header and optional data as xl writes them (save_domain_core_writeconfig). */
export function encodeSavefileHeader(configJson?: string): Buffer {
  if (configJson !== undefined && configJson.length > 0) return encodeXlHeader({config: configJson})
  // No config: xl still writes the u32 config_len (0) as optional data, and no JSON flag.
  const head = encodeXlHeader({mandatoryFlags: XL_FLAG_STREAMV2})
  const b = Buffer.concat([head, Buffer.alloc(4)])
  b.writeUInt32LE(4, 44)
  return b
}

export function savefileInfo(header: Buffer): SavefileInfo {
  return {mandatoryFlags: header.readUInt32LE(36), optionalFlags: header.readUInt32LE(40), optionalDataLength: header.readUInt32LE(44)}
}

/** Writes the header and the config; emits `savefile-written` (xl's "Saving to ..." line) after. */
export async function writeSavefileHeader(opts: WriteSavefileHeaderOptions): Promise<SavefileInfo> {
  const header = encodeSavefileHeader(opts.configJson)
  const info = savefileInfo(header)
  if (!(info.mandatoryFlags & XL_FLAG_JSON)) opts.onEvent?.({kind: 'savefile-without-config'})
  try {
    await writeAll(opts.fd, [header], {what: `the savefile header of ${opts.source}`})
  } catch (err) {
    throw ioError(err, 'savefile header', `cannot write the savefile header to ${opts.source}`)
  }
  opts.onEvent?.({kind: 'savefile-written', source: opts.source, info})
  return info
}

export interface SavefileHeader {
  readonly info: SavefileInfo
  /** The config text without its NUL: JSON when `json`, else xl.cfg text. Absent when none. */
  readonly config?: string
  readonly json: boolean
  /** 2: a libxl v2 stream follows; 1: a legacy stream. */
  readonly streamVersion: 1 | 2
  /** Bytes of header and optional data read. */
  readonly length: number
}

export interface ReadSavefileHeaderOptions {
  /** How the source is named in events: the file name, or `<incoming migration stream>`. */
  readonly source: string
  readonly onEvent?: MigrateEventHandler
}

/**
 * Reads the header and its optional data, exactly, in xl's order: magic and byte order are checked
 * before `savefile-loading` is emitted, the mandatory flags after; `savefile-config` comes when
 * there is optional data. Stream faults are MigrateErrors with the offset (`stream`), read
 * failures `io`.
 */
export async function readSavefileHeader(source: ByteSource, opts: ReadSavefileHeaderOptions): Promise<SavefileHeader> {
  const start = source.offset
  try {
    const fixed = await readOrIo(source, XL_HEADER_SIZE, opts.source)
    const site = {format: 'xl' as const, offset: start, part: 'savefile header'}
    if (fixed.length < XL_HEADER_SIZE) {
      fail(site, 'truncated', `file/stream truncated reading header from ${opts.source}: ${fixed.length} of ${XL_HEADER_SIZE} bytes`)
    }
    if (!fixed.subarray(0, 32).equals(XL_MAGIC)) fail(site, 'bad-magic', 'File has wrong magic number - corrupt or for a different tool?')
    if (fixed.readUInt32LE(32) !== XL_BYTEORDER) fail(site, 'bad-options', 'File has wrong byte order')
    const info = savefileInfo(fixed)
    opts.onEvent?.({kind: 'savefile-loading', source: opts.source, info})
    const decoded = decodeXlFixedHeader(fixed, start)
    const json = (decoded.mandatoryFlags & XL_FLAG_JSON) !== 0
    const dataOffset = source.offset
    let config: string | undefined
    if (decoded.optionalDataLength > 0) {
      opts.onEvent?.({kind: 'savefile-config', json})
      const data = await readOrIo(source, decoded.optionalDataLength, opts.source)
      if (data.length < decoded.optionalDataLength) {
        fail({format: 'xl', offset: dataOffset, part: 'optional data'}, 'truncated', `Savefile truncated: ${data.length} of ${decoded.optionalDataLength} bytes of optional data`)
      }
      const h = decodeXlOptionalData(decoded, data, dataOffset)
      if (h.config !== undefined && h.config.length > 0) config = h.config
    }
    return {
      info,
      ...(config !== undefined ? {config} : {}),
      json,
      streamVersion: decoded.mandatoryFlags & XL_FLAG_STREAMV2 ? 2 : 1,
      length: source.offset - start,
    }
  } catch (err) {
    if (err instanceof StreamError) throw fromStreamError(err, 'savefile header')
    throw err
  }
}

async function readOrIo(source: ByteSource, length: number, name: string): Promise<Buffer> {
  try {
    return await source.read(length)
  } catch (err) {
    throw ioError(err, 'savefile header', `cannot read ${name}`)
  }
}

