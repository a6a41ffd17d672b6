/**
 * The libxc-level restore: what xc_domain_restore does (XEN-FACTS §3.7, §7.3), against the
 * Hypervisor port. It reads a libxc stream record by record (every record checked by the stream
 * reader, every pfn bounded by the domain's size), applies it to a domain built for restore, and in
 * a checkpointed stream buffers each checkpoint whole and applies it only once its CHECKPOINT
 * record has arrived, so a primary that dies mid-checkpoint leaves the last consistent state.
 */
import type {CpuPolicy, HvmParam, Hypervisor, TscInfo} from '../hypervisor/index.js'
import {
  HVM_PARAM,
  LibxcReader,
  PAGE_SIZE,
  StreamError,
  domainTypeName,
  DOMAIN_TYPE,
  pageFileRuns,
  pageTypeHasData,
  type ByteSource,
  type LibxcRecord,
  type PageDataRecord,
  type StreamType,
} from '../stream/index.js'
import {XGR_CHECKPOINT} from '../helper/index.js'

/** static_data_done's `missing` bits. */
export const XGR_SDD_MISSING_CPUID = 1 << 0
export const XGR_SDD_MISSING_MSR = 1 << 1

/**
 * libxc's restore callbacks, answered by the toolstack. COLO's postcopy, waitCheckpoint and suspend
 * answer 1 = carry on, 2 = the channel broke (fail over), anything else = error.
 */
export interface RestoreCallbacks {
  staticDataDone?(missing: number): Promise<number>
  checkpoint?(): Promise<number>
  restoreResults?(storeGfn: bigint, consoleGfn: bigint): Promise<void>
  postcopy?(): Promise<number>
  waitCheckpoint?(): Promise<number>
  suspend?(): Promise<number>
}

export type RestoreEvent =
  | {kind: 'pages'; done: number}
  | {kind: 'checkpoint'; number: number; records: number}
  | {kind: 'verify-mismatch'; pfn: number}
  | {kind: 'failover'; checkpoints: number; reason: string}

export interface RestoreOptions {
  hypervisor: Hypervisor
  domid: number
  source: ByteSource
  streamType: Exclude<StreamType, 'unknown'>
  callbacks: RestoreCallbacks
  /** Event channels the toolstack allocated (argv of --restore-domain). */
  storeEvtchn: number
  consoleEvtchn: number
  /** COLO: sends the secondary's dirty pfns to the primary (CHECKPOINT_DIRTY_PFN_LIST). */
  sendDirtyList?: (pfns: readonly number[]) => Promise<void>
  /** Called with a PAGE_DATA record's page memory once it is in the guest (lets a source recycle it). */
  releasePages?: (pages: Buffer) => void
  onEvent?: (e: RestoreEvent) => void
}

export interface RestoreResult {
  storeGfn: bigint
  consoleGfn: bigint
  checkpoints: number
  /** The stream broke after a consistent checkpoint; the domain holds that checkpoint. */
  failover: boolean
  verifyMismatches: number
}

export class RestoreError extends Error {
  override readonly name = 'RestoreError'
}

/** The callback said the channel broke: fail over to the last consistent state. */
class BrokenChannel extends Error {}

export async function restoreDomain(opts: RestoreOptions): Promise<RestoreResult> {
  const run = new RestoreRun(opts)
  try {
    return await run.restore()
  } finally {
    await run.close()
  }
}

/** A write to guest memory, deferred until the hypervisor has been asked its part of a checkpoint. */
type MemoryWrite = () => Promise<void>

class RestoreRun {
  readonly #o: RestoreOptions
  readonly #hv: Hypervisor
  #memory?: Awaited<ReturnType<Hypervisor['openMemory']>>
  #pages = 0
  #buffering = false
  #buffered: LibxcRecord[] = []
  #checkpoints = 0
  #verify = false
  #verifyMismatches = 0
  #context?: Buffer
  #cpuid?: CpuPolicy['cpuid']
  #msrs?: CpuPolicy['msrs']
  #storeGfn = 0n
  #consoleGfn = 0n
  #pagesApplied = 0

  constructor(opts: RestoreOptions) {
    this.#o = opts
    this.#hv = opts.hypervisor
  }

  async restore(): Promise<RestoreResult> {
    const {domid, streamType} = this.#o
    const info = await this.#hv.info(domid)
    if (info.type === 'pv') throw new RestoreError(`domain ${domid} is a PV guest: only HVM and PVH guests can be restored here`)
    this.#pages = info.pages
    this.#memory = await this.#hv.openMemory(domid)
    // Page data goes fd to fd when both ends allow it: memory that is a file, a source that moves.
    const pagesFd = this.#memory.pagesFd
    const direct = pagesFd !== undefined && typeof this.#o.source.moveTo === 'function'
    const reader = new LibxcReader(this.#o.source, {streamType, p2mSize: info.pages, deferPageData: direct})
    const {domain} = await reader.readHeaders()
    if (domain.type !== DOMAIN_TYPE.X86_HVM) throw new RestoreError(`Unable to restore ${domainTypeName(domain.type)} domain into an x86 HVM domain`)

    for (;;) {
      let record: LibxcRecord
      try {
        record = (await reader.next()).record
        if (reader.pendingPageBytes > 0) {
          // A checkpoint being buffered and a verify pass need the pages in memory; else they go
          // straight into the guest.
          if (this.#buffering || this.#verify) (record as PageDataRecord).pages = [await reader.readPendingPages()]
          else {
            await this.#movePageData(reader, record as PageDataRecord, pagesFd!)
            continue
          }
        }
      } catch (err) {
        // A stream that breaks inside a checkpoint leaves the previous one, which is consistent.
        if (this.#buffering && isTransportEnd(err)) return this.#failover(`the stream broke: ${(err as Error).message}`)
        throw err
      }
      if (this.#buffering && record.kind !== 'END' && record.kind !== 'CHECKPOINT') {
        this.#buffered.push(record)
        continue
      }
      try {
        if (record.kind === 'CHECKPOINT') await this.#checkpoint()
        else await this.#apply(record)
      } catch (err) {
        if (err instanceof BrokenChannel) return this.#failover(err.message)
        throw err
      }
      if (record.kind === 'END') break
    }
    await this.#streamComplete()
    return this.#result(false)
  }

  #result(failover: boolean): RestoreResult {
    return {storeGfn: this.#storeGfn, consoleGfn: this.#consoleGfn, checkpoints: this.#checkpoints, failover, verifyMismatches: this.#verifyMismatches}
  }

  async #failover(reason: string): Promise<RestoreResult> {
    this.#buffered = []
    this.#o.onEvent?.({kind: 'failover', checkpoints: this.#checkpoints, reason})
    // COLO applied its state at every checkpoint already; Remus applies the last one now.
    if (this.#o.streamType !== 'colo') await this.#streamComplete()
    return this.#result(true)
  }

  /**
   * Applies one record. With `memoryWrites`, its writes to guest memory are queued there instead of
   * done (a buffered checkpoint does them once the hypervisor has been asked its part).
   */
  async #apply(rec: LibxcRecord, memoryWrites?: MemoryWrite[]): Promise<void> {
    const {domid} = this.#o
    switch (rec.kind) {
      case 'PAGE_DATA':
        if (memoryWrites) return void memoryWrites.push(() => this.#pageData(rec))
        return this.#pageData(rec)
      case 'VERIFY':
        this.#verify = true
        return
      case 'STATIC_DATA_END':
        return this.#staticDataEnd()
      case 'X86_CPUID_POLICY':
        this.#cpuid = rec.leaves
        return
      case 'X86_MSR_POLICY':
        this.#msrs = rec.msrs.map((m) => ({index: m.index, value: m.value}))
        return
      case 'X86_TSC_INFO': {
        const tsc: TscInfo = {mode: rec.mode, khz: rec.khz, nsec: rec.nsec, incarnation: rec.incarnation}
        return this.#hv.setTscInfo(domid, tsc)
      }
      case 'HVM_CONTEXT':
        // Stashed: applied when the stream (or checkpoint) is complete, as libxc does.
        this.#context = Buffer.from(rec.context)
        return
      case 'HVM_PARAMS':
        return this.#hvmParams(rec.params, memoryWrites)
      case 'END':
      case 'OPTIONAL':
        return
      default:
        // The stream reader already refused records an HVM stream cannot carry.
        throw new RestoreError(`Mandatory record ${rec.kind} not handled`)
    }
  }

  async #pageData(rec: PageDataRecord): Promise<void> {
    const pfns: number[] = []
    rec.pfns.forEach((pfn, i) => {
      if (pageTypeHasData(rec.types[i]!)) pfns.push(pfn)
    })
    if (!pfns.length) return
    const data = rec.pages.length === 1 ? rec.pages[0]! : Buffer.concat(rec.pages)
    if (this.#verify) await this.#verifyPages(pfns, data)
    else await this.#memory!.writePages(pfns, data)
    for (const p of rec.pages) this.#o.releasePages?.(p)
    if (this.#verify) return
    this.#pagesApplied += pfns.length
    this.#o.onEvent?.({kind: 'pages', done: this.#pagesApplied})
  }

  /** A PAGE_DATA record's pages, moved from the stream into guest memory by the kernel. */
  async #movePageData(reader: LibxcReader, rec: PageDataRecord, pagesFd: number): Promise<void> {
    // The reader bounded every pfn by the domain's size (p2mSize) before returning the record.
    const pfns = rec.pfns.filter((_, i) => pageTypeHasData(rec.types[i]!))
    await reader.movePendingPages(pagesFd, pageFileRuns(pfns))
    this.#pagesApplied += pfns.length
    this.#o.onEvent?.({kind: 'pages', done: this.#pagesApplied})
  }

  async #verifyPages(pfns: number[], data: Buffer): Promise<void> {
    const mine = Buffer.allocUnsafe(data.length)
    await this.#memory!.readPages(pfns, mine)
    pfns.forEach((pfn, i) => {
      const at = i * PAGE_SIZE
      if (mine.compare(data, at, at + PAGE_SIZE, at, at + PAGE_SIZE) !== 0) {
        this.#verifyMismatches++
        this.#o.onEvent?.({kind: 'verify-mismatch', pfn})
      }
    })
  }

  async #staticDataEnd(): Promise<void> {
    let missing = 0
    if (!this.#cpuid) missing |= XGR_SDD_MISSING_CPUID
    if (!this.#msrs) missing |= XGR_SDD_MISSING_MSR
    if (this.#cpuid || this.#msrs) {
      const current = await this.#hv.getCpuPolicy(this.#o.domid)
      await this.#hv.setCpuPolicy(this.#o.domid, {cpuid: this.#cpuid ?? current.cpuid, msrs: this.#msrs ?? current.msrs})
    }
    const cb = this.#o.callbacks.staticDataDone
    if (cb) {
      const rc = await cb(missing)
      if (rc !== 0) throw new RestoreError(`static_data_done() callback failed: ${rc}`)
    }
  }

  async #hvmParams(params: readonly {index: bigint; value: bigint}[], memoryWrites?: MemoryWrite[]): Promise<void> {
    const apply: HvmParam[] = []
    for (const p of params) {
      const index = Number(p.index)
      if (index === HVM_PARAM.PAE_ENABLED) continue // obsolete; dropped as libxc does
      if (index === HVM_PARAM.CONSOLE_PFN) this.#consoleGfn = p.value
      if (index === HVM_PARAM.STORE_PFN) this.#storeGfn = p.value
      if (index === HVM_PARAM.CONSOLE_PFN || index === HVM_PARAM.STORE_PFN || index === HVM_PARAM.IOREQ_PFN || index === HVM_PARAM.BUFIOREQ_PFN) {
        if (memoryWrites) memoryWrites.push(() => this.#clearPage(p.value))
        else await this.#clearPage(p.value)
      }
      apply.push({index, value: p.value})
    }
    if (apply.length) await this.#hv.setHvmParams(this.#o.domid, apply)
  }

  /** The xenstore, console and ioreq pages start empty on the new host. */
  async #clearPage(gfn: bigint): Promise<void> {
    if (gfn >= BigInt(this.#pages)) return // outside guest RAM (e.g. a special page): nothing of ours to clear
    await this.#memory!.writePages([Number(gfn)], Buffer.alloc(PAGE_SIZE))
  }

  /** The state is complete: event channels, then the vCPU context. */
  async #streamComplete(): Promise<void> {
    const {domid} = this.#o
    if (!this.#context) throw new RestoreError('the stream ended without an HVM_CONTEXT record')
    // Two independent settings: asked at once, they cost one round trip to the hypervisor.
    await Promise.all([
      this.#hv.setHvmParams(domid, [
        {index: HVM_PARAM.STORE_EVTCHN, value: BigInt(this.#o.storeEvtchn)},
        {index: HVM_PARAM.CONSOLE_EVTCHN, value: BigInt(this.#o.consoleEvtchn)},
      ]),
      this.#hv.setVcpuContext(domid, this.#context),
    ])
  }

  async #checkpoint(): Promise<void> {
    const {streamType, callbacks} = this.#o
    if (streamType === 'plain') throw new RestoreError('Found checkpoint in non-checkpointed stream')
    const answer = await callbacks.checkpoint!()
    if (answer === XGR_CHECKPOINT.FAILOVER) {
      if (this.#buffering) throw new BrokenChannel('the checkpoint callback asked for failover')
      throw new RestoreError('failover requested before the first checkpoint completed: no consistent state')
    }
    if (answer !== XGR_CHECKPOINT.SUCCESS) throw new RestoreError(`checkpoint callback failed: ${answer}`)

    const records = this.#buffered.length
    const colo = streamType === 'colo'
    if (this.#buffering) {
      const batch = this.#buffered
      this.#buffered = []
      // A checkpoint's records set independent parts of the state (pages, TSC, HVM params, the
      // stashed context). The hypervisor's part is asked first, all at once: COLO completes the
      // state at every checkpoint (event channels, the vCPU context) in the same batch, once the
      // records have stashed the context (synchronously, as they start). While it answers, guest
      // memory is written, in stream order (the pages, then the special pages HVM_PARAMS clears).
      const memoryWrites: MemoryWrite[] = []
      const applied = batch.map((rec) => this.#apply(rec, memoryWrites))
      const asked = Promise.all(colo ? [...applied, this.#streamComplete()] : applied)
      asked.catch(() => undefined) // awaited below, after the writes
      await new Promise((resolve) => setImmediate(resolve)) // the requests leave
      for (const write of memoryWrites) await write()
      await asked
    } else {
      this.#buffering = true
      if (colo) await this.#streamComplete()
    }
    this.#checkpoints++
    this.#o.onEvent?.({kind: 'checkpoint', number: this.#checkpoints, records})

    if (colo) {
      await callbacks.restoreResults!(this.#storeGfn, this.#consoleGfn)
      for (const step of ['postcopy', 'waitCheckpoint', 'suspend'] as const) {
        const rc = await callbacks[step]!()
        if (rc === 2) throw new BrokenChannel(`the ${step} callback reported a broken channel`)
        if (rc !== 1) throw new RestoreError(`the ${step} callback failed: ${rc}`)
      }
      const dirty = await this.#hv.logDirty(this.#o.domid).clean()
      try {
        await this.#o.sendDirtyList!(dirty.toArray())
      } catch (err) {
        // The primary went away between our SVM_SUSPENDED and its reading of the list: the channel
        // broke as when a callback's write fails, and the guest here goes on (failover).
        if (isTransportEnd(err)) throw new BrokenChannel(`the back channel broke: ${(err as Error).message}`)
        throw err
      }
    }
  }

  async close(): Promise<void> {
    await this.#memory?.close().catch(() => {})
  }
}

/** Errors that mean the stream's sender went away, as opposed to sending something wrong. */
function isTransportEnd(err: unknown): boolean {
  if (err instanceof StreamError) return err.code === 'truncated'
  return err instanceof Error && 'code' in err && typeof (err as NodeJS.ErrnoException).code === 'string'
}
