/**
 * A checkpointed stream from the primary (libxl_domain_remus_start's part, XEN-FACTS §7.1, §10.1):
 * the libxl stream with the save helper (stream type REMUS or COLO, the first round live), then
 * checkpoint after checkpoint, each one function of the mode (remus-primary.ts, colo-primary.ts),
 * until one stops cleanly or fails. It implements what the cycles ask of their surroundings
 * (PrimaryIo): the suspend and resume, the checkpoint's report, the guest's counters.
 *
 * What xl does around it (the transport, the xl header, the guardian, the ending) is
 * xl/remus-session.ts; a test drives this on fds of its own.
 */
import * as fs from 'node:fs'

import {HelperEndedError} from '../helper/index.js'
import {type Hypervisor} from '../hypervisor/index.js'
import {MigrateError} from '../libxl/index.js'
import type {MigrateEvent, MigrateEventHandler} from '../libxl/index.js'
import {helperEnv} from '../libxl/index.js'
import {startSaveStream, type SaveStream} from '../libxl/index.js'
import {testHooks, type CheckpointProbe} from '../test-hooks.js'
import {CheckpointError, SuspendError, type GuardianLink, type CycleEnd, type LogLevel, type PrimaryIo, type PrimaryMode} from './cycle.js'
import type {RemusEvent} from './events.js'

export interface CheckpointingOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  readonly mode: PrimaryMode
  /** The stream fd (the transport's, or /dev/null). */
  readonly fd: number
  /** The way back from the backup (undefined: blackhole). */
  readonly wayBack?: number
  /** Stream offset of the fd's position (after the xl header). */
  readonly offset?: number
  readonly guardian?: GuardianLink
  /** The helper's environment (default process.env, with this host's XL_TS_BACKEND/XL_TS_ROOT). */
  readonly env?: NodeJS.ProcessEnv
  /** Stop after the next whole checkpoint (the operator's interrupt). */
  readonly signal?: AbortSignal
  readonly onEvent: (e: RemusEvent) => void
  readonly onStreamEvent?: MigrateEventHandler
  /** performance.now() events count from. */
  readonly startedAt: number
}

/** Bytes a process has written (its /proc/<pid>/io wchar), if it can be read. */
function helperWchar(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const m = /^wchar:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/io`, 'latin1'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

export class Checkpointing implements PrimaryIo {
  readonly #o: CheckpointingOptions
  readonly hypervisor: Hypervisor
  readonly domid: number
  readonly guardian: GuardianLink | undefined
  readonly probe: CheckpointProbe | undefined
  #stream: SaveStream | undefined
  #checkpoints = 0
  /** What the helper tells of the checkpoint being taken: its pages, and (COLO) the sets A and B. */
  #pages = 0
  #dirty: {primaryDirty?: number; secondaryDirty?: number} = {}
  /** The save helper, and its write count at the last suspend. */
  #helperPid: number | undefined
  #wcharAtSuspend: number | undefined

  constructor(o: CheckpointingOptions) {
    this.#o = o
    this.hypervisor = o.hypervisor
    this.domid = o.domid
    this.guardian = o.guardian
    this.probe = testHooks().checkpointProbe(o.hypervisor, o.domid, 'primary')
  }

  /** Checkpoints on the stream (CHECKPOINT_END written). */
  get checkpoints(): number {
    return this.#checkpoints
  }

  get stream(): SaveStream {
    return this.#stream!
  }

  stopRequested(): boolean {
    return this.#o.signal?.aborted === true
  }

  log(level: LogLevel, text: string): void {
    this.#o.onEvent({kind: 'log', level, text})
  }

  /** Resolves true when replication was stopped on request with the stream ended cleanly; else throws why it stopped. */
  async run(): Promise<boolean> {
    const o = this.#o
    const {backChannel} = await o.mode.open(this, o.wayBack)
    this.#stream = await startSaveStream({
      hypervisor: this.hypervisor,
      domid: o.domid,
      fd: o.fd,
      live: true,
      debug: false,
      streamType: o.mode.streamType,
      ...(backChannel !== undefined ? {backChannel} : {}),
      env: helperEnv(this.hypervisor, o.env ?? process.env),
      offset: o.offset ?? 0,
      // Replication is stopped by the operator's interrupt, which must not kill the helper under it.
      ownSession: true,
      onEvent: (e) => this.streamEvent(e),
    })

    let end: CycleEnd = 'next'
    let failure: unknown
    for (let n = 1; end === 'next'; n++) {
      try {
        end = await o.mode.checkpoint(n)
      } catch (err) {
        failure = err
        break
      }
    }
    // The helper ends either way: the last callback was answered 0 (a stop, or a failure).
    const helperEnd = await this.#stream.done.then(
      () => undefined,
      (err: unknown) => err,
    )
    if (failure === undefined && end === 'stop') return true
    throw this.#failure(failure, helperEnd)
  }

  /** Why replication stopped, as one error: the guest that did not suspend, else the first cause. */
  #failure(failure: unknown, helperEnd: unknown): unknown {
    if (failure instanceof CheckpointError) {
      if (failure.cause instanceof SuspendError) {
        return new MigrateError('suspend', 'libxc stream', `domain ${this.domid} could not be suspended: ${failure.cause.message}`, {cause: failure})
      }
      this.streamEvent({kind: 'checkpoint-failed', number: failure.number, reason: failure.message})
      // The helper ended under the cycle: its own failure says why.
      if (failure.cause instanceof HelperEndedError && helperEnd !== undefined) return helperEnd
      return new MigrateError('io', 'libxc stream', failure.message, {cause: failure})
    }
    if (failure !== undefined) return failure
    return helperEnd ?? new MigrateError('helper', 'libxc stream', `the save helper ended a ${this.#o.mode.name} stream without an error: it cannot have replicated`)
  }

  // ---- the cycles' side -------------------------------------------------------------------------

  async suspend(): Promise<{atMs: number; deviceState?: Buffer}> {
    const atMs = performance.now()
    this.#wcharAtSuspend = helperWchar(this.#helperPid)
    try {
      await this.hypervisor.suspend(this.domid)
    } catch (err) {
      const reason = (err as Error).message
      this.streamEvent({kind: 'suspend-failed', domid: this.domid, reason})
      throw new SuspendError(reason, {cause: err})
    }
    this.streamEvent({kind: 'suspended', domid: this.domid})
    return this.#stream!.hvm ? {atMs, deviceState: await this.#stream!.saveDeviceState()} : {atMs}
  }

  async resume(): Promise<void> {
    try {
      await this.hypervisor.resume(this.domid, {cancel: true})
    } catch (err) {
      throw new Error(`cannot resume the domain: ${(err as Error).message}`, {cause: err})
    }
  }

  async writeCheckpointEnd(n: number, deviceState: Buffer | undefined): Promise<void> {
    const {writer} = this.stream
    if (deviceState) await writer.emulatorContext(deviceState)
    await writer.record({kind: 'CHECKPOINT_END'})
    this.#checkpoints = n
    this.streamEvent({kind: 'checkpoint-sent', number: n})
  }

  async resumed(n: number, atMs: number, extra: {reason?: 'first' | 'timer' | 'divergence'; requestedAtMs?: number} = {}): Promise<void> {
    const pausedMs = performance.now() - atMs
    // By the resume the helper has written the checkpoint's records (CHECKPOINT included).
    const wchar = helperWchar(this.#helperPid)
    const helperBytes = wchar !== undefined && this.#wcharAtSuspend !== undefined ? wchar - this.#wcharAtSuspend : undefined
    const step = (await this.guestCounters())?.step
    this.#o.onEvent({
      kind: 'checkpoint',
      number: n,
      atMs: atMs - this.#o.startedAt,
      pausedMs,
      pages: this.#pages,
      ...(step !== undefined ? {step} : {}),
      ...(extra.reason ? {reason: extra.reason, ...this.#dirty} : {}),
      ...(extra.requestedAtMs !== undefined ? {requestedAtMs: extra.requestedAtMs - this.#o.startedAt} : {}),
      ...(helperBytes !== undefined ? {helperBytes} : {}),
    })
    this.#pages = 0
    this.#dirty = {}
  }

  /** The sim guest's step and frames sent so far (undefined elsewhere). */
  async guestCounters(): Promise<{step: number; frames: number} | undefined> {
    try {
      return await this.hypervisor.simulation?.guestCounters(this.domid)
    } catch {
      return undefined
    }
  }

  /** The libxl layer's events: what they tell of the checkpoint, then to whoever listens. */
  streamEvent(e: MigrateEvent): void {
    // Our helper's words for a COLO checkpoint's sets: "checkpoint N: A pages dirty here, B on the secondary, S sent".
    if (e.kind === 'helper-log') {
      const m = /^checkpoint \d+: (\d+) pages dirty here, (\d+) on the secondary/.exec(e.log.message)
      if (m) this.#dirty = {primaryDirty: Number(m[1]), secondaryDirty: Number(m[2])}
    }
    if (e.kind === 'helper-started' && e.pid !== undefined) {
      this.#helperPid = e.pid
      void this.guardian?.helper(e.pid)
    }
    // A checkpoint's pages: the first one's go out as the live round's last pass ("Frames final").
    if (e.kind === 'helper-progress' && /^(Checkpointed save|Frames final)/.test(e.progress.doingWhat)) this.#pages = Number(e.progress.total)
    this.#o.onStreamEvent?.(e)
  }
}
