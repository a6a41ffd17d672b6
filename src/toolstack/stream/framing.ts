/**
 * Record framing shared by the libxl and libxc formats: an 8-byte header `{u32 type; u32 length}`
 * in little-endian (the stream endianness on x86), `length` body bytes, then zero padding up to the
 * next multiple of 8.
 */
import type {ByteSource} from './byte-source.js'
import {fail, hex, type RecordRef, type StreamFormat} from './errors.js'

export const RECORD_HEADER_SIZE = 8
export const RECORD_ALIGN = 8
/** libxc's REC_LENGTH_MAX: 128 MiB, on write and on read. */
export const REC_LENGTH_MAX = 128 * 1024 * 1024
/** Bit 31 of a record type: a reader that does not know the record may skip it. */
export const REC_TYPE_OPTIONAL = 0x80000000

const ZEROS = Buffer.alloc(RECORD_ALIGN)

export function paddingOf(length: number): number {
  return (RECORD_ALIGN - (length % RECORD_ALIGN)) % RECORD_ALIGN
}

export function paddedLength(length: number): number {
  return length + paddingOf(length)
}

export function encodeRecordHeader(type: number, length: number): Buffer {
  const header = Buffer.allocUnsafe(RECORD_HEADER_SIZE)
  header.writeUInt32LE(type >>> 0, 0)
  header.writeUInt32LE(length >>> 0, 4)
  return header
}

/**
 * Frames a record as a list of buffers ready for a vectored write: the header, the body parts as
 * given (not copied) and the padding. The body length is the sum of the parts.
 */
export function frameRecord(type: number, body: readonly Buffer[]): Buffer[] {
  let length = 0
  for (const part of body) length += part.length
  if (length > REC_LENGTH_MAX) {
    throw new RangeError(`record ${hex(type)} of ${length} bytes exceeds REC_LENGTH_MAX (${REC_LENGTH_MAX})`)
  }
  const pad = paddingOf(length)
  const out = new Array<Buffer>(body.length + (pad ? 2 : 1))
  out[0] = encodeRecordHeader(type, length)
  for (let i = 0; i < body.length; i++) out[i + 1] = body[i]!
  if (pad) out[body.length + 1] = ZEROS.subarray(0, pad)
  return out
}

/**
 * Joins neighbouring views of the same memory into one view, so a batch of pages read from one
 * mapping travels as a few large parts instead of one small part per page.
 */
export function coalesceViews(parts: readonly Buffer[]): Buffer[] {
  const out: Buffer[] = []
  let first: Buffer | undefined // first part of the current run
  let runLength = 0
  let partsInRun = 0
  const flush = (): void => {
    if (!first) return
    out.push(partsInRun === 1 ? first : Buffer.from(first.buffer, first.byteOffset, runLength))
  }
  for (const part of parts) {
    if (part.length === 0) continue
    if (first && first.buffer === part.buffer && first.byteOffset + runLength === part.byteOffset) {
      runLength += part.length
      partsInRun++
      continue
    }
    flush()
    first = part
    runLength = part.length
    partsInRun = 1
  }
  flush()
  return out
}

/** A record as framed on the wire, its body not yet interpreted. */
export interface RawRecord {
  readonly type: number
  /** The body without padding (a view of what was read). */
  readonly body: Buffer
  /** Offset of the record header in the stream. */
  readonly offset: number
  /** 0-based position among the records of this format. */
  readonly index: number
}

export interface RecordHeader {
  readonly type: number
  readonly length: number
  readonly offset: number
}

export interface FrameReadOptions {
  readonly format: StreamFormat
  /** Index the next record will have. */
  readonly index: number
  /** Names for the record types of this format, for error messages. */
  readonly nameOf: (type: number) => string
  /** Largest body accepted; defaults to REC_LENGTH_MAX. */
  readonly maxLength?: number
}

/** Reads an 8-byte record header, or returns undefined when the source ends cleanly before it. */
export async function readRecordHeader(
  source: ByteSource,
  opts: FrameReadOptions,
  allowEof = false,
): Promise<RecordHeader | undefined> {
  const offset = source.offset
  const bytes = await source.read(RECORD_HEADER_SIZE)
  if (bytes.length === 0 && allowEof) return undefined
  if (bytes.length < RECORD_HEADER_SIZE) {
    fail(
      {format: opts.format, offset, part: `record header #${opts.index}`},
      'truncated',
      `stream ends after ${bytes.length} of ${RECORD_HEADER_SIZE} header bytes`,
    )
  }
  return {type: bytes.readUInt32LE(0), length: bytes.readUInt32LE(4), offset}
}

/**
 * Reads the padded body of a record whose header was read. The length is checked against the bound
 * before anything is allocated; the padding must be zero.
 */
export async function readRecordBody(
  source: ByteSource,
  header: RecordHeader,
  opts: FrameReadOptions,
): Promise<RawRecord> {
  const record: RecordRef = {type: header.type, name: opts.nameOf(header.type), index: opts.index}
  const site = {format: opts.format, offset: header.offset, record}
  const max = opts.maxLength ?? REC_LENGTH_MAX
  if (header.length > max) {
    fail(site, 'too-long', `length ${header.length} exceeds the maximum of ${max} bytes`)
  }
  const padded = paddedLength(header.length)
  const bytes = padded === 0 ? Buffer.alloc(0) : await source.read(padded)
  if (bytes.length < padded) {
    fail(site, 'truncated', `stream ends after ${bytes.length} of ${padded} body bytes`)
  }
  for (let i = header.length; i < padded; i++) {
    if (bytes[i] !== 0) fail(site, 'bad-padding', `padding byte ${i - header.length} is ${hex(bytes[i] ?? 0)}, not zero`)
  }
  return {type: header.type, body: bytes.subarray(0, header.length), offset: header.offset, index: opts.index}
}
