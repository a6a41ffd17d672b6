/**
 * The libxl-level receiver: what libxl__stream_read does for a plain stream (XEN-FACTS §2.5). It
 * reads the libxl header and records from the fd with exact reads, up to LIBXC_CONTEXT; hands the
 * fd to the restore helper, which reads the libxc stream from the same position up to its END; then
 * reads the libxl records that follow (EMULATOR_XENSTORE_DATA kept, EMULATOR_CONTEXT kept for the
 * device model, which the caller starts from it: device-model.ts, END).
 *
 * Offsets. Before the hand-off they are counted from `offset` (default: the file position, so a
 * savefile's offsets are file offsets). After it, on a file, the shared file position says where the
 * helper stopped, and the count goes on from there. On a pipe nobody can say how many bytes the
 * helper consumed: errors then name the record and count from the end of the libxc stream, and say
 * that the offset is unknown rather than print a wrong one.
 *
 * The domain must have been built for restore; it is never destroyed or unpaused here: the caller
 * does that (and destroys it when this fails).
 *
 * A Remus stream (stream_type 1): at each libxc CHECKPOINT the helper calls back, and the callback
 * reads the libxl records that follow (EMULATOR_XENSTORE_DATA, EMULATOR_CONTEXT) up to
 * CHECKPOINT_END, buffered (libxl's BUFFERING phase); only when all are in are they applied and the
 * helper told SUCCESS, so it applies its own buffered checkpoint. A stream that breaks while
 * buffering is answered FAILOVER: the helper then completes with the last whole checkpoint, and
 * `receiveDomain` resolves with `failover` (the caller starts the domain). xl's primary never ends
 * the stream; an xl-ts primary that stops on purpose ends it after a whole checkpoint with libxc
 * END and libxl END (COLO: libxl END where CHECKPOINT_STATE NEW was due), and `receiveDomain` then
 * resolves with `stoppedByPrimary` instead of a failover.
 *
 * COLO (stream_type 2): the helper's checkpoint, postcopy, wait_checkpoint and suspend callbacks go
 * to the secondary's cycle (`coloCycles`, replication/colo-secondary.ts) in turn, with this reader's
 * reads (SecondaryIo).
 */
import {FdByteSource, FdError} from '../fd/index.js'
import {HelperChannel, STREAM_OFFSET_ENV, STREAM_TYPE, XGR_CHECKPOINT, type HelperCommand, type HelperOutcome, type PrestartedHelper, type RestoreResults} from '../helper/index.js'
import type {Hypervisor} from '../hypervisor/index.js'
import {
  StreamError,
  decodeLibxlRecord,
  fail,
  libxlSite,
  libxlTypeName,
  readLibxlHeader,
  readRecordBody,
  readRecordHeader,
  type LibxlRecord,
  type RawRecord,
} from '../stream/index.js'
import {MigrateError, fromRelativeStreamError, fromStreamError, type MigrateStep} from './errors.js'
import type {MigrateEventHandler} from './events.js'
import {fdPosition} from '../fd/index.js'
import {helperFailure, runStreamHelper} from './helper-callout.js'
import {helperEnv} from './helper-env.js'
import {keepDeviceModelState} from './device-model.js'
import {ColoStateError} from './checkpoint-state.js'

/** The primary sent nothing for longer than the heartbeat timeout. */
class HeartbeatTimeout extends Error {}


export interface ReceiveDomainOptions {
  readonly hypervisor: Hypervisor
  /** The domain built for restore (Hypervisor.create with forRestore). */
  readonly domid: number
  /**
   * A plain stream into a domain still being built (Hypervisor.createEarly): settles when it is.
   * The helper is started meanwhile (it waits for the domain itself); nothing here touches the
   * domain before this resolves. The caller reports a build that fails.
   */
  readonly domainBuilt?: Promise<void>
  /** The stream fd, positioned at the libxl header. Never closed here. */
  readonly fd: number
  readonly streamType: 'plain' | 'remus' | 'colo'
  /**
   * COLO: the back channel to the primary (our stdout): the restore helper's send_back_fd (its
   * dirty pfn lists) and where we write the secondary's CHECKPOINT_STATE records.
   */
  readonly backChannel?: number
  /**
   * COLO: the secondary's checkpoint cycles (replication/colo-secondary.ts), given this reader's
   * side (the helper's callbacks in turn, the stream's reads); what they end with is this stream's
   * ending.
   */
  readonly coloCycles?: (io: SecondaryIo) => Promise<ColoSecondaryEnd>
  /**
   * COLO: how long the secondary waits for the primary's next checkpoint request before it takes
   * the primary for dead and fails over (undefined: for ever, as xl).
   */
  readonly heartbeatTimeoutMs?: number
  /**
   * Remus: checkpoint n is here whole (through CHECKPOINT_END) and its device state applied; the
   * helper applies its memory next. The secondary acknowledges it to the primary here.
   */
  readonly onCheckpoint?: (n: number) => Promise<void> | void
  /** The helper's environment; default: ours with XL_TS_BACKEND/XL_TS_ROOT of `hypervisor`. */
  readonly env?: NodeJS.ProcessEnv
  readonly onEvent?: MigrateEventHandler
  readonly signal?: AbortSignal
  readonly helperCommand?: HelperCommand
  /** Our helper started ahead for this stream (helper/prestart.ts): used if it still waits. */
  readonly prestarted?: PrestartedHelper
  /** Stream offset of the fd's position now (default: the file position of a file, else 0). */
  readonly offset?: number
  /** Event channels for the xenstore and console rings (libxl allocates them; the sim has none). */
  readonly storeEvtchn?: number
  readonly consoleEvtchn?: number
}

/** What the libxl stream reader gives the COLO secondary's cycles (XEN-FACTS §7.3). */
export interface SecondaryIo {
  readonly hypervisor: Hypervisor
  readonly domid: number
  /** Our end of the back channel (the primary reads our CHECKPOINT_STATE records there). */
  readonly backChannel: number
  /** The restore helper's checkpoint, postcopy, wait_checkpoint and suspend callbacks, in turn. */
  readonly helper: HelperChannel
  /** libxl's records of checkpoint n up to CHECKPOINT_END (BUFFERING); throws when the stream breaks. */
  readCheckpoint(n: number): Promise<readonly LibxlRecord[]>
  /** Applies a checkpoint's device model records; resolves with why that failed, if it did. */
  loadDevices(n: number, records: readonly LibxlRecord[]): Promise<string | undefined>
  /** Checkpoint n is here whole and will be applied. */
  received(n: number, records: number): void
  /**
   * The next libxl record; a ColoStateError (ended) when the stream ended or none came within the
   * heartbeat timeout.
   */
  nextRecord(): Promise<{readonly record: LibxlRecord; readonly index: number}>
}

/** How the COLO secondary's cycles ended. */
export interface ColoSecondaryEnd {
  /** Why the cycles broke (a failover or an error), if they did. */
  readonly failure?: string
  /** The primary ended the stream on purpose (libxl END where NEW was due). */
  readonly stoppedByPrimary: boolean
  /** The guest was running when the cycles ended (else it is suspended). */
  readonly running: boolean
}

export interface ReceiveResult {
  readonly restoreResults: RestoreResults
  /** EMULATOR_XENSTORE_DATA entries (relative to the device model's xenstore path). */
  readonly xenstoreData: readonly (readonly [string, string])[]
  /** Bytes of device model state loaded (0: none in the stream). */
  readonly deviceStateBytes: number
  readonly helper: HelperOutcome
  readonly helperMs: number
  /** Stream offset just past END; null when it cannot be known (a pipe) or there is no END (Remus). */
  readonly endOffset: number | null
  /** Remus: checkpoints received whole. */
  readonly checkpoints?: number
  /** Remus: the stream broke: why (the domain holds the last whole checkpoint). */
  readonly failover?: string
  /** Remus: the primary ended the stream on purpose (libxc END + libxl END): it runs the domain. */
  readonly stoppedByPrimary?: boolean
  /** COLO: the secondary guest was running when the stream ended (else it is suspended). */
  readonly secondaryRunning?: boolean
}

interface ReadRecord {
  readonly raw: RawRecord
  readonly record: LibxlRecord
}

export async function receiveDomain(opts: ReceiveDomainOptions): Promise<ReceiveResult> {
  return new Receiver(opts).run()
}

class Receiver {
  readonly #o: ReceiveDomainOptions
  #source: FdByteSource
  /** True after the hand-off on a pipe: offsets count from the end of the libxc stream. */
  #relative = false
  #index = 0
  #step: MigrateStep = 'libxl header'
  readonly #startPosition: number | undefined
  readonly #base: number
  /** Remus: whole checkpoints, and why the stream ended (set by the checkpoint callback). */
  #checkpoints = 0
  #failover: string | undefined
  #xenstoreData: (readonly [string, string])[] = []
  /** COLO: the secondary guest is running (not suspended by a checkpoint). */
  #coloRunning = false
  /** COLO: the primary ended the stream on purpose (libxl END where NEW was due). */
  #stoppedByPrimary = false
  #deviceStateBytes = 0

  constructor(opts: ReceiveDomainOptions) {
    this.#o = opts
    this.#startPosition = fdPosition(opts.fd)
    this.#base = opts.offset ?? this.#startPosition ?? 0
    this.#source = new FdByteSource(opts.fd, {offset: this.#base})
  }

  #emit: MigrateEventHandler = (e) => this.#o.onEvent?.(e)

  async run(): Promise<ReceiveResult> {
    const {hypervisor: hv, domid, domainBuilt} = this.#o
    if (domainBuilt && this.#o.streamType !== 'plain') throw new Error('only a plain stream is received into a domain still being built')
    const isHvm = async (): Promise<boolean> => {
      try {
        await domainBuilt
        return (await hv.info(domid)).type === 'hvm'
      } catch (err) {
        throw new MigrateError('hypervisor', 'libxl header', `domain ${domid}: ${(err as Error).message}`, {cause: err})
      }
    }
    // A domain being built is asked once the helper runs (a plain stream needs the answer only for
    // the libxl records after it); a built one first, as libxl does.
    let hvm = domainBuilt ? undefined : await isHvm()
    const headerOffset = this.#source.offset
    await this.#guard(() => readLibxlHeader(this.#source))
    this.#emit({kind: 'libxl-header', offset: headerOffset})

    // Up to the hand-off: only LIBXC_CONTEXT may come (libxl writes nothing before it).
    this.#step = 'libxl records'
    for (;;) {
      const {raw, record} = await this.#next()
      if (record.kind === 'LIBXC_CONTEXT') break
      await this.#guard(async () => {
        if (record.kind === 'END') fail(libxlSite(raw), 'bad-order', 'END before the libxc stream (no LIBXC_CONTEXT)')
        return fail(libxlSite(raw), 'bad-order', `${record.kind} before the libxc stream`)
      })
    }

    const libxcStart = this.#source.offset
    const helper = await this.#libxc(libxcStart, hvm ?? true)
    hvm ??= await isHvm()
    if (this.#o.streamType !== 'plain') {
      // A primary that stops on purpose ends the stream: libxc END (the helper completed) and
      // libxl END. Anything else is the stream breaking: fail over.
      let stopped = this.#stoppedByPrimary
      if (!stopped && this.#failover === undefined) {
        try {
          stopped = (await this.#next()).record.kind === 'END'
        } catch {
          // The helper failed over on the broken stream already; this read only confirms it.
          this.#failover = 'the stream from the primary ended'
        }
      }
      const failover = stopped ? undefined : (this.#failover ?? 'the stream ended')
      if (failover !== undefined) this.#emit({kind: 'failover', checkpoints: this.#checkpoints, reason: failover})
      return {
        restoreResults: helper.results,
        xenstoreData: this.#xenstoreData,
        deviceStateBytes: this.#deviceStateBytes,
        helper: helper.outcome,
        helperMs: helper.ms,
        endOffset: null,
        checkpoints: this.#checkpoints,
        ...(failover !== undefined ? {failover} : {stoppedByPrimary: true}),
        ...(this.#o.streamType === 'colo' ? {secondaryRunning: this.#coloRunning} : {}),
      }
    }

    // After the libxc stream: emulator records, then END.
    this.#step = 'libxl records'
    const xenstoreData: [string, string][] = []
    let deviceStateBytes = 0
    for (;;) {
      const {raw, record} = await this.#next()
      switch (record.kind) {
        case 'EMULATOR_XENSTORE_DATA':
        case 'EMULATOR_CONTEXT':
          if (!hvm) await this.#guard(async () => fail(libxlSite(raw), 'bad-order', `${record.kind} in the stream of a guest that is not HVM`))
          if (record.kind === 'EMULATOR_XENSTORE_DATA') {
            xenstoreData.push(...record.entries)
            this.#emit({kind: 'xenstore-data', entries: record.entries.length})
          } else {
            this.#step = 'emulator context'
            try {
              await keepDeviceModelState(hv, domid, record.blob)
            } catch (err) {
              throw new MigrateError('hypervisor', 'emulator context', `domain ${domid}: cannot keep the device model state: ${(err as Error).message}`, {cause: err})
            }
            deviceStateBytes += record.blob.length
            this.#emit({kind: 'device-state', direction: 'received', bytes: record.blob.length})
            this.#step = 'libxl records'
          }
          continue
        case 'END': {
          const end = this.#relative ? null : this.#source.offset
          this.#emit({kind: 'stream-end', offset: end})
          return {restoreResults: helper.results, xenstoreData, deviceStateBytes, helper: helper.outcome, helperMs: helper.ms, endOffset: end}
        }
        case 'LIBXC_CONTEXT':
          await this.#guard(async () => fail(libxlSite(raw), 'bad-order', 'a second LIBXC_CONTEXT'))
          continue
        default:
          await this.#guard(async () => fail(libxlSite(raw), 'bad-order', `${record.kind} in a plain (not checkpointed) stream`))
      }
    }
  }

  /** The hand-off: the restore helper reads the libxc stream from the shared fd. */
  async #libxc(libxcStart: number, hvm: boolean): Promise<{outcome: HelperOutcome; results: RestoreResults; ms: number}> {
    const {hypervisor: hv, domid, fd} = this.#o
    this.#step = 'libxc stream'
    const colo = this.#o.streamType === 'colo'
    /** Remus or COLO: a checkpointed stream. */
    const remus = this.#o.streamType !== 'plain'
    if (colo && this.#o.backChannel === undefined) throw new Error('a COLO stream needs the back channel')
    if (colo && !this.#o.coloCycles) throw new Error("a COLO stream needs the secondary's cycles")
    if (remus) {
      // The checkpoint callback reads libxl records between the helper's reads: on a pipe their
      // offsets are unknown from here on.
      this.#relative = this.#startPosition === undefined
      if (this.#relative) this.#source = new FdByteSource(fd, {offset: 0})
    }
    let results: RestoreResults | undefined
    const channel = colo ? new HelperChannel() : undefined
    const cycles = colo ? this.#coloSecondary(channel!, hvm) : undefined
    let run
    try {
      run = await runStreamHelper({
        params: {
          mode: 'restore',
          ioFd: fd,
          ...(colo ? {sendBackFd: this.#o.backChannel!} : {}),
          domid,
          storeEvtchn: this.#o.storeEvtchn ?? 1,
          storeDomid: 0,
          consoleEvtchn: this.#o.consoleEvtchn ?? 2,
          consoleDomid: 0,
          streamType: colo ? STREAM_TYPE.COLO : remus ? STREAM_TYPE.REMUS : STREAM_TYPE.PLAIN,
        },
        callbacks: {
          // libxl applies a legacy CPU policy when the stream has none; ours always has one.
          staticDataDone: async () => 0,
          restoreResults: (storeGfn, consoleGfn) => {
            results = {storeGfn, consoleGfn}
          },
          // Remus: libxl's checkpoint callback; COLO: the secondary's cycle takes each callback in turn.
          ...(colo ? channel!.callbacks(['checkpoint', 'postcopy', 'wait_checkpoint', 'suspend']) : remus ? {checkpoint: () => this.#checkpoint(hvm)} : {}),
        },
        // Tells our helper where its part starts, so its errors name offsets in the whole stream.
        env: {...(this.#o.env ?? helperEnv(hv)), [STREAM_OFFSET_ENV]: String(libxcStart)},
        ...(this.#o.onEvent ? {onEvent: this.#o.onEvent} : {}),
        ...(this.#o.signal ? {signal: this.#o.signal} : {}),
        ...(this.#o.helperCommand ? {command: this.#o.helperCommand} : {}),
        ...(this.#o.prestarted ? {prestarted: this.#o.prestarted} : {}),
      })
    } catch (err) {
      channel?.end(err)
      await cycles
      const e = helperFailure(err, 'restore')
      // A callback that answered "error" kept why (the helper only knows the answer).
      const why = this.#failover !== undefined ? `; ${this.#failover}` : ''
      throw new MigrateError(e.code, e.step, `${e.message} (the libxc stream starts at offset ${libxcStart})${why}`, {...e.info, cause: e.info.cause ?? err})
    }
    channel?.end()
    await cycles
    // Where the libxl layer goes on.
    const now = fdPosition(fd)
    let bytes: number | undefined
    if (this.#startPosition !== undefined && now !== undefined) {
      const offset = this.#base + (now - this.#startPosition)
      bytes = offset - libxcStart
      this.#source = new FdByteSource(fd, {offset})
    } else {
      this.#relative = true
      this.#source = new FdByteSource(fd, {offset: 0})
    }
    this.#emit({kind: 'helper-done', mode: 'restore', ms: run.ms, ...(bytes !== undefined ? {bytes} : {})})
    return {outcome: run.outcome, results: results ?? run.outcome.restoreResults ?? {storeGfn: 0n, consoleGfn: 0n}, ms: run.ms}
  }

  /**
   * Remus: the helper reached a CHECKPOINT: read libxl's records up to CHECKPOINT_END (buffering),
   * then apply them. XGR_CHECKPOINT: 1 success, 2 failover (the stream broke or went wrong while
   * buffering: libxl's answer to any error there), 0 error (applying failed).
   */
  async #checkpoint(hvm: boolean): Promise<number> {
    const n = this.#checkpoints + 1
    let buffered
    try {
      buffered = await this.#readCheckpoint(n, hvm)
    } catch (err) {
      this.#failover = err instanceof Error ? err.message : String(err)
      return XGR_CHECKPOINT.FAILOVER
    }
    const unloaded = await this.#loadDevices(n, buffered)
    if (unloaded !== undefined) {
      this.#failover = unloaded
      return XGR_CHECKPOINT.ERROR
    }
    this.#received(n, buffered.length + 1)
    try {
      await this.#o.onCheckpoint?.(n)
    } catch (err) {
      this.#failover = `checkpoint ${n} could not be applied: ${(err as Error).message}`
      return XGR_CHECKPOINT.ERROR
    }
    return XGR_CHECKPOINT.SUCCESS
  }

  /** libxl's records of checkpoint n up to CHECKPOINT_END (BUFFERING): the device model's, kept. */
  async #readCheckpoint(n: number, hvm: boolean): Promise<LibxlRecord[]> {
    this.#step = 'libxl records'
    const buffered: LibxlRecord[] = []
    for (;;) {
      const {raw, record} = await this.#next()
      if (record.kind === 'CHECKPOINT_END') return buffered
      if ((record.kind === 'EMULATOR_XENSTORE_DATA' || record.kind === 'EMULATOR_CONTEXT') && hvm) buffered.push(record)
      else await this.#guard(async () => fail(libxlSite(raw), 'bad-order', `${record.kind} inside Remus checkpoint ${n}`))
    }
  }

  #received(n: number, records: number): void {
    this.#checkpoints = n
    this.#emit({kind: 'checkpoint-received', number: n, records})
  }

  /** A checkpoint's device model records, applied; why not, when that failed. */
  async #loadDevices(n: number, records: readonly LibxlRecord[]): Promise<string | undefined> {
    const {hypervisor: hv, domid} = this.#o
    try {
      for (const record of records) {
        if (record.kind === 'EMULATOR_CONTEXT') {
          await keepDeviceModelState(hv, domid, record.blob)
          this.#deviceStateBytes += record.blob.length
        } else if (record.kind === 'EMULATOR_XENSTORE_DATA') {
          this.#xenstoreData = [...record.entries]
        }
      }
      return undefined
    } catch (err) {
      return `checkpoint ${n} could not be applied: ${(err as Error).message}`
    }
  }

  /** COLO: the secondary's cycles on the helper's callbacks, reading through this reader. */
  async #coloSecondary(helper: HelperChannel, hvm: boolean): Promise<void> {
    const o = this.#o
    const end = await o.coloCycles!({
      hypervisor: o.hypervisor,
      domid: o.domid,
      backChannel: o.backChannel!,
      helper,
      readCheckpoint: (n) => this.#readCheckpoint(n, hvm),
      loadDevices: (n, records) => this.#loadDevices(n, records),
      received: (n, records) => this.#received(n, records),
      nextRecord: async () => {
        try {
          const {raw, record} = await this.#nextWithin(o.heartbeatTimeoutMs)
          return {record, index: raw.index}
        } catch (err) {
          // A read that failed: the primary's stream ended (or broke) where NEW was due.
          if (err instanceof HeartbeatTimeout) throw new ColoStateError(err.message, true)
          if (err instanceof MigrateError) throw new ColoStateError('the stream from the primary ended', true)
          throw err
        }
      },
    })
    if (end.failure !== undefined) this.#failover = end.failure
    this.#stoppedByPrimary = end.stoppedByPrimary
    this.#coloRunning = end.running
  }

  /**
   * The next record, or a HeartbeatTimeout when none has come within `ms`: a primary that sends
   * nothing for that long is taken for dead. The read goes on; once the helper has failed over,
   * nobody uses what it returns.
   */
  async #nextWithin(ms: number | undefined): Promise<ReadRecord> {
    if (ms === undefined) return this.#next()
    const read = this.#next()
    read.catch(() => undefined)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HeartbeatTimeout(`no checkpoint request from the primary for ${ms} ms (heartbeat timeout)`)), ms)
    })
    try {
      return await Promise.race([read, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  async #next(): Promise<ReadRecord> {
    return this.#guard(async () => {
      const frame = {format: 'libxl' as const, index: this.#index, nameOf: libxlTypeName}
      const header = (await readRecordHeader(this.#source, frame))!
      const raw = await readRecordBody(this.#source, header, frame)
      const record = decodeLibxlRecord(raw)
      this.#index++
      this.#emit({kind: 'libxl-record', record: record.kind, index: raw.index, offset: this.#relative ? null : raw.offset, length: raw.body.length})
      return {raw, record}
    })
  }

  /** Runs a read; turns stream and fd faults into MigrateErrors with the right offset (or none). */
  async #guard<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f()
    } catch (err) {
      if (err instanceof StreamError) throw this.#relative ? fromRelativeStreamError(err, this.#step) : fromStreamError(err, this.#step)
      if (err instanceof FdError || (err as NodeJS.ErrnoException)?.code) {
        const why = err instanceof FdError ? err.detail : (err as Error).message
        throw new MigrateError('io', this.#step, `cannot read the migration stream (fd ${this.#o.fd}): ${why}`, {cause: err})
      }
      throw err
    }
  }
}
