/**
 * The COLO back channel, secondary -> primary (XEN-FACTS §2.4, §3.6): no header, only libxl
 * CHECKPOINT_STATE records and libxc CHECKPOINT_DIRTY_PFN_LIST records, in a fixed cycle:
 * SVM_READY, SVM_RESUMED after the first checkpoint, then per checkpoint
 * SVM_SUSPENDED, CHECKPOINT_DIRTY_PFN_LIST, SVM_READY, SVM_RESUMED.
 */
import type {ByteSource} from './byte-source.js'
import {StreamError, fail, hex, type ErrorSite} from './errors.js'
import {readRecordBody, readRecordHeader, type FrameReadOptions, type RawRecord} from './framing.js'
import {LIBXC} from './libxc-format.js'
import {checkLibxcBody} from './libxc-rules.js'
import {decodeCheckedBody} from './libxc-records.js'
import {LIBXL, type CheckpointStateName} from './libxl-format.js'
import {decodeLibxlRecord} from './libxl-records.js'

export type BackChannelRecord =
  | {kind: 'CHECKPOINT_STATE'; state: CheckpointStateName}
  | {kind: 'CHECKPOINT_DIRTY_PFN_LIST'; pfns: number[]}

export function backChannelTypeName(type: number): string {
  if (type === LIBXL.CHECKPOINT_STATE) return 'CHECKPOINT_STATE'
  if (type === LIBXC.CHECKPOINT_DIRTY_PFN_LIST) return 'CHECKPOINT_DIRTY_PFN_LIST'
  return hex(type, 8)
}

type Expect = 'SVM_READY' | 'SVM_RESUMED' | 'SVM_SUSPENDED' | 'CHECKPOINT_DIRTY_PFN_LIST'
const NEXT: Record<Expect, Expect> = {
  SVM_READY: 'SVM_RESUMED',
  SVM_RESUMED: 'SVM_SUSPENDED',
  SVM_SUSPENDED: 'CHECKPOINT_DIRTY_PFN_LIST',
  CHECKPOINT_DIRTY_PFN_LIST: 'SVM_READY',
}

export interface BackChannelRecordRead {
  readonly record: BackChannelRecord
  readonly offset: number
  readonly index: number
  readonly length: number
}

/** The libxl and libxc record rules name their own format; on the back channel the error is the channel's. */
function onBackChannel<T>(site: ErrorSite, decode: () => T): T {
  try {
    return decode()
  } catch (e) {
    if (e instanceof StreamError) throw new StreamError(site.format, e.code, e.offset, e.detail, site.record, e.part)
    throw e
  }
}

/**
 * The pfns of a CHECKPOINT_DIRTY_PFN_LIST record (length a multiple of 8, each a u64), with errors
 * naming the back channel. Bounds against the p2m size are the reader's to check.
 */
export function decodeDirtyPfnList(raw: RawRecord, site?: ErrorSite): number[] {
  const where: ErrorSite = site ?? {format: 'back-channel', offset: raw.offset, record: {type: raw.type, name: backChannelTypeName(raw.type), index: raw.index}}
  if (raw.type !== LIBXC.CHECKPOINT_DIRTY_PFN_LIST) fail(where, 'bad-order', `Expect dirty bitmap record, but received ${raw.type}`)
  return onBackChannel(where, () => {
    checkLibxcBody(raw)
    const rec = decodeCheckedBody(raw.type, raw.body)
    return rec.kind === 'CHECKPOINT_DIRTY_PFN_LIST' ? rec.pfns : []
  })
}

export class BackChannelReader {
  #index = 0
  #expect: Expect = 'SVM_READY'

  constructor(
    private readonly source: ByteSource,
    private readonly opts: {readonly p2mSize?: number} = {},
  ) {}

  /** The record the cycle expects next. */
  get expecting(): string {
    return this.#expect
  }

  /** Reads the next record; with `allowEof`, resolves undefined when the channel ends between records. */
  async next(allowEof = false): Promise<BackChannelRecordRead | undefined> {
    const frame: FrameReadOptions = {format: 'back-channel', index: this.#index, nameOf: backChannelTypeName}
    const header = await readRecordHeader(this.source, frame, allowEof)
    if (!header) return undefined
    const raw = await readRecordBody(this.source, header, frame)
    const site: ErrorSite = {format: 'back-channel', offset: raw.offset, record: {type: raw.type, name: backChannelTypeName(raw.type), index: raw.index}}
    let record: BackChannelRecord
    if (raw.type === LIBXL.CHECKPOINT_STATE) {
      record = onBackChannel(site, () => decodeLibxlRecord(raw) as BackChannelRecord)
    } else if (raw.type === LIBXC.CHECKPOINT_DIRTY_PFN_LIST) {
      record = {kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: decodeDirtyPfnList(raw, site)}
    } else {
      return fail(site, 'unknown-record', `record type ${hex(raw.type, 8)} does not travel on the back channel`)
    }
    const got = record.kind === 'CHECKPOINT_STATE' ? record.state : record.kind
    if (got !== this.#expect) fail(site, 'bad-order', `got ${got}, expected ${this.#expect}`)
    if (record.kind === 'CHECKPOINT_DIRTY_PFN_LIST' && this.opts.p2mSize !== undefined) {
      const p2m = this.opts.p2mSize
      const i = record.pfns.findIndex((pfn) => pfn >= p2m)
      if (i >= 0) fail(site, 'pfn-out-of-range', `pfn ${hex(record.pfns[i]!)} (entry ${i}) is outside the domain (p2m size ${hex(p2m)})`)
    }
    this.#expect = NEXT[this.#expect]
    this.#index++
    return {record, offset: raw.offset, index: raw.index, length: header.length}
  }
}
