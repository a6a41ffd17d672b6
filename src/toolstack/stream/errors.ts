/**
 * The one error type of the stream codecs. It names the format, the record (type, name and index in
 * the stream) and the byte offset, so an operator can find the bad bytes with `xxd -s OFFSET`.
 */
export type StreamFormat = 'xl' | 'libxl' | 'libxc' | 'back-channel'

export type StreamErrorCode =
  | 'truncated' // the source ended inside a header or a record
  | 'bad-magic' // marker, ident or magic string is wrong
  | 'bad-version' // a version this reader does not speak
  | 'bad-options' // header options or flags we cannot honour (big endian, unknown mandatory flags)
  | 'reserved' // a reserved field or bit is not zero
  | 'bad-length' // a record's length breaks the rule for its type
  | 'too-long' // a length over the format's bound (REC_LENGTH_MAX, optional data bound)
  | 'bad-padding' // padding to the 8-byte boundary is not zero
  | 'unknown-record' // a mandatory record type this format does not define
  | 'bad-value' // a field holds a value outside its domain (page type, emulator id, guest width ...)
  | 'bad-order' // a record where the stream's rules do not allow it
  | 'pfn-out-of-range' // a pfn beyond the domain's size

export interface RecordRef {
  /** Numeric record type as on the wire. */
  readonly type: number
  /** Xen's name for the type (`PAGE_DATA`), or `0x...` when unknown. */
  readonly name: string
  /** 0-based position of the record among the records of its format in this stream. */
  readonly index: number
}

export class StreamError extends Error {
  override readonly name = 'StreamError'
  constructor(
    readonly format: StreamFormat,
    readonly code: StreamErrorCode,
    /** Offset of the first byte of the header or record at fault. */
    readonly offset: number,
    readonly detail: string,
    /** The record at fault; absent for stream headers. */
    readonly record?: RecordRef,
    /** What part of the stream, when not a record: `image header`, `domain header`, ... */
    readonly part?: string,
  ) {
    super(`${describeWhere(format, offset, record, part)}: ${detail}`)
  }

  toJSON(): Record<string, unknown> {
    return {
      format: this.format,
      code: this.code,
      offset: this.offset,
      record: this.record,
      part: this.part,
      message: this.message,
    }
  }
}

function describeWhere(format: StreamFormat, offset: number, record?: RecordRef, part?: string): string {
  const at = `at offset ${offset} (0x${offset.toString(16)})`
  if (record) return `${format} ${record.name} record #${record.index} ${at}`
  return `${format} ${part ?? 'stream'} ${at}`
}

/** Where an error is being raised: a record or a header part, at an offset. */
export interface ErrorSite {
  readonly format: StreamFormat
  readonly offset: number
  readonly record?: RecordRef
  readonly part?: string
}

export function fail(site: ErrorSite, code: StreamErrorCode, detail: string): never {
  throw new StreamError(site.format, code, site.offset, detail, site.record, site.part)
}

export function hex(n: number | bigint, width = 0): string {
  return `0x${n.toString(16).padStart(width, '0')}`
}
