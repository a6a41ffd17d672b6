/**
 * The ordering rules of a libxc stream (XEN-FACTS §3.5-§3.7): what may follow what, given the
 * image version, the guest type and whether the stream is checkpointed. Fed one record at a time.
 */
import {fail, hex, type ErrorSite} from './errors.js'
import {DOMAIN_TYPE, HVM_ONLY_TYPES, LIBXC, PV_ONLY_TYPES, type DomainType} from './libxc-format.js'
import type {LibxcRecord} from './libxc-records.js'

/**
 * What kind of stream is being read: `plain` (save, migrate), `remus` or `colo` (checkpointed),
 * or `unknown`, for tools that read whatever they are given (checkpoints allowed).
 */
export type StreamType = 'plain' | 'remus' | 'colo' | 'unknown'

export const STREAM_TYPE_NUMBER: Record<Exclude<StreamType, 'unknown'>, number> = {plain: 0, remus: 1, colo: 2}

export interface LibxcSequenceOptions {
  readonly version: number
  readonly domainType: DomainType
  readonly streamType: StreamType
  /** The domain's p2m size in pages, when known: every pfn must be below it. */
  readonly p2mSize?: number
}

export class LibxcSequence {
  #seenStaticDataEnd = false
  #seenPvInfo = false
  #seenHvmContext = false
  #verifying = false
  #ended = false
  #checkpoints = 0

  constructor(readonly opts: LibxcSequenceOptions) {}

  get ended(): boolean {
    return this.#ended
  }

  get checkpoints(): number {
    return this.#checkpoints
  }

  /** True once STATIC_DATA_END was seen or, in a v2 stream, inferred. */
  get staticDataEnded(): boolean {
    return this.#seenStaticDataEnd
  }

  check(rec: LibxcRecord, site: ErrorSite): void {
    const {version, domainType, streamType} = this.opts
    const hvm = domainType === DOMAIN_TYPE.X86_HVM
    if (this.#ended) fail(site, 'bad-order', 'record after END')
    if (rec.kind === 'OPTIONAL') return
    const type = LIBXC[rec.kind]

    if (hvm && PV_ONLY_TYPES.has(type)) fail(site, 'bad-order', `${rec.kind} is not valid in an x86 HVM stream`)
    if (!hvm && HVM_ONLY_TYPES.has(type)) fail(site, 'bad-order', `${rec.kind} is not valid in an x86 PV stream`)

    switch (rec.kind) {
      case 'STATIC_DATA_END':
        if (version < 3) fail(site, 'bad-order', 'STATIC_DATA_END in a v2 stream')
        if (this.#seenStaticDataEnd) fail(site, 'bad-order', 'multiple STATIC_DATA_END records')
        this.#seenStaticDataEnd = true
        return
      case 'X86_CPUID_POLICY':
      case 'X86_MSR_POLICY':
        if (version < 3) fail(site, 'bad-order', `${rec.kind} in a v2 stream`)
        if (this.#seenStaticDataEnd) fail(site, 'bad-order', `${rec.kind} after STATIC_DATA_END`)
        return
      case 'X86_PV_INFO':
        if (this.#seenPvInfo) fail(site, 'bad-order', 'multiple X86_PV_INFO records')
        this.#seenPvInfo = true
        return
      case 'X86_PV_P2M_FRAMES':
        if (!this.#seenPvInfo) fail(site, 'bad-order', 'X86_PV_P2M_FRAMES before X86_PV_INFO')
        this.#needStaticDataEnd(site, rec.kind)
        return
      case 'PAGE_DATA':
        this.#needStaticDataEnd(site, rec.kind)
        this.#checkPfns(site, rec.pfns)
        return
      case 'HVM_CONTEXT':
        this.#seenHvmContext = true
        return
      case 'VERIFY':
        if (streamType === 'remus' || streamType === 'colo') fail(site, 'bad-order', 'VERIFY in a checkpointed stream')
        if (this.#verifying) fail(site, 'bad-order', 'multiple VERIFY records')
        if (this.#checkpoints) fail(site, 'bad-order', 'VERIFY after a CHECKPOINT')
        this.#verifying = true
        return
      case 'CHECKPOINT':
        if (streamType === 'plain') fail(site, 'bad-order', 'CHECKPOINT in a non-checkpointed stream')
        if (this.#verifying) fail(site, 'bad-order', 'CHECKPOINT in a stream that sent VERIFY')
        this.#needCompleteState(site, rec.kind)
        this.#checkpoints++
        return
      case 'END':
        this.#needCompleteState(site, rec.kind)
        this.#ended = true
        return
      case 'CHECKPOINT_DIRTY_PFN_LIST':
        return fail(site, 'bad-order', 'CHECKPOINT_DIRTY_PFN_LIST is only valid on the COLO back channel')
      default:
        return
    }
  }

  #needStaticDataEnd(site: ErrorSite, kind: string): void {
    if (this.#seenStaticDataEnd) return
    // A v2 stream has no STATIC_DATA_END: the receiver infers it at the first memory record.
    if (this.opts.version < 3) this.#seenStaticDataEnd = true
    else fail(site, 'bad-order', `${kind} before STATIC_DATA_END`)
  }

  /** END or CHECKPOINT close a consistent state: an HVM guest cannot run without its context. */
  #needCompleteState(site: ErrorSite, kind: string): void {
    if (this.opts.domainType === DOMAIN_TYPE.X86_HVM && !this.#seenHvmContext) {
      fail(site, 'bad-order', `${kind} before any HVM_CONTEXT: the stream holds no vCPU state`)
    }
  }

  #checkPfns(site: ErrorSite, pfns: readonly number[]): void {
    const {p2mSize} = this.opts
    if (p2mSize === undefined) return
    for (let i = 0; i < pfns.length; i++) {
      const pfn = pfns[i]!
      if (pfn >= p2mSize) fail(site, 'pfn-out-of-range', `pfn ${hex(pfn)} (index ${i}) is outside the domain (p2m size ${hex(p2mSize)})`)
    }
  }
}
