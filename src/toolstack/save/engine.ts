/**
 * The libxc-level save: what xc_domain_save does (XEN-FACTS §3.6, §6, §7.2), written once against
 * the Hypervisor port. It writes a libxc v3 stream to a record sink: headers, static data, memory
 * (live precopy rounds, then the suspended round), the CPU state, then END for a plain stream or a
 * CHECKPOINT per round for a checkpointed (Remus, COLO) one, asking its caller through callbacks to
 * suspend, resume and wait exactly where libxc asks libxl.
 */
import {DirtyBitmap} from '../hypervisor/index.js'
import type {DomainInfo, HvmParam, Hypervisor, TscInfo} from '../hypervisor/index.js'
import {
  DOMAIN_TYPE,
  MAX_BATCH_SIZE,
  PAGE_SIZE,
  encodeDomainHeader,
  encodeImageHeader,
  encodeLibxcRecord,
  encodePageData,
  encodePageDataHead,
  pageFileRuns,
  type FileRun,
  type LibxcRecord,
  type StreamType,
} from '../stream/index.js'
import {xlPolicy, type PrecopyPolicy, type PrecopyStats} from './policy.js'

/** Where the stream goes: a vectored write of one record's buffers. */
export interface RecordSink {
  write(parts: readonly Buffer[]): Promise<void> | void
  /**
   * Optional: writes a record whose page data comes straight from a file, fd to fd in the kernel:
   * `head` (record header, pfn array), then the bytes of each run of `fd` in order. `share` allows
   * the kernel to pass pages by reference (see fd/kernel-copy.ts): set only while the dirty log
   * guards the pages.
   */
  writeFromFile?(head: readonly Buffer[], fd: number, runs: readonly FileRun[], share: boolean): Promise<void> | void
}

/**
 * libxc's save callbacks, answered by the toolstack. Return values as libxc reads them: suspend 0 =
 * failed; postcopy <= 0 stop; Remus checkpoint <= 0 stop / > 0 take another; COLO checkpoint 0 =
 * failed; waitCheckpoint <= 0 stop.
 */
export interface SaveCallbacks {
  suspend(): Promise<number>
  postcopy?(): Promise<number>
  checkpoint?(): Promise<number>
  waitCheckpoint?(): Promise<number>
  /** HVM: switch the device model's dirty log (libxl asks QEMU). */
  switchQemuLogdirty?(enable: boolean): Promise<number>
}

export type SaveEvent =
  | {kind: 'milestone'; what: 'Start of stream' | 'Domain now suspended' | 'End of stream' | 'Complete'}
  /** Pages sent in the current pass, every 4 MiB and at its end. */
  | {kind: 'pages'; prefix: string; done: number; total: number}
  | {kind: 'round'; iteration: number; sent: number; dirty: number; ms: number}
  /** A checkpoint's pages: the primary's dirty set A, the secondary's B (COLO), and A ∪ B as sent. */
  | {kind: 'checkpoint'; number: number; primary: number; secondary: number; sent: number}

export interface SaveOptions {
  hypervisor: Hypervisor
  domid: number
  sink: RecordSink
  live: boolean
  /** XCFLAGS_DEBUG: re-send all memory after a VERIFY record (plain live streams only). */
  debug: boolean
  streamType: Exclude<StreamType, 'unknown'>
  callbacks: SaveCallbacks
  policy?: PrecopyPolicy
  /** COLO: the secondary's dirty pfns of this checkpoint, read from the back channel. */
  readSecondaryDirty?: () => Promise<readonly number[]>
  onEvent?: (e: SaveEvent) => void
  /** The Xen version written in the domain header. */
  xenVersion?: {major: number; minor: number}
}

export class SaveError extends Error {
  override readonly name = 'SaveError'
  constructor(
    message: string,
    /** The guest never answered the suspend request (libxl maps this to ERROR_GUEST_TIMEDOUT). */
    readonly suspendFailed = false,
  ) {
    super(message)
  }
}

/** What END or a checkpoint writes after the pages, read while the guest is suspended. */
interface CpuState {
  tsc: TscInfo
  context: Buffer
  params: readonly HvmParam[]
}

/** Progress is reported every 4 MiB of pages, as libxc does. */
const PROGRESS_PAGES = (4 * 1024 * 1024) / PAGE_SIZE
const SHUTDOWN_SUSPEND = 2

export async function saveDomain(opts: SaveOptions): Promise<void> {
  const run = new SaveRun(opts)
  try {
    await run.save()
  } finally {
    await run.close()
  }
}

class SaveRun {
  readonly #o: SaveOptions
  readonly #hv: Hypervisor
  #info!: DomainInfo
  #memory?: Awaited<ReturnType<Hypervisor['openMemory']>>
  #batch!: Buffer
  #live: boolean
  #logDirtyOn = false
  #checkpoints = 0

  constructor(opts: SaveOptions) {
    this.#o = opts
    this.#hv = opts.hypervisor
    this.#live = opts.live
  }

  #emit(e: SaveEvent): void {
    this.#o.onEvent?.(e)
  }

  async #write(rec: LibxcRecord): Promise<void> {
    await this.#o.sink.write(encodeLibxcRecord(rec))
  }

  async save(): Promise<void> {
    const {streamType, domid} = this.#o
    this.#info = await this.#hv.info(domid)
    if (this.#info.type === 'pv') throw new SaveError(`domain ${domid} is a PV guest: only HVM and PVH guests can be saved here`)
    if (streamType !== 'plain') this.#needCallbacks(streamType)
    this.#memory = await this.#hv.openMemory(domid)
    this.#batch = Buffer.allocUnsafe(MAX_BATCH_SIZE * PAGE_SIZE)

    this.#emit({kind: 'milestone', what: 'Start of stream'})
    const version = this.#o.xenVersion ?? {major: 4, minor: 17}
    await this.#o.sink.write([
      encodeImageHeader(),
      encodeDomainHeader({type: DOMAIN_TYPE.X86_HVM, pageShift: 12, xenMajor: version.major, xenMinor: version.minor}),
    ])
    await this.#staticData()
    await this.#write({kind: 'STATIC_DATA_END'})

    for (;;) {
      let cpu: CpuState | undefined
      if (this.#live) cpu = await this.#memoryLive()
      else if (streamType !== 'plain') cpu = await this.#suspendAndSendDirty()
      else await this.#memoryNonLive()

      await this.#endOfCheckpoint(cpu)
      if (streamType === 'plain') break

      // Checkpointed: from now on every round is suspend-and-send.
      this.#live = false
      await this.#write({kind: 'CHECKPOINT'})
      const cb = this.#o.callbacks
      if (streamType === 'colo' && (await cb.checkpoint!()) === 0) throw new SaveError('checkpoint callback failed')
      if ((await cb.postcopy!()) <= 0) return this.#stopped('postcopy')
      if (streamType === 'colo') {
        if ((await cb.waitCheckpoint!()) <= 0) return this.#stopped('wait_checkpoint')
      } else if ((await cb.checkpoint!()) <= 0) return this.#stopped('checkpoint')
    }

    this.#emit({kind: 'milestone', what: 'End of stream'})
    await this.#write({kind: 'END'})
    this.#emit({kind: 'milestone', what: 'Complete'})
  }

  /**
   * A checkpointed save ends when a callback says stop (the secondary went away, replication was
   * stopped): libxc reports it as a failure and libxl decides what it means.
   */
  #stopped(callback: string): never {
    throw new SaveError(`checkpointed save stopped by the ${callback} callback`)
  }

  #needCallbacks(streamType: 'remus' | 'colo'): void {
    const cb = this.#o.callbacks
    const missing = ['postcopy', 'checkpoint', ...(streamType === 'colo' ? ['waitCheckpoint'] : [])].filter(
      (k) => typeof cb[k as keyof SaveCallbacks] !== 'function',
    )
    if (missing.length) throw new Error(`a ${streamType} save needs the callbacks ${missing.join(', ')}`)
    if (streamType === 'colo' && !this.#o.readSecondaryDirty) throw new Error('a COLO save needs the back channel')
  }

  async #staticData(): Promise<void> {
    const policy = await this.#hv.getCpuPolicy(this.#o.domid)
    if (policy.cpuid.length) await this.#write({kind: 'X86_CPUID_POLICY', leaves: policy.cpuid})
    if (policy.msrs.length) {
      await this.#write({kind: 'X86_MSR_POLICY', msrs: policy.msrs.map((m) => ({index: m.index, flags: 0, value: m.value}))})
    }
  }

  /**
   * The CPU state of the suspended guest, read from the hypervisor: TSC, vCPU context, HVM params.
   * Three reads, asked at once: on a checkpoint the guest waits for each round trip.
   */
  #cpuState(): Promise<CpuState> {
    const {domid} = this.#o
    return Promise.all([this.#hv.getTscInfo(domid), this.#hv.getVcpuContext(domid), this.#hv.getHvmParams(domid)]).then(([tsc, context, params]) => ({
      tsc,
      context,
      params,
    }))
  }

  /**
   * The CPU state after the pages: the domain still suspended, then TSC, vCPU context and HVM
   * params. A checkpoint read them with its suspend check (`cpu`): the guest has not run since.
   */
  async #endOfCheckpoint(cpu?: CpuState): Promise<void> {
    const {domid} = this.#o
    if (!cpu) {
      const [now, state] = await Promise.all([this.#hv.info(domid), this.#cpuState()])
      this.#checkSuspended(now, 'Domain has not been suspended')
      cpu = state
    }
    await this.#write({kind: 'X86_TSC_INFO', ...cpu.tsc})
    await this.#write({kind: 'HVM_CONTEXT', context: cpu.context})
    const params = cpu.params.filter((p) => p.value !== 0n)
    if (params.length) {
      await this.#write({kind: 'HVM_PARAMS', params: params.map((p) => ({index: BigInt(p.index), value: p.value}))})
    }
  }

  #checkSuspended(info: DomainInfo, message: string, suspendFailed = false): void {
    if (!info.state.shutdown || info.state.shutdownReason !== SHUTDOWN_SUSPEND) throw new SaveError(message, suspendFailed)
  }

  /** Asks the toolstack to suspend the guest, then checks that it is. */
  async #suspend(): Promise<void> {
    await this.#askSuspend()
    await this.#suspendedState(false)
  }

  async #askSuspend(): Promise<void> {
    if ((await this.#o.callbacks.suspend()) === 0) throw new SaveError('save callback suspend() failed', true)
  }

  /**
   * Checks that the guest is suspended. With `checkpoint`, the log-dirty bitmap is taken and
   * cleared and the CPU state read in the same breath (one round trip to the hypervisor instead of
   * three while the guest waits); they are only used once the check passed.
   */
  async #suspendedState(checkpoint: false): Promise<void>
  async #suspendedState(checkpoint: true): Promise<{dirty: DirtyBitmap; cpu: CpuState}>
  async #suspendedState(checkpoint: boolean): Promise<{dirty: DirtyBitmap; cpu: CpuState} | void> {
    const {domid} = this.#o
    const [info, dirty, cpu] = await Promise.all([
      this.#hv.info(domid),
      checkpoint ? this.#hv.logDirty(domid).clean() : undefined,
      checkpoint ? this.#cpuState() : undefined,
    ])
    this.#checkSuspended(info, `Domain has not been suspended: shutdown ${Number(info.state.shutdown)}, reason ${info.state.shutdownReason ?? 0}`, true)
    this.#emit({kind: 'milestone', what: 'Domain now suspended'})
    if (checkpoint) return {dirty: dirty!, cpu: cpu!}
  }

  async #enableLogDirty(): Promise<void> {
    const log = this.#hv.logDirty(this.#o.domid)
    await log.enable()
    this.#logDirtyOn = true
    const cb = this.#o.callbacks.switchQemuLogdirty
    if (cb && (await cb(true)) === 0) throw new SaveError('switching the device model to log-dirty mode failed')
  }

  async #memoryNonLive(): Promise<void> {
    await this.#suspend()
    await this.#sendPages(DirtyBitmap.all(this.#info.pages), 'Frames', 'suspended')
  }

  /** Returns the CPU state read at the suspend, or nothing when a verify pass came after it. */
  async #memoryLive(): Promise<CpuState | undefined> {
    await this.#enableLogDirty()
    await this.#precopy()
    const cpu = await this.#suspendAndSendDirty()
    if (!(this.#o.debug && this.#o.streamType === 'plain')) return cpu
    await this.#write({kind: 'VERIFY'})
    await this.#sendPages(DirtyBitmap.all(this.#info.pages), 'Frames verify', 'suspended')
    return undefined
  }

  /** libxc's send_memory_live: the policy is asked before each round and again after it. */
  async #precopy(): Promise<void> {
    const policy = this.#o.policy ?? xlPolicy
    const log = this.#hv.logDirty(this.#o.domid)
    const pages = this.#info.pages
    let dirty = DirtyBitmap.all(pages)
    let stats: PrecopyStats = {iteration: 0, totalWritten: 0, dirtyCount: pages, sendRate: 0, dirtyRate: 0}
    let round = 0
    for (;;) {
      let decision = policy(stats)
      round++
      const started = performance.now()
      let sent = 0
      if (stats.dirtyCount > 0 && decision !== 'abort') sent = await this.#sendPages(dirty, `Frames iteration ${round}`, 'running')
      const ms = performance.now() - started
      if (decision !== 'continue') return this.#policyEnd(decision)
      stats = {
        iteration: round,
        totalWritten: stats.totalWritten + Math.max(stats.dirtyCount, 0),
        dirtyCount: -1,
        sendRate: ms > 0 ? (sent * 1000) / ms : 0,
        dirtyRate: stats.dirtyRate,
      }
      decision = policy(stats)
      if (decision !== 'continue') return this.#policyEnd(decision)
      dirty = await log.clean()
      const count = dirty.count()
      this.#emit({kind: 'round', iteration: round, sent, dirty: count, ms})
      stats = {...stats, dirtyCount: count, dirtyRate: ms > 0 ? (count * 1000) / ms : 0}
    }
  }

  #policyEnd(decision: 'abort' | 'stop'): void {
    if (decision === 'abort') throw new SaveError('Abort precopy loop')
  }

  /**
   * The last round of a live migration and the heart of every checkpoint; returns the suspended
   * guest's CPU state. COLO: the secondary's dirty list is read while the hypervisor answers (the
   * secondary sends it after its own suspend); a failed suspend check is still the error reported.
   */
  async #suspendAndSendDirty(): Promise<CpuState> {
    await this.#askSuspend()
    const state = this.#suspendedState(true)
    let listed: Promise<readonly number[]> | undefined
    if (!this.#live && this.#o.streamType === 'colo') {
      state.catch(() => undefined)
      // One turn of the event loop puts the questions on their way before the list is read (the
      // read may block until the secondary sends it).
      await new Promise((resolve) => setImmediate(resolve))
      listed = this.#o.readSecondaryDirty!()
      listed.catch(() => undefined)
    }
    const {dirty, cpu} = await state
    const primaryPages = dirty.count()
    let secondaryPages = 0
    if (listed) {
      const pfns = await listed
      secondaryPages = pfns.length
      for (const pfn of pfns) {
        if (!(pfn >= 0 && pfn < this.#info.pages)) throw new SaveError(`Invalid pfn 0x${pfn.toString(16)} in the secondary's dirty list`)
        dirty.set(pfn)
      }
    }
    const sent = await this.#sendPages(dirty, this.#live ? 'Frames final' : 'Checkpointed save', 'suspended')
    if (this.#o.streamType !== 'plain') {
      this.#checkpoints++
      this.#emit({kind: 'checkpoint', number: this.#checkpoints, primary: primaryPages, secondary: secondaryPages, sent})
    }
    return cpu
  }

  /**
   * Sends the pages of a bitmap in PAGE_DATA records of up to 1024 pages; returns how many. Where
   * memory is a file and the sink takes one, the pages go fd to fd; else through our batch buffer.
   * `guest`: whether the guest runs while they go. Only then may the kernel pass a page by
   * reference: a page changed after it left is dirty again and sent again. A suspended guest's
   * pages are copied: it may run again (after a checkpoint, a failed migration, save -c) before
   * the far side has read them.
   */
  async #sendPages(set: DirtyBitmap, prefix: string, guest: 'running' | 'suspended'): Promise<number> {
    const total = set.count()
    const memory = this.#memory!
    const sink = this.#o.sink
    const pagesFd = memory.pagesFd
    const share = guest === 'running'
    let pfns: number[] = []
    let done = 0
    const flush = async (): Promise<void> => {
      if (!pfns.length) return
      const types = new Array<number>(pfns.length).fill(0)
      if (pagesFd !== undefined && sink.writeFromFile) {
        await sink.writeFromFile(encodePageDataHead(pfns, types), pagesFd, pageFileRuns(pfns), share)
      } else {
        const data = this.#batch.subarray(0, pfns.length * PAGE_SIZE)
        await memory.readPages(pfns, data)
        await sink.write(encodePageData({pfns, types, pages: [data]}))
      }
      pfns = []
    }
    for (const pfn of set.pfns()) {
      if (done % PROGRESS_PAGES === 0) this.#emit({kind: 'pages', prefix, done, total})
      pfns.push(pfn)
      done++
      if (pfns.length === MAX_BATCH_SIZE) await flush()
    }
    await flush()
    this.#emit({kind: 'pages', prefix, done: total, total})
    return total
  }

  async close(): Promise<void> {
    await this.#memory?.close().catch(() => {})
    if (this.#logDirtyOn) {
      await this.#hv.logDirty(this.#o.domid).disable().catch(() => {})
      await this.#o.callbacks.switchQemuLogdirty?.(false).catch(() => 0)
    }
  }
}
