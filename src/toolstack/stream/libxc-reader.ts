/**
 * Incremental reader of a libxc stream: the two headers, then one record per call, each framed,
 * checked against its type's rules and against the stream's ordering rules before it is returned.
 * It reads exactly the bytes of each record; it returns at END and at every CHECKPOINT, so the caller
 * can hand the fd to whoever owns the next records.
 *
 * With `deferPageData` a PAGE_DATA record comes back as soon as its pfn array is read and checked,
 * its page data still in the source (`pages` empty, `pendingPageBytes` says how much): the caller
 * takes it, before asking for the next record, either into memory (readPendingPages) or straight
 * to a file (movePendingPages: the source's kernel copy). A source that ends inside the page data
 * fails as a truncated record would, naming the record and its offset.
 */
import type {ByteSource} from './byte-source.js'
import {fail, type ErrorSite} from './errors.js'
import {REC_LENGTH_MAX, readRecordBody, readRecordHeader, type FrameReadOptions, type RecordHeader} from './framing.js'
import {LIBXC, libxcTypeName} from './libxc-format.js'
import {readDomainHeader, readImageHeader, type LibxcDomainHeader, type LibxcImageHeader} from './libxc-headers.js'
import type {FileRun, LibxcRecord, PageDataRecord} from './libxc-records.js'
import {checkPageDataCount, checkPageDataHead, decodeLibxcRecord, libxcSite} from './libxc-rules.js'
import {LibxcSequence, type StreamType} from './libxc-sequence.js'

export interface LibxcReaderOptions {
  readonly streamType: StreamType
  /** Domain size in pages, when known; pfns beyond it are rejected. */
  readonly p2mSize?: number
  /** Return PAGE_DATA records before their page data (see above). */
  readonly deferPageData?: boolean
}


export interface LibxcRecordRead {
  readonly record: LibxcRecord
  readonly offset: number
  readonly index: number
  /** Body length as in the record header (without padding). */
  readonly length: number
  /** A deferred PAGE_DATA record: bytes of page data still in the source. */
  readonly pendingPageBytes?: number
}

interface PendingPages {
  readonly site: ErrorSite
  /** Body bytes already read (count, reserved, pfn array). */
  readonly bodyRead: number
  readonly bytes: number
}

export class LibxcReader {
  #index = 0
  #sequence?: LibxcSequence
  #pending?: PendingPages
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
    if (this.#pending) throw new Error('LibxcReader.next() before the page data of the last PAGE_DATA record was taken')
    const frame = this.#frame()
    const h = header ?? (await readRecordHeader(this.source, frame))!
    if (this.opts.deferPageData && h.type === LIBXC.PAGE_DATA) return this.#pageDataHead(sequence, h)
    const raw = await readRecordBody(this.source, h, frame)
    const record = decodeLibxcRecord(raw)
    sequence.check(record, libxcSite(raw))
    this.#index++
    return {record, offset: raw.offset, index: raw.index, length: h.length}
  }

  /** Bytes of page data the caller has still to take (0 when none is pending). */
  get pendingPageBytes(): number {
    return this.#pending?.bytes ?? 0
  }

  /** Reads the pending page data into memory: the `pages` of the record just returned. */
  async readPendingPages(): Promise<Buffer> {
    const p = this.#takePending()
    if (p.bytes === 0) return Buffer.alloc(0)
    const data = await this.source.read(p.bytes)
    if (data.length < p.bytes) this.#truncated(p, data.length)
    return data
  }

  /**
   * Moves the pending page data to `fd`, run after run, through the source's kernel copy. The runs
   * must add up to the pending bytes; the caller has bounded their offsets (the record's pfns).
   */
  async movePendingPages(fd: number, runs: readonly FileRun[]): Promise<void> {
    const moveTo = this.source.moveTo?.bind(this.source)
    if (!moveTo) throw new Error('movePendingPages: the source cannot move bytes to a file')
    const total = runs.reduce((n, r) => n + r.length, 0)
    if (total !== this.pendingPageBytes) throw new Error(`movePendingPages: runs of ${total} bytes for ${this.pendingPageBytes} pending`)
    const p = this.#takePending()
    let moved = 0
    for (const run of runs) {
      const n = await moveTo(fd, run.offset, run.length)
      moved += n
      if (n < run.length) this.#truncated(p, moved)
    }
  }

  #takePending(): PendingPages {
    const p = this.#pending
    if (!p) throw new Error('LibxcReader: no PAGE_DATA record is waiting for its page data')
    this.#pending = undefined
    return p
  }

  #truncated(p: PendingPages, got: number): never {
    fail(p.site, 'truncated', `stream ends after ${p.bodyRead + got} of ${p.bodyRead + p.bytes} body bytes`)
  }

  /** A PAGE_DATA record up to its page data: count, reserved word and pfn array, checked. */
  async #pageDataHead(sequence: LibxcSequence, h: RecordHeader): Promise<LibxcRecordRead> {
    const index = this.#index
    const site: ErrorSite = {format: 'libxc', offset: h.offset, record: {type: h.type, name: libxcTypeName(h.type), index}}
    if (h.length > REC_LENGTH_MAX) fail(site, 'too-long', `length ${h.length} exceeds the maximum of ${REC_LENGTH_MAX} bytes`)
    const short = (got: number): never => fail(site, 'truncated', `stream ends after ${got} of ${h.length} body bytes`)
    const first = h.length >= 8 ? await this.source.read(8) : Buffer.alloc(0)
    if (h.length >= 8 && first.length < 8) short(first.length)
    const count = checkPageDataCount(site, first, h.length)
    const pfnWords = await this.source.read(8 * count)
    if (pfnWords.length < 8 * count) short(8 + pfnWords.length)
    const {pfns, types, dataBytes} = checkPageDataHead(site, Buffer.concat([first, pfnWords]), h.length)
    const record: PageDataRecord = {kind: 'PAGE_DATA', pfns, types, pages: []}
    sequence.check(record, site)
    this.#index++
    if (dataBytes > 0) this.#pending = {site, bodyRead: 8 + 8 * count, bytes: dataBytes}
    return {record, offset: h.offset, index, length: h.length, pendingPageBytes: dataBytes}
  }

  #frame(): FrameReadOptions {
    return {format: 'libxc', index: this.#index, nameOf: libxcTypeName}
  }
}
