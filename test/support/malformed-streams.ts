/**
 * Building blocks for malformed-stream tests: a stream builder that remembers where every header and
 * record lies (format, record name, per-format index, offset), byte patch helpers, a ByteSource that
 * records the reads asked of it, and a driver that reads a stream to its end the way a receiver does.
 */
import {
  BackChannelReader,
  BufferSource,
  DOMAIN_TYPE,
  IHDR_VERSION,
  RECORD_HEADER_SIZE,
  backChannelTypeName,
  encodeDomainHeader,
  encodeImageHeader,
  encodeLibxcRecord,
  encodeLibxlHeader,
  encodeLibxlRecord,
  encodeRecordHeader,
  encodeXlHeader,
  libxcTypeName,
  libxlTypeName,
  paddingOf,
  readMigrationStream,
  XL_HEADER_SIZE,
  type ByteSource,
  type LibxcDomainHeader,
  type LibxcRecord,
  type LibxlHeader,
  type LibxlRecord,
  type OuterFormat,
  type StreamEvent,
  type StreamFormat,
  type StreamType,
  type BackChannelRecordRead,
} from '../../src/toolstack/stream/index.js'
import {
  STATIC_RECORDS,
  SYNTHETIC_CONFIG,
  endOfCheckpoint,
  emulatorRecords,
  pageRecords,
  plainLibxcRecords,
  type SyntheticGuest,
} from './synthetic-guest.js'

export type PartKind = 'savefile header' | 'optional data' | 'header' | 'image header' | 'domain header' | 'record'

/** One header or record of a built stream, where it lies and what it is. */
export interface Part {
  readonly format: StreamFormat
  readonly kind: PartKind
  readonly offset: number
  /** Bytes of the part on the wire (for a record: header, body and padding). */
  readonly size: number
  readonly type?: number
  readonly name?: string
  /** Records: 0-based index among the records of its format. */
  readonly index?: number
  /** Records: body length as in the record header. */
  readonly length?: number
}

export const HVM_417: LibxcDomainHeader = {type: DOMAIN_TYPE.X86_HVM, pageShift: 12, xenMajor: 4, xenMinor: 17}
export const PV_417: LibxcDomainHeader = {type: DOMAIN_TYPE.X86_PV, pageShift: 12, xenMajor: 4, xenMinor: 17}

function nameOf(format: StreamFormat, type: number): string {
  if (format === 'libxc') return libxcTypeName(type)
  if (format === 'libxl') return libxlTypeName(type)
  return backChannelTypeName(type)
}

/** Appends headers and records and remembers the layout. */
export class StreamLayout {
  readonly parts: Part[] = []
  readonly #chunks: Buffer[] = []
  #size = 0
  readonly #index: Record<StreamFormat, number> = {xl: 0, libxl: 0, libxc: 0, 'back-channel': 0}

  get size(): number {
    return this.#size
  }

  #push(part: Omit<Part, 'offset' | 'size'>, chunks: readonly Buffer[]): this {
    let size = 0
    for (const c of chunks) size += c.length
    this.parts.push({...part, offset: this.#size, size})
    this.#chunks.push(...chunks)
    this.#size += size
    return this
  }

  xlHeader(opts: Parameters<typeof encodeXlHeader>[0] = {config: JSON.stringify(SYNTHETIC_CONFIG, null, 4)}): this {
    const b = encodeXlHeader(opts)
    this.#push({format: 'xl', kind: 'savefile header'}, [b.subarray(0, XL_HEADER_SIZE)])
    if (b.length > XL_HEADER_SIZE) this.#push({format: 'xl', kind: 'optional data'}, [b.subarray(XL_HEADER_SIZE)])
    return this
  }

  libxlHeader(h?: LibxlHeader): this {
    return this.#push({format: 'libxl', kind: 'header'}, [encodeLibxlHeader(h)])
  }

  libxcHeaders(domain: LibxcDomainHeader = HVM_417, version: number = IHDR_VERSION): this {
    this.#push({format: 'libxc', kind: 'image header'}, [encodeImageHeader({version})])
    return this.#push({format: 'libxc', kind: 'domain header'}, [encodeDomainHeader(domain)])
  }

  #record(format: StreamFormat, type: number, length: number, chunks: readonly Buffer[]): this {
    const index = this.#index[format]++
    return this.#push({format, kind: 'record', type, name: nameOf(format, type), index, length}, chunks)
  }

  libxl(...records: LibxlRecord[]): this {
    for (const r of records) {
      const chunks = encodeLibxlRecord(r)
      this.#record('libxl', chunks[0]!.readUInt32LE(0), chunks[0]!.readUInt32LE(4), chunks)
    }
    return this
  }

  libxc(...records: LibxcRecord[]): this {
    for (const r of records) {
      const chunks = encodeLibxcRecord(r)
      this.#record('libxc', chunks[0]!.readUInt32LE(0), chunks[0]!.readUInt32LE(4), chunks)
    }
    return this
  }

  /** A CHECKPOINT_STATE or CHECKPOINT_DIRTY_PFN_LIST travelling on the back channel. */
  backChannel(...records: (LibxlRecord | LibxcRecord)[]): this {
    for (const r of records) {
      const chunks = r.kind === 'CHECKPOINT_STATE' ? encodeLibxlRecord(r as LibxlRecord) : encodeLibxcRecord(r as LibxcRecord)
      this.#record('back-channel', chunks[0]!.readUInt32LE(0), chunks[0]!.readUInt32LE(4), chunks)
    }
    return this
  }

  /**
   * A hand-built record: header `{type, length ?? body.length}`, the body as given, then `padding`
   * (default: zeros up to the 8-byte boundary of the body; none when the declared length differs).
   */
  raw(format: StreamFormat, type: number, body: Buffer, opts: {length?: number; padding?: Buffer} = {}): this {
    const length = opts.length ?? body.length
    const padding = opts.padding ?? (length === body.length ? Buffer.alloc(paddingOf(body.length)) : Buffer.alloc(0))
    return this.#record(format, type, length, [encodeRecordHeader(type, length), body, padding])
  }

  bytes(): Buffer {
    return Buffer.concat(this.#chunks)
  }

  /** The `nth` record of `format` named `name` (0-based), or the header part of that kind. */
  find(format: StreamFormat, name: string, nth = 0): Part {
    const hits = this.parts.filter((p) => p.format === format && (p.kind === 'record' ? p.name === name : p.kind === name))
    const hit = hits[nth]
    if (!hit) throw new Error(`no ${format} ${name} #${nth} in layout`)
    return hit
  }
}

// ---------------------------------------------------------------------------------------------
// Canonical valid streams

/** The guest of the canonical plain stream: every header kind, padded records, two PAGE_DATA. */
export const SMALL_GUEST: SyntheticGuest = {pages: 4, seed: 7, xenstoreData: true}

/** An xl migration stream exactly as `xlFile()` lays it out, with its layout known. */
export function xlPlainLayout(g: SyntheticGuest = SMALL_GUEST): StreamLayout {
  return new StreamLayout()
    .xlHeader()
    .libxlHeader()
    .libxl({kind: 'LIBXC_CONTEXT'})
    .libxcHeaders()
    .libxc(...plainLibxcRecords(g))
    .libxl(...emulatorRecords(g, 0), {kind: 'END'})
}

/** A checkpointed libxl stream exactly as `checkpointedStream()` lays it out, with its layout known. */
export function checkpointedLayout(g: SyntheticGuest, mode: 'remus' | 'colo', checkpoints: number): StreamLayout {
  const seed = g.seed ?? 1
  const all = Array.from({length: g.pages}, (_, i) => i)
  const l = new StreamLayout().libxlHeader().libxl({kind: 'LIBXC_CONTEXT'}).libxcHeaders()
  for (let round = 0; round < checkpoints; round++) {
    const pfns = round === 0 ? all : all.filter((pfn) => (pfn + round) % 5 === 0)
    l.libxc(...(round === 0 ? STATIC_RECORDS : []), ...pageRecords(seed, pfns, round), ...endOfCheckpoint(round), {kind: 'CHECKPOINT'})
    l.libxl(...emulatorRecords(g, round), {kind: 'CHECKPOINT_END'})
    if (mode === 'colo' && round < checkpoints - 1) l.libxl({kind: 'CHECKPOINT_STATE', state: 'NEW'})
  }
  return l
}

// ---------------------------------------------------------------------------------------------
// Byte helpers

export function u16be(v: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(v)
  return b
}

export function u32be(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(v >>> 0)
  return b
}

export function u32le(v: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(v >>> 0)
  return b
}

export function u64le(v: bigint): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64LE(v)
  return b
}

/** A copy of `buf` with `bytes` written at `at`. */
export function patched(buf: Buffer, at: number, bytes: Buffer | readonly number[]): Buffer {
  const out = Buffer.from(buf)
  Buffer.from(bytes as Buffer).copy(out, at)
  return out
}

/** A copy of `buf` with `insert` spliced in at `at`. */
export function spliced(buf: Buffer, at: number, insert: Buffer, remove = 0): Buffer {
  return Buffer.concat([buf.subarray(0, at), insert, buf.subarray(at + remove)])
}

/** Concatenates values as little-endian u32 words. */
export function words(...v: number[]): Buffer {
  return Buffer.concat(v.map(u32le))
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Wraps a source; records every read() request and stops a runaway reader. */
export class CountingSource implements ByteSource {
  maxRequest = 0
  requests = 0

  constructor(
    private readonly inner: ByteSource,
    private readonly limit = 100_000,
  ) {}

  get offset(): number {
    return this.inner.offset
  }

  read(length: number): Promise<Buffer> {
    this.requests++
    if (this.requests > this.limit) throw new Error(`runaway reader: more than ${this.limit} reads`)
    if (!Number.isInteger(length) || length < 0) throw new Error(`read(${length}) is not a byte count`)
    this.maxRequest = Math.max(this.maxRequest, length)
    return this.inner.read(length)
  }
}

export type ReadMode =
  | {readonly format: OuterFormat; readonly streamType?: StreamType; readonly p2mSize?: number}
  | {readonly format: 'back-channel'; readonly p2mSize?: number}

/** Reads a whole stream as a receiver would, returning every event (or back-channel record). */
export async function readAll(source: ByteSource, mode: ReadMode): Promise<(StreamEvent | BackChannelRecordRead)[]> {
  const out: (StreamEvent | BackChannelRecordRead)[] = []
  if (mode.format === 'back-channel') {
    const reader = new BackChannelReader(source, mode.p2mSize === undefined ? {} : {p2mSize: mode.p2mSize})
    for (;;) {
      const r = await reader.next(true)
      if (!r) return out
      out.push(r)
    }
  }
  const opts = {
    format: mode.format,
    streamType: mode.streamType ?? 'plain',
    ...(mode.p2mSize === undefined ? {} : {p2mSize: mode.p2mSize}),
  }
  for await (const ev of readMigrationStream(source, opts)) out.push(ev)
  return out
}

export interface ReadOutcome {
  readonly events?: (StreamEvent | BackChannelRecordRead)[]
  readonly error?: unknown
  readonly source: CountingSource
}

/** Reads `bytes` to the end; never throws, reports what happened and what was asked of the source. */
export async function tryRead(bytes: Buffer, mode: ReadMode): Promise<ReadOutcome> {
  const source = new CountingSource(new BufferSource(bytes))
  try {
    return {events: await readAll(source, mode), source}
  } catch (error) {
    return {error, source}
  }
}


// ---------------------------------------------------------------------------------------------
// Truncations

/** What a reader must report for a stream cut short at `cut`. */
export interface TruncationCase {
  readonly name: string
  readonly cut: number
  readonly format: StreamFormat
  readonly offset: number
  readonly message: string
  readonly part?: string
  readonly record?: {readonly name: string; readonly index: number}
}

const HEADER_PART_NAMES: Record<Exclude<PartKind, 'record'>, string> = {
  'savefile header': 'savefile header',
  'optional data': 'optional data',
  header: 'header',
  'image header': 'image header',
  'domain header': 'domain header',
}

/**
 * Every way to cut a stream short that lands on a different spot of its grammar: at the start of
 * every header and record, inside every header, inside every record header, right after a record
 * header, inside every body, right after a body (before its padding) and inside every padding.
 * The stream must not be allowed to end cleanly anywhere but at its very end.
 */
export function truncationCases(layout: StreamLayout): TruncationCase[] {
  const out: TruncationCase[] = []
  const seen = new Set<number>()
  const add = (c: TruncationCase): void => {
    if (c.cut >= layout.size || seen.has(c.cut)) return
    seen.add(c.cut)
    out.push(c)
  }
  for (const p of layout.parts) {
    if (p.kind !== 'record') {
      const part = HEADER_PART_NAMES[p.kind]
      for (const [where, cut] of [
        ['at the start of', p.offset],
        ['1 byte into', p.offset + 1],
        ['in the middle of', p.offset + Math.floor(p.size / 2)],
        ['1 byte short of the end of', p.offset + p.size - 1],
      ] as const) {
        const got = cut - p.offset
        const message =
          p.kind === 'optional data' ? `Savefile truncated: ${got} of ${p.size} bytes of optional data` : `stream ends after ${got} of ${p.size}`
        add({name: `${where} the ${p.format} ${part} (cut at ${cut})`, cut, format: p.format, offset: p.offset, part, message})
      }
      continue
    }
    const label = `${p.format} ${p.name} record #${p.index}`
    const headerPart = `record header #${p.index}`
    for (const [where, cut] of [
      ['at the start of', p.offset],
      ['1 byte into the header of', p.offset + 1],
      ['in the middle of the header of', p.offset + 4],
      ['1 byte short of the header of', p.offset + 7],
    ] as const) {
      add({
        name: `${where} ${label} (cut at ${cut})`,
        cut,
        format: p.format,
        offset: p.offset,
        part: headerPart,
        message: `stream ends after ${cut - p.offset} of ${RECORD_HEADER_SIZE} header bytes`,
      })
    }
    const length = p.length ?? 0
    const padded = p.size - RECORD_HEADER_SIZE
    if (padded === 0) continue
    const body = p.offset + RECORD_HEADER_SIZE
    const cuts: [string, number][] = [
      ['right after the header of', body],
      ['1 byte into the body of', body + 1],
      ['in the middle of the body of', body + Math.floor(length / 2)],
      ['1 byte short of the body of', body + length - 1],
    ]
    if (padded > length) cuts.push(['between body and padding of', body + length], ['1 byte short of the padding of', body + padded - 1])
    for (const [where, cut] of cuts) {
      if (cut < body || cut >= body + padded) continue
      add({
        name: `${where} ${label} (cut at ${cut})`,
        cut,
        format: p.format,
        offset: p.offset,
        record: {name: p.name!, index: p.index!},
        message: `stream ends after ${cut - body} of ${padded} body bytes`,
      })
    }
  }
  return out
}
