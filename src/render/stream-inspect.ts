/**
 * What `stream inspect` reads: any of the four stream formats, told apart by their first bytes when
 * not given, as one sequence of events, plus a tally of what went by for the summary. Holds no
 * record after it was counted: a stream of any size goes through in constant memory.
 */
import {
  BackChannelReader,
  IHDR_MARKER,
  LIBXC,
  LIBXL,
  LIBXL_IDENT,
  PAGE_SIZE,
  XL_MAGIC,
  pageTypeHasData,
  readMigrationStream,
  type BackChannelRecord,
  type ByteSource,
  type StreamEvent,
  type StreamType,
} from '../toolstack/stream/index.js'
import {ReplaySource} from '../toolstack/fd/index.js'

export const INSPECT_FORMATS = ['libxc', 'libxl', 'xl', 'back-channel'] as const
export type InspectFormat = (typeof INSPECT_FORMATS)[number]
export const STREAM_TYPES = ['plain', 'remus', 'colo', 'unknown'] as const

/** Bytes needed to tell the formats apart: the shortest leading structure is an 8-byte record header. */
export const SNIFF_LENGTH = 8

/**
 * The format a stream is in, from its first 8 bytes: the xl savefile magic, the libxl ident
 * "LibxlFmt", the libxc image marker (all ones), or else the header of a back-channel record
 * (CHECKPOINT_STATE or CHECKPOINT_DIRTY_PFN_LIST). Undefined when none fits.
 */
export function sniffStreamFormat(head: Buffer): InspectFormat | undefined {
  if (head.length < SNIFF_LENGTH) return undefined
  if (head.subarray(0, SNIFF_LENGTH).equals(XL_MAGIC.subarray(0, SNIFF_LENGTH))) return 'xl'
  const first = head.readBigUInt64BE(0)
  if (first === LIBXL_IDENT) return 'libxl'
  if (first === IHDR_MARKER) return 'libxc'
  const type = head.readUInt32LE(0)
  if (type === LIBXL.CHECKPOINT_STATE || type === LIBXC.CHECKPOINT_DIRTY_PFN_LIST) return 'back-channel'
  return undefined
}

/** The stream could not be told apart from anything else; the reader never started. */
export class UnknownFormatError extends Error {
  override readonly name = 'UnknownFormatError'
  readonly code = 'unknown-format'
  constructor(
    readonly offset: number,
    readonly head: Buffer,
  ) {
    super(
      head.length === 0
        ? 'the stream is empty'
        : head.length < SNIFF_LENGTH
          ? `the stream is ${head.length} bytes long, too short for any stream format`
          : `cannot tell the stream format from its first bytes (${head.subarray(0, SNIFF_LENGTH).toString('hex')}): ` +
            'not an xl savefile, a libxl or libxc stream, or a COLO back channel; give -f to read it as one',
    )
  }
}

/** A record of the COLO back channel, or the end of the channel. */
export type BackChannelEvent =
  | {layer: 'back'; record: BackChannelRecord; offset: number; index: number; length: number}
  | {layer: 'eof'; offset: number; checkpoints: number; expecting: string}

export type InspectEvent = {layer: 'format'; format: InspectFormat; sniffed: boolean} | StreamEvent | BackChannelEvent

export interface InspectOptions {
  /** Undefined: tell from the first bytes. */
  readonly format?: InspectFormat
  readonly streamType: StreamType
  readonly p2mSize?: number
}

/**
 * Reads a stream of any format, event by event. The first event names the format; every later one
 * is a header, a record, or a checkpointed stream's end between checkpoints. Throws StreamError
 * (or UnknownFormatError) at the first fault, after yielding everything before it.
 */
export async function* inspectStream(source: ByteSource, opts: InspectOptions): AsyncGenerator<InspectEvent> {
  let format = opts.format
  let input = source
  if (!format) {
    const offset = source.offset
    const head = await source.read(SNIFF_LENGTH)
    format = sniffStreamFormat(head)
    if (!format) throw new UnknownFormatError(offset, head)
    input = new ReplaySource(head, source)
  }
  yield {layer: 'format', format, sniffed: !opts.format}
  const p2m = opts.p2mSize !== undefined ? {p2mSize: opts.p2mSize} : {}
  if (format === 'back-channel') {
    const reader = new BackChannelReader(input, p2m)
    let checkpoints = 0
    for (;;) {
      const read = await reader.next(true)
      if (!read) {
        yield {layer: 'eof', offset: input.offset, checkpoints, expecting: reader.expecting}
        return
      }
      // The secondary ends every checkpoint cycle with SVM_RESUMED.
      if (read.record.kind === 'CHECKPOINT_STATE' && read.record.state === 'SVM_RESUMED') checkpoints++
      yield {layer: 'back', ...read}
    }
  }
  yield* readMigrationStream(input, {format, streamType: opts.streamType, ...p2m})
}

/** What kind of stream the records showed; `checkpointed` when one checkpoint cannot tell Remus from COLO. */
export type DetectedStreamType = 'plain' | 'remus' | 'colo' | 'checkpointed' | 'unknown'

export interface InspectSummary {
  format?: InspectFormat
  streamType: DetectedStreamType
  /** Records per layer (headers not counted). */
  records: {libxl: number; libxc: number; back: number}
  headers: number
  pages: {records: number; pfns: number; withData: number; bytes: number}
  /** pfns in CHECKPOINT_DIRTY_PFN_LIST records (back channel). */
  dirtyPfns: number
  checkpoints: number
  /** How the stream ended: its END record, end of input between checkpoints, or not (yet) at all. */
  end: 'END' | 'eof' | 'none'
}

/** Counts what goes by, for the summary; keeps no record. */
export class InspectTally {
  #format?: InspectFormat
  #headers = 0
  #records = {libxl: 0, libxc: 0, back: 0}
  #pages = {records: 0, pfns: 0, withData: 0, bytes: 0}
  #dirtyPfns = 0
  #libxlCheckpoints = 0
  #libxcCheckpoints = 0
  #backCheckpoints = 0
  #end: InspectSummary['end'] = 'none'
  #sawState = false
  #afterCheckpointEnd = false
  #libxcAfterCheckpointEnd = false

  constructor(private readonly requested: StreamType) {}

  /** Checkpoints completed so far, as the stream's own layer counts them. */
  get checkpoints(): number {
    if (this.#format === 'back-channel') return this.#backCheckpoints
    if (this.#format === 'libxc') return this.#libxcCheckpoints
    return this.#libxlCheckpoints
  }

  add(ev: InspectEvent): void {
    switch (ev.layer) {
      case 'format':
        this.#format = ev.format
        return
      case 'xl':
      case 'libxl-header':
        this.#headers++
        return
      case 'libxc-header':
        this.#headers += 2
        return
      case 'eof':
        this.#end = 'eof'
        return
      case 'back':
        this.#records.back++
        if (ev.record.kind === 'CHECKPOINT_DIRTY_PFN_LIST') this.#dirtyPfns += ev.record.pfns.length
        if (ev.record.kind === 'CHECKPOINT_STATE' && ev.record.state === 'SVM_RESUMED') this.#backCheckpoints++
        return
      case 'libxl': {
        this.#records.libxl++
        const kind = ev.record.kind
        if (kind === 'CHECKPOINT_END') this.#libxlCheckpoints++
        if (kind === 'CHECKPOINT_STATE') this.#sawState = true
        if (kind === 'END') this.#end = 'END'
        this.#afterCheckpointEnd = kind === 'CHECKPOINT_END'
        return
      }
      case 'libxc': {
        this.#records.libxc++
        const rec = ev.record
        if (this.#afterCheckpointEnd) this.#libxcAfterCheckpointEnd = true
        this.#afterCheckpointEnd = false
        if (rec.kind === 'CHECKPOINT') this.#libxcCheckpoints++
        if (rec.kind === 'END' && this.#format === 'libxc') this.#end = 'END'
        if (rec.kind === 'PAGE_DATA') {
          let withData = 0
          for (const t of rec.types) if (pageTypeHasData(t)) withData++
          this.#pages.records++
          this.#pages.pfns += rec.pfns.length
          this.#pages.withData += withData
          this.#pages.bytes += withData * PAGE_SIZE
        }
        return
      }
    }
  }

  #streamType(): DetectedStreamType {
    if (this.#format === 'back-channel') return 'colo'
    if (this.#sawState) return 'colo'
    if (this.#libxcAfterCheckpointEnd) return 'remus'
    if (this.checkpoints > 0 || this.#libxcCheckpoints > 0) {
      return this.requested === 'remus' || this.requested === 'colo' ? this.requested : 'checkpointed'
    }
    if (this.#end === 'END') return 'plain'
    return this.requested
  }

  summary(): InspectSummary {
    return {
      ...(this.#format ? {format: this.#format} : {}),
      streamType: this.#streamType(),
      records: {...this.#records},
      headers: this.#headers,
      pages: {...this.#pages},
      dirtyPfns: this.#dirtyPfns,
      checkpoints: this.checkpoints,
      end: this.#end,
    }
  }
}
