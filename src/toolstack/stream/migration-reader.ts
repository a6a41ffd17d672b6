/**
 * Reads a whole migration stream as xl's receiver sees it, layer by layer: the xl preamble, the
 * libxl stream, the libxc stream it hands off to, and, in checkpointed streams, the libxl records
 * of every checkpoint in between. Yields one event per header and per record, in stream order,
 * every one checked before it is yielded.
 */
import type {ByteSource} from './byte-source.js'
import {fail, type ErrorSite} from './errors.js'
import {readRecordBody, readRecordHeader, type RecordHeader} from './framing.js'
import {DOMAIN_TYPE, libxcTypeName} from './libxc-format.js'
import type {LibxcDomainHeader, LibxcImageHeader} from './libxc-headers.js'
import {LibxcReader} from './libxc-reader.js'
import type {LibxcRecord} from './libxc-records.js'
import type {StreamType} from './libxc-sequence.js'
import {LIBXL, libxlTypeName, readLibxlHeader, type LibxlHeader} from './libxl-format.js'
import {decodeLibxlRecord, libxlSite, type LibxlRecord} from './libxl-records.js'
import {readXlHeader, xlStreamVersion, type XlHeader} from './xl-header.js'

export type StreamEvent =
  | {layer: 'xl'; header: XlHeader; offset: number; length: number}
  | {layer: 'libxl-header'; header: LibxlHeader; offset: number}
  | {layer: 'libxl'; record: LibxlRecord; offset: number; index: number; length: number}
  | {layer: 'libxc-header'; image: LibxcImageHeader; domain: LibxcDomainHeader; offset: number}
  | {layer: 'libxc'; record: LibxcRecord; offset: number; index: number; length: number}
  /** A checkpointed stream ended between checkpoints, as it does when the primary goes away. */
  | {layer: 'eof'; offset: number; checkpoints: number}

export type OuterFormat = 'xl' | 'libxl' | 'libxc'

export interface MigrationReadOptions {
  readonly format: OuterFormat
  /** `unknown` accepts plain and checkpointed streams and tells Remus from COLO by what follows. */
  readonly streamType: StreamType
  readonly p2mSize?: number
}

export async function* readMigrationStream(source: ByteSource, opts: MigrationReadOptions): AsyncGenerator<StreamEvent> {
  if (opts.format === 'xl') {
    const offset = source.offset
    const header = await readXlHeader(source)
    yield {layer: 'xl', header, offset, length: source.offset - offset}
    if (xlStreamVersion(header) !== 2) {
      fail({format: 'xl', offset, part: 'savefile header'}, 'bad-version', 'legacy (pre-STREAMv2) savefile: convert it with convert-legacy-stream first')
    }
  }
  if (opts.format === 'libxc') {
    yield* readBareLibxc(source, opts)
    return
  }
  yield* new LibxlWalk(source, opts).run()
}

async function* readBareLibxc(source: ByteSource, opts: MigrationReadOptions): AsyncGenerator<StreamEvent> {
  const reader = new LibxcReader(source, opts)
  const offset = source.offset
  const {image, domain} = await reader.readHeaders()
  yield {layer: 'libxc-header', image, domain, offset}
  let checkpoints = 0
  for (;;) {
    // A bare checkpointed libxc stream (no libxl records between checkpoints) may end after a CHECKPOINT.
    const header = await readRecordHeader(source, {format: 'libxc', index: reader.recordsRead, nameOf: libxcTypeName}, checkpoints > 0)
    if (!header) {
      yield {layer: 'eof', offset: source.offset, checkpoints}
      return
    }
    const read = await reader.next(header)
    yield {layer: 'libxc', ...read}
    if (read.record.kind === 'CHECKPOINT') checkpoints++
    if (read.record.kind === 'END') return
  }
}

type Phase = 'before-libxc' | 'libxc' | 'after-libxc' | 'checkpoint' | 'await-new' | 'ended'

class LibxlWalk {
  #phase: Phase = 'before-libxc'
  #index = 0
  #streamType: StreamType
  #libxc?: LibxcReader
  #checkpoints = 0
  /** True between checkpoints, where a checkpointed stream may end (the primary went away). */
  #atBoundary = false

  constructor(
    private readonly source: ByteSource,
    private readonly opts: MigrationReadOptions,
  ) {
    this.#streamType = opts.streamType
  }

  get #hvm(): boolean {
    return this.#libxc?.domain?.type === DOMAIN_TYPE.X86_HVM
  }

  async *run(): AsyncGenerator<StreamEvent> {
    const offset = this.source.offset
    yield {layer: 'libxl-header', header: await readLibxlHeader(this.source), offset}
    while (this.#phase !== 'ended') {
      const inLibxc = this.#phase === 'libxc'
      const header = await readRecordHeader(
        this.source,
        inLibxc
          ? {format: 'libxc', index: this.#libxc!.recordsRead, nameOf: libxcTypeName}
          : {format: 'libxl', index: this.#index, nameOf: libxlTypeName},
        this.#atBoundary,
      )
      if (!header) {
        yield {layer: 'eof', offset: this.source.offset, checkpoints: this.#checkpoints}
        return
      }
      this.#atBoundary = false
      // xl-ts's clean stop of COLO: libxl END where CHECKPOINT_STATE(NEW) was due.
      const coloEnd = this.#phase === 'await-new' && this.#streamType === 'colo' && header.type === LIBXL.END
      if (this.#phase === 'await-new' && !coloEnd && !this.#isCheckpointState(header)) {
        // No CHECKPOINT_STATE after CHECKPOINT_END: a Remus stream, whose next record is libxc's.
        if (this.#streamType === 'colo') {
          fail(this.#site(header), 'bad-order', 'expected CHECKPOINT_STATE(NEW) after CHECKPOINT_END in a COLO stream')
        }
        if (this.#streamType === 'unknown') this.#streamType = 'remus'
        this.#phase = 'libxc'
      }
      if (this.#phase === 'libxc') {
        yield* this.#libxcUntilHandBack(header)
        continue
      }
      const raw = await readRecordBody(this.source, header, {format: 'libxl', index: this.#index, nameOf: libxlTypeName})
      const record = decodeLibxlRecord(raw)
      this.#advance(record, libxlSite(raw))
      this.#index++
      yield {layer: 'libxl', record, offset: raw.offset, index: raw.index, length: header.length}
      if (record.kind === 'LIBXC_CONTEXT') {
        const at = this.source.offset
        const {image, domain} = await this.#libxc!.readHeaders()
        yield {layer: 'libxc-header', image, domain, offset: at}
      }
    }
  }

  /** A CHECKPOINT_STATE header, where a libxc record could also stand (PV type 5 is X86_PV_VCPU_EXTENDED). */
  #isCheckpointState(h: RecordHeader): boolean {
    if (h.type !== LIBXL.CHECKPOINT_STATE) return false
    if (this.#streamType === 'colo') return true
    return this.#streamType === 'unknown' && this.#hvm
  }

  #site(h: RecordHeader): ErrorSite {
    return {format: 'libxl', offset: h.offset, record: {type: h.type, name: libxlTypeName(h.type), index: this.#index}}
  }

  async *#libxcUntilHandBack(first: RecordHeader): AsyncGenerator<StreamEvent> {
    const reader = this.#libxc!
    let header: RecordHeader | undefined = first
    for (;;) {
      const read = await reader.next(header)
      header = undefined
      yield {layer: 'libxc', ...read}
      if (read.record.kind === 'END') {
        this.#phase = 'after-libxc'
        return
      }
      if (read.record.kind === 'CHECKPOINT') {
        this.#phase = 'checkpoint'
        return
      }
    }
  }

  #advance(record: LibxlRecord, site: ErrorSite): void {
    const phase = this.#phase
    switch (record.kind) {
      case 'LIBXC_CONTEXT':
        if (phase !== 'before-libxc') fail(site, 'bad-order', 'a second LIBXC_CONTEXT')
        this.#libxc = new LibxcReader(this.source, {
          streamType: this.#streamType,
          ...(this.opts.p2mSize !== undefined ? {p2mSize: this.opts.p2mSize} : {}),
        })
        this.#phase = 'libxc'
        return
      case 'EMULATOR_XENSTORE_DATA':
      case 'EMULATOR_CONTEXT':
        if (phase !== 'after-libxc' && phase !== 'checkpoint') fail(site, 'bad-order', `${record.kind} outside the libxl records that follow the libxc stream`)
        if (!this.#hvm) fail(site, 'bad-order', `${record.kind} in a stream of a guest that is not HVM`)
        return
      case 'CHECKPOINT_END':
        if (phase !== 'checkpoint') fail(site, 'bad-order', 'unexpected CHECKPOINT_END outside a checkpoint')
        this.#checkpoints++
        this.#phase = 'await-new'
        this.#atBoundary = true
        return
      case 'CHECKPOINT_STATE':
        if (phase !== 'await-new') fail(site, 'bad-order', 'unexpected CHECKPOINT_STATE')
        if (record.state !== 'NEW') fail(site, 'bad-value', `CHECKPOINT_STATE(${record.state}) travels on the back channel, not the main stream`)
        this.#streamType = 'colo'
        this.#phase = 'libxc'
        this.#atBoundary = true
        return
      case 'END':
        if (phase !== 'after-libxc' && phase !== 'await-new') {
          fail(site, 'bad-order', phase === 'before-libxc' ? 'END before the libxc stream (no LIBXC_CONTEXT)' : 'END inside a checkpoint')
        }
        this.#phase = 'ended'
        return
    }
  }
}
