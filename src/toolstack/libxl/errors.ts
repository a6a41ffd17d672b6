/**
 * The one error type of the xl-level sender and receiver. It names the step that failed (which
 * layer of the stream, or which action around it), and for a bad stream the format, the record and
 * the byte offset, as the StreamError it came from does; after the libxc hand-off on a pipe the
 * offset is unknown (the helper read an unknown number of bytes) and the error says so instead of
 * printing a wrong one.
 */
import type {HelperError} from '../helper/index.js'
import type {RecordRef, StreamError, StreamFormat} from '../stream/index.js'
import {FdError} from '../fd/index.js'

export type MigrateErrorCode =
  | 'open' // the savefile cannot be opened (or created)
  | 'io' // reading or writing the stream fd failed (EPIPE, ENOSPC, EIO, ...)
  | 'stream' // the stream is malformed or truncated: format, record and offset are set
  | 'helper' // the save/restore helper failed or could not run
  | 'suspend' // the guest could not be suspended
  | 'hypervisor' // a hypervisor operation around the stream failed (device state, info)
  | 'config' // the config in the savefile cannot be used

/** Where in the save or restore it failed. */
export type MigrateStep =
  | 'open'
  | 'create'
  | 'savefile header'
  | 'libxl header'
  | 'libxl records'
  | 'libxc stream'
  | 'emulator context'
  | 'device model'
  | 'end'
  | 'unpause'
  | 'after save'

export interface MigrateErrorInfo {
  readonly cause?: unknown
  /** A stream error: its format and record, when the fault is in a record. */
  readonly format?: StreamFormat
  readonly record?: RecordRef
  /**
   * The stream offset of the bytes at fault; `null` when it cannot be known (after the libxc
   * hand-off on a pipe). Absent when the error is not about a place in the stream.
   */
  readonly offset?: number | null
  /** After the hand-off on a pipe: the offset counted from the end of the libxc stream. */
  readonly offsetAfterLibxc?: number
  readonly helper?: HelperError
  /** The domain was suspended when the save failed (the caller resumes it). */
  readonly suspended?: boolean
}

export class MigrateError extends Error {
  override readonly name = 'MigrateError'
  readonly format?: StreamFormat
  readonly record?: RecordRef
  readonly offset?: number | null
  readonly offsetAfterLibxc?: number
  readonly helper?: HelperError

  constructor(
    readonly code: MigrateErrorCode,
    readonly step: MigrateStep,
    message: string,
    readonly info: MigrateErrorInfo = {},
  ) {
    super(message, info.cause === undefined ? undefined : {cause: info.cause})
    if (info.format !== undefined) this.format = info.format
    if (info.record !== undefined) this.record = info.record
    if (info.offset !== undefined) this.offset = info.offset
    if (info.offsetAfterLibxc !== undefined) this.offsetAfterLibxc = info.offsetAfterLibxc
    if (info.helper !== undefined) this.helper = info.helper
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      step: this.step,
      format: this.format,
      record: this.record,
      offset: this.offset,
      offsetAfterLibxc: this.offsetAfterLibxc,
      message: this.message,
    }
  }
}

/** A StreamError whose offset is right, as a MigrateError with the same message. */
export function fromStreamError(err: StreamError, step: MigrateStep): MigrateError {
  return new MigrateError('stream', step, err.message, {
    cause: err,
    format: err.format,
    offset: err.offset,
    ...(err.record ? {record: err.record} : {}),
  })
}

/**
 * A StreamError raised by a reader whose offsets count from the end of the libxc stream on a pipe:
 * the record is named, the absolute offset is not known.
 */
export function fromRelativeStreamError(err: StreamError, step: MigrateStep): MigrateError {
  const what = err.record ? `${err.record.name} record #${err.record.index}` : (err.part ?? 'stream')
  const message = `${err.format} ${what} at an unknown offset (${err.offset} bytes after the end of the libxc stream; the stream is a pipe): ${err.detail}`
  return new MigrateError('stream', step, message, {
    cause: err,
    format: err.format,
    offset: null,
    offsetAfterLibxc: err.offset,
    ...(err.record ? {record: err.record} : {}),
  })
}

/** A failed read or write of the stream, as a MigrateError of `step` (one that is already one stays). */
export function ioError(err: unknown, step: MigrateError['step'], what: string): MigrateError {
  if (err instanceof MigrateError) return err
  const why = err instanceof FdError ? err.detail : err instanceof Error ? err.message : String(err)
  return new MigrateError('io', step, `${what}: ${why}`, {cause: err})
}
