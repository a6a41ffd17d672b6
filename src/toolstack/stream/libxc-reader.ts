/**
 * Incremental reader of a libxc stream: the two headers, then one record per call, each framed,
 * checked against its type's rules and against the stream's ordering rules before it is returned.
 * It reads exactly the bytes of each record; it returns at END and at every CHECKPOINT, so the caller
 * can hand the fd to whoever owns the next records.
 */
import type {ByteSource} from './byte-source.js'
import {readRecordBody, readRecordHeader, type FrameReadOptions, type RecordHeader} from './framing.js'
import {libxcTypeName} from './libxc-format.js'
import {readDomainHeader, readImageHeader, type LibxcDomainHeader, type LibxcImageHeader} from './libxc-headers.js'
import type {LibxcRecord} from './libxc-records.js'
import {decodeLibxcRecord, libxcSite} from './libxc-rules.js'
import {LibxcSequence, type StreamType} from './libxc-sequence.js'

export interface LibxcReaderOptions {
  readonly streamType: StreamType
  /** Domain size in pages, when known; pfns beyond it are rejected. */
  readonly p2mSize?: number
}

export interface LibxcRecordRead {
  readonly record: LibxcRecord
  readonly offset: number
  readonly index: number
  /** Body length as in the record header (without padding). */
  readonly length: number
}

export class LibxcReader {
  #index = 0
  #sequence?: LibxcSequence
  image?: LibxcImageHeader
  domain?: LibxcDomainHeader

  constructor(
    private readonly source: ByteSource,
    private readonly opts: LibxcReaderOptions,
  ) {}

  get ended(): boolean {
    return this.#sequence?.ended ?? false
  }

  get recordsRead(): number {
    return this.#index
  }

  async readHeaders(): Promise<{image: LibxcImageHeader; domain: LibxcDomainHeader}> {
    const image = await readImageHeader(this.source)
    const domain = await readDomainHeader(this.source)
    this.image = image
    this.domain = domain
    this.#sequence = new LibxcSequence({
      version: image.version,
      domainType: domain.type,
      streamType: this.opts.streamType,
      ...(this.opts.p2mSize !== undefined ? {p2mSize: this.opts.p2mSize} : {}),
    })
    return {image, domain}
  }

  /** Reads the next record; `header` is one already taken from the source by a caller that peeked. */
  async next(header?: RecordHeader): Promise<LibxcRecordRead> {
    const sequence = this.#sequence
    if (!sequence) throw new Error('LibxcReader.next() before readHeaders()')
    if (sequence.ended) throw new Error('LibxcReader.next() after END')
    const frame = this.#frame()
    const h = header ?? (await readRecordHeader(this.source, frame))!
    const raw = await readRecordBody(this.source, h, frame)
    const record = decodeLibxcRecord(raw)
    sequence.check(record, libxcSite(raw))
    this.#index++
    return {record, offset: raw.offset, index: raw.index, length: h.length}
  }

  #frame(): FrameReadOptions {
    return {format: 'libxc', index: this.#index, nameOf: libxcTypeName}
  }
}
