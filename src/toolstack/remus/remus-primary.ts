/**
 * The Remus primary: what xl's main_remus and libxl's Remus do (XEN-FACTS §1.8, §10).
 *
 *   1. the transport (`sh -c RUNE`, rune `exec ssh HOST xl-ts migrate-receive -r [-e]`), the banner,
 *      the xl header and config; with -b (blackhole) the stream goes to /dev/null, no receiver;
 *   2. the libxl Remus stream (sender.ts, stream_type 1): the first round live, then a checkpoint
 *      every interval: suspend, devices postsuspend (a new network epoch), dirty pages + CPU state +
 *      CHECKPOINT, resume, EMULATOR_CONTEXT + CHECKPOINT_END, devices commit;
 *   3. network output: held per epoch (sim-netbuf.ts) and let out when the secondary acknowledges
 *      the checkpoint on the way back (remus-ack.ts; with -b, at commit, as xl does);
 *   4. the end, as xl: the domain gone -> "Remus: Primary domain has been destroyed." (exit 0); the
 *      guest never suspended -> "Failed to suspend domain at primary." (exit 1); anything else (the
 *      backup went away) -> "Remus: Backup failed? resuming domain at primary.", resume, exit 1.
 *
 * COLO (`colo` set, XEN-FACTS §7.2) is the same loop over stream_type 2: the secondary runs too;
 * the back channel goes to the save helper (the secondary's dirty pfn lists) and to sendDomain
 * (its CHECKPOINT_STATE records); a checkpoint comes when the checkpoint trigger asks (the guests'
 * outputs diverged) or when `maxIntervalMs` has passed; there is no network buffering and no
 * acknowledgement (SVM_READY says the secondary holds the checkpoint). Lines say "COLO:".
 *
 * Beyond xl: checkpoints start every `intervalMs` counted from the previous suspend (xl waits the
 * interval after each checkpoint, so its period is the interval plus the checkpoint); an operator's
 * interrupt stops replication cleanly: after the next whole checkpoint the stream ends with libxc
 * END and libxl END, which an xl-ts secondary takes as "discard your copy" rather than a failover,
 * and the guest runs on here (exit 0).
 */
import * as fs from 'node:fs'

import {FdError, openFdPair, readExact, writeAll, type FdPair} from '../fd/index.js'
import {asSim, frameGuestStep, HypervisorError, type Hypervisor} from '../hypervisor/index.js'
import {MigrateError} from '../migrate/errors.js'
import type {MigrateEvent, MigrateEventHandler} from '../migrate/events.js'
import {MIGRATE_RECEIVER_BANNER, RECEIVER_STREAM, readFixedMessage} from '../migrate/handshake.js'
import {helperEnv} from '../migrate/host-env.js'
import {writeSavefileHeader} from '../migrate/savefile.js'
import {sendDomain, type CheckpointHooks} from '../migrate/sender.js'
import {Guardian} from '../migrate/guardian.js'
import {Transport} from '../migrate/transport.js'
import {LIBXL, encodeLibxcRecord, encodeLibxlRecord} from '../stream/index.js'
import {testHooks} from '../test-hooks.js'
import {SimNetBuffer} from './sim-netbuf.js'

const ERROR_FAIL = -3
/** How long the transport may take to go after the stream is closed. */
const CHILD_REPORT_MS = 2000

export interface RemusPrimaryOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  readonly name: string
  readonly configJson: string
  /** The command reaching the backup (`sh -c`); ignored with `blackhole`. */
  readonly rune: string
  /** -b: replicate to /dev/null (no receiver, no acknowledgements). */
  readonly blackhole: boolean
  /** -i: ms between checkpoints (suspend to suspend). */
  readonly intervalMs: number
  /** Network output buffering (off with -n). */
  readonly netbuf: boolean
  /** COLO instead of Remus. */
  readonly colo?: ColoOptions
  /** Stop replication cleanly (the operator's interrupt). */
  readonly signal?: AbortSignal
  /** The transport's and the helper's environment (default process.env). */
  readonly env?: NodeJS.ProcessEnv
  /** Where the fd pair's private directory is made (default os.tmpdir()). */
  readonly tmpDir?: string
  readonly onEvent: (e: RemusEvent) => void
  /** The time events count from (performance.now(); default: when the run starts). */
  readonly startedAt?: number
  /** The libxl layer's events (for -v lines). */
  readonly onStreamEvent?: MigrateEventHandler
}

export interface ColoOptions {
  /** The longest time between two checkpoints (libxl: 5 s). */
  readonly maxIntervalMs: number
  /**
   * The secondary's heartbeat timeout (given to it with --heartbeat-timeout): it fails over when no
   * checkpoint request came for that long. If we were silent that long ourselves, the secondary may
   * run the guest now: then a broken channel pauses the guest here instead of resuming it.
   */
  readonly heartbeatTimeoutMs?: number
  /** Asks for a checkpoint (the proxy saw the outputs diverge); resolves with why. */
  readonly trigger?: CheckpointTrigger
  /** The checkpoint devices (COLO disks) of the primary, driven at libxl's points of each cycle. */
  readonly devices?: CheckpointDevices
}

/**
 * libxl's checkpoint device ops for the primary's COLO devices (XEN-FACTS §7.2, §8): their errors
 * stop COLO (the guest then runs on here alone).
 */
export interface CheckpointDevices {
  /** After the guest suspended for checkpoint n: are the devices still replicating (not for n = 1)? */
  postsuspend(n: number): Promise<void>
  /** Before the guest resumes after checkpoint n (the secondary holds it): n = 1 starts replication, later ones checkpoint. */
  preresume(n: number): Promise<void>
  /** Replication is over (the secondary failed, or stopped): the devices go on alone. */
  teardown(): Promise<void>
}

/** The proxy side of COLO: when a checkpoint is wanted. */
export interface CheckpointTrigger {
  /** Resolves when the outputs diverged since the last reset, or never. */
  next(since: number): Promise<'divergence'>
  /** When the last request came (performance.now()). */
  readonly lastRequest?: {readonly atMs: number}
  /**
   * Both guests start again from the checkpoint the PVM was suspended for (at `step`, having sent
   * `framesAtSuspend` frames, when known): the proxy's preresume.
   */
  reset?(step: number | undefined, framesAtSuspend?: number): Promise<void> | void
  close(): Promise<void>
}

export type RemusEvent =
  | {readonly kind: 'line'; readonly text: string}
  | {readonly kind: 'log'; readonly level: 'error' | 'warning' | 'info' | 'detail' | 'debug'; readonly text: string}
  /**
   * Checkpoint n is on the stream. pausedMs: suspend to resume; step: the guest's step at the suspend
   * (sim). COLO: why it was taken, and the primary's (A) and secondary's (B) dirty pages (pages = A ∪ B).
   */
  | {
      readonly kind: 'checkpoint'
      readonly number: number
      readonly atMs: number
      readonly pausedMs: number
      readonly pages: number
      readonly step?: number
      readonly reason?: 'first' | 'timer' | 'divergence'
      /** COLO, a divergence: when the proxy asked for it (same clock as atMs). */
      readonly requestedAtMs?: number
      readonly primaryDirty?: number
      readonly secondaryDirty?: number
      /**
       * Bytes the save helper wrote from the suspend request to the resume (the checkpoint's libxc
       * records, and its few messages to us): /proc/<helper>/io wchar.
       */
      readonly helperBytes?: number
    }
  /** The backup has checkpoint n whole. */
  | {readonly kind: 'ack'; readonly number: number; readonly atMs: number}
  /** Frames let out: the epoch they were held in (null: unbuffered), and the newest guest step among them. */
  | {readonly kind: 'netbuf-release'; readonly epoch: number | null; readonly frames: number; readonly maxStep: number; readonly atMs: number}
  | {readonly kind: 'result'; readonly ok: boolean; readonly domain: string; readonly domid: number; readonly outcome: RemusOutcome; readonly exitCode: number; readonly checkpoints: number; readonly acked: number; readonly reason?: string; readonly totalMs: number}

export type RemusOutcome =
  /** The domain was destroyed here (xl destroy forces a failover). */
  | 'primary-destroyed'
  /** The guest never suspended; left as it is. */
  | 'suspend-failed'
  /** The backup went away (or setup failed): the domain runs on here, unprotected. */
  | 'backup-failed'
  /** Replication stopped on request: the guest runs here, the backup discards its copy. */
  | 'stopped'

export interface RemusResult {
  readonly outcome: RemusOutcome
  readonly exitCode: number
  readonly checkpoints: number
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

export async function runRemusPrimary(opts: RemusPrimaryOptions): Promise<RemusResult> {
  return new RemusPrimary(opts).run()
}

class RemusPrimary {
  readonly #o: RemusPrimaryOptions
  readonly #hv: Hypervisor
  readonly #started: number
  #pair: FdPair | undefined
  #sendFd = -1
  #transport: Transport | undefined
  #netbuf: SimNetBuffer | undefined
  #checkpoints = 0
  #acked = 0
  #stop = false
  #suspendAt = new Map<number, number>()
  #pages = 0
  #ackLoop: Promise<void> | undefined
  #ackEnded: string | undefined
  #guardian: Guardian | undefined
  /** COLO: the secondary has run from a checkpoint (a failover would start it). */
  #secondaryHolds = false
  #resumedAt = 0
  /** COLO: when the last checkpoint request (NEW) went out. */
  #requestAt = 0
  /** COLO: why the next checkpoint is taken, and this checkpoint's dirty sets (from the helper's log). */
  #reason: 'timer' | 'divergence' = 'timer'
  /** COLO: when the proxy asked for the checkpoint being taken (performance.now()), if it did. */
  #requestedAt: number | undefined
  #dirty: {primaryDirty?: number; secondaryDirty?: number} = {}
  /** The save helper, and its write count at the last suspend request. */
  #helperPid: number | undefined
  #wcharAtSuspend: number | undefined
  #checkpointBytes: number | undefined
  /** COLO: the PVM's step at the last suspend (the comparator drops frames from before it). */
  #stepAtSuspend: number | undefined
  /** COLO: the frames the PVM had sent by the last suspend (all of them go to the proxy before its checkpoint). */
  #framesAtSuspend: number | undefined

  constructor(opts: RemusPrimaryOptions) {
    this.#o = opts
    this.#started = opts.startedAt ?? performance.now()
    this.#hv = opts.hypervisor
  }

  #now(): number {
    return performance.now() - this.#started
  }

  /** How xl names the mode in its lines. */
  get #ha(): 'COLO' | 'Remus' {
    return this.#o.colo ? 'COLO' : 'Remus'
  }

  #line(text: string): void {
    this.#o.onEvent({kind: 'line', text})
  }

  #log(level: 'error' | 'warning' | 'info' | 'detail' | 'debug', text: string): void {
    this.#o.onEvent({kind: 'log', level, text})
  }

  async run(): Promise<RemusResult> {
    const o = this.#o
    const onSignal = (): void => {
      if (this.#stop) return
      this.#stop = true
      this.#log('info', `${this.#ha}: stopping replication after the next checkpoint`)
    }
    o.signal?.addEventListener('abort', onSignal, {once: true})
    if (o.signal?.aborted) onSignal()
    // If this process dies: before the backup holds a checkpoint the guest must run here; after,
    // the backup takes over and the guest must not run here too.
    this.#guardian = Guardian.start({role: 'remus-primary', domid: o.domid, name: o.name}, helperEnv(this.#hv, o.env ?? process.env), (why) =>
      this.#log('warning', `cannot start the guardian of domain ${o.domid}: ${why}`),
    )
    let failure: unknown
    let stoppedCleanly = false
    try {
      stoppedCleanly = await this.#replicate()
    } catch (err) {
      failure = err
    } finally {
      o.signal?.removeEventListener('abort', onSignal)
    }
    // Replication is over either way: whatever is held goes out, later output at once.
    await this.#netbuf?.close().catch(() => undefined)
    await o.colo?.trigger?.close().catch(() => undefined)
    await o.colo?.devices?.teardown().catch((err: unknown) => this.#log('error', `COLO: cannot tear down the disks' replication: ${(err as Error).message}`))
    const result = await this.#finish(failure, stoppedCleanly)
    await this.#cleanup()
    await this.#guardian?.done()
    o.onEvent({
      kind: 'result',
      ok: result.exitCode === 0,
      domain: o.name,
      domid: o.domid,
      outcome: result.outcome,
      exitCode: result.exitCode,
      checkpoints: this.#checkpoints,
      acked: this.#acked,
      ...(failure !== undefined ? {reason: failure instanceof Error ? failure.message : String(failure)} : {}),
      totalMs: this.#now(),
    })
    return result
  }

  /** True when replication was stopped on request with the stream ended cleanly. */
  async #replicate(): Promise<boolean> {
    const o = this.#o
    let headerBytes = 0
    if (o.blackhole) {
      this.#sendFd = fs.openSync('/dev/null', 'r+')
    } else {
      this.#pair = await openFdPair(o.tmpDir ? {tmpDir: o.tmpDir} : {})
      this.#sendFd = this.#pair.sendFd
      // In its own session: a Ctrl-C meant to stop replication cleanly must not cut the connection
      // first (which the backup would take for our death). ssh then cannot ask for a password.
      this.#transport = Transport.start(o.rune, this.#pair, o.env, (why) => this.#log('error', why), {ownSession: true})
      this.#log('debug', `${this.#ha} transport process [${this.#transport.pid ?? '?'}]: sh -c ${o.rune}`)
      await readFixedMessage(this.#pair.recvFd, MIGRATE_RECEIVER_BANNER, 'banner', o.rune)
      const info = await writeSavefileHeader({fd: this.#sendFd, configJson: o.configJson, source: RECEIVER_STREAM, onEvent: (e) => this.#streamEvent(e)})
      headerBytes = 48 + info.optionalDataLength
      // Remus: the way back carries our acknowledgements; COLO: it is the back channel of the helper and sendDomain.
      if (!o.colo) this.#ackLoop = this.#readAcks(this.#pair.recvFd)
    }
    if (o.netbuf && !o.colo) this.#netbuf = await SimNetBuffer.start(this.#hv, o.domid, (frames, epoch) => this.#released(frames, epoch))

    let cleanEnd = false
    // COLO starts with the primary paused (libxl assumes it: with COLO disks nothing it writes before
    // the first checkpoint would be replicated); it runs from the first resume on.
    const unpauseAfterFirst = o.colo !== undefined && (await this.#hv.info(o.domid)).state.paused
    const probe = testHooks().checkpointProbe(this.#hv, o.domid, 'primary')
    /** When the next checkpoint is due: every interval from the first, or at once when behind. */
    let due = 0
    const hooks: CheckpointHooks = {
      suspending: (n) => {
        this.#suspendAt.set(n, performance.now())
        this.#wcharAtSuspend = helperWchar(this.#helperPid)
      },
      suspended: async (n) => {
        this.#netbuf?.boundary(n)
        if (o.colo?.trigger?.reset) {
          const at = await this.#guestCounters()
          this.#stepAtSuspend = at?.step
          this.#framesAtSuspend = at?.frames
        }
        await probe?.record(n, {context: o.colo !== undefined})
        await o.colo?.devices?.postsuspend(n)
      },
      secondaryReady: async (n) => {
        // libxl's preresume: the proxy first (COLO_CHECKPOINT), then the disks.
        await o.colo?.trigger?.reset?.(this.#stepAtSuspend, this.#framesAtSuspend)
        await o.colo?.devices?.preresume(n)
      },
      resumed: async (n) => {
        const at = this.#suspendAt.get(n) ?? performance.now()
        const pausedMs = performance.now() - at
        // By the resume the helper has written the checkpoint's records (CHECKPOINT included).
        const wchar = helperWchar(this.#helperPid)
        this.#checkpointBytes = wchar !== undefined && this.#wcharAtSuspend !== undefined ? wchar - this.#wcharAtSuspend : undefined
        const step = await this.#guestStep()
        o.onEvent({
          kind: 'checkpoint',
          number: n,
          atMs: at - this.#started,
          pausedMs,
          pages: this.#pages,
          ...(step !== undefined ? {step} : {}),
          ...(o.colo ? {reason: n === 1 ? 'first' : this.#reason, ...this.#dirty} : {}),
          ...(o.colo && n > 1 && this.#reason === 'divergence' && this.#requestedAt !== undefined ? {requestedAtMs: this.#requestedAt - this.#started} : {}),
          ...(this.#checkpointBytes !== undefined ? {helperBytes: this.#checkpointBytes} : {}),
        })
        this.#checkpointBytes = undefined
        this.#pages = 0
        this.#dirty = {}
      },
      secondaryResumed: async (n) => {
        if (n === 1 && unpauseAfterFirst) {
          await this.#hv.unpause(o.domid)
          this.#log('detail', `COLO: domain ${o.domid} unpaused after the first checkpoint`)
        }
        // COLO: the secondary holds a checkpoint and runs: if we die now, it takes over.
        if (!this.#secondaryHolds) await this.#guardian?.acknowledged()
        this.#secondaryHolds = true
        this.#resumedAt = performance.now()
      },
      committed: async (n) => {
        this.#checkpoints = n
        if (o.colo) {
          if (await this.#waitForCheckpointRequest(o.colo)) {
            this.#requestAt = performance.now()
            return true
          }
          cleanEnd = await this.#endStream()
          return false
        }
        // xl's commit: with no acknowledgement to wait for (blackhole), the epoch goes out now.
        if (o.blackhole) this.#netbuf?.release(n)
        if (this.#stop) {
          cleanEnd = await this.#endStream()
          return false
        }
        const suspendedAt = this.#suspendAt.get(n) ?? performance.now()
        due = n === 1 ? suspendedAt + o.intervalMs : Math.max(due + o.intervalMs, performance.now())
        await this.#waitUntil(due)
        if (this.#stop) {
          cleanEnd = await this.#endStream()
          return false
        }
        return this.#ackEnded === undefined
      },
    }
    const env: NodeJS.ProcessEnv = helperEnv(this.#hv, o.env ?? process.env)
    const sent = await sendDomain({
      hypervisor: this.#hv,
      domid: o.domid,
      fd: this.#sendFd,
      live: true,
      debug: false,
      streamType: o.colo ? 'colo' : 'remus',
      checkpoints: hooks,
      ...(o.colo && this.#pair ? {backChannel: this.#pair.recvFd} : {}),
      env,
      offset: headerBytes,
      onEvent: (e) => this.#streamEvent(e),
    })
    if (sent.stopped?.requested && cleanEnd) return true
    throw new MigrateError('io', 'libxc stream', sent.stopped?.reason ?? this.#ackEnded ?? 'replication stopped', {suspended: sent.stopped?.suspended ?? false})
  }

  /**
   * COLO's wait_checkpoint: until the trigger asks (the outputs diverged) or the longest interval
   * has passed since both guests resumed; false on a stop request.
   */
  async #waitForCheckpointRequest(colo: ColoOptions): Promise<boolean> {
    const since = this.#resumedAt || performance.now()
    const due = since + colo.maxIntervalMs
    let diverged = false
    let wake: () => void = () => undefined
    const request = colo.trigger?.next(since).then(() => {
      diverged = true
      wake()
    })
    request?.catch(() => undefined)
    // Woken at once by the request; otherwise every 20 ms to see a stop request or the timer.
    while (!this.#stop && !diverged && performance.now() < due) {
      const left = due - performance.now()
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, Math.min(left, 20)))
        wake = () => {
          clearTimeout(t)
          r()
        }
      })
    }
    if (this.#stop) return false
    this.#reason = diverged ? 'divergence' : 'timer'
    this.#requestedAt = diverged ? colo.trigger?.lastRequest?.atMs : undefined
    return true
  }

  /** Sleeps until `due` (performance.now() time), waking early for a stop request or a dead backup. */
  async #waitUntil(due: number): Promise<void> {
    while (!this.#stop && this.#ackEnded === undefined) {
      const left = due - performance.now()
      if (left <= 0) return
      // Timers fire a little late: sleep short of the mark, then in 1 ms steps.
      await new Promise((r) => setTimeout(r, left > 3 ? Math.min(left - 2, 50) : 1))
    }
  }

  /**
   * A clean stop: libxc END and libxl END after the last whole checkpoint. The helper is waiting
   * for our answer to its checkpoint callback, so the stream is ours to write.
   */
  async #endStream(): Promise<boolean> {
    try {
      // Remus: the backup's helper reads libxc END, then its toolstack libxl END. COLO: the
      // secondary's toolstack waits for CHECKPOINT_STATE NEW and finds libxl END instead.
      const end = this.#o.colo ? encodeLibxlRecord({kind: 'END'}) : [...encodeLibxcRecord({kind: 'END'}), ...encodeLibxlRecord({kind: 'END'})]
      await writeAll(this.#sendFd, end, {what: `the end of the ${this.#ha} stream`})
      return true
    } catch (err) {
      this.#log('warning', `cannot end the ${this.#ha} stream cleanly: ${(err as Error).message}`)
      return false
    }
  }

  /** The way back: one CHECKPOINT_END record per checkpoint the backup has whole. */
  async #readAcks(fd: number): Promise<void> {
    try {
      for (;;) {
        const header = await readExact(fd, 8, {what: 'the Remus acknowledgement'})
        if (header.length < 8) {
          this.#ackEnded = 'the backup closed the way back'
          break
        }
        const type = header.readUInt32LE(0)
        const length = header.readUInt32LE(4)
        if (type !== LIBXL.CHECKPOINT_END || length !== 0) {
          this.#ackEnded = `the way back carried a record of type ${type} (length ${length}) instead of an acknowledgement`
          break
        }
        this.#acked++
        if (this.#acked === 1) await this.#guardian?.acknowledged()
        this.#o.onEvent({kind: 'ack', number: this.#acked, atMs: this.#now()})
        this.#netbuf?.release(this.#acked)
      }
    } catch (err) {
      this.#ackEnded = `cannot read the way back: ${err instanceof FdError ? err.detail : (err as Error).message}`
    }
    this.#log('detail', `${this.#ha}: ${this.#ackEnded}`)
  }

  #released(frames: readonly Buffer[], epoch: number | null): void {
    let maxStep = 0
    // (A frame that is not a sim guest's carries no step: it is released all the same.)
    for (const f of frames) maxStep = Math.max(maxStep, frameGuestStep(f) ?? 0)
    this.#o.onEvent({kind: 'netbuf-release', epoch, frames: frames.length, maxStep, atMs: this.#now()})
  }

  async #guestStep(): Promise<number | undefined> {
    return (await this.#guestCounters())?.step
  }

  /** The sim guest's step and frames sent so far (undefined elsewhere). */
  async #guestCounters(): Promise<{step: number; frames: number} | undefined> {
    const sim = asSim(this.#hv)
    if (!sim) return undefined
    try {
      const r = await sim.runtime(this.#o.domid)
      return {step: r.step, frames: r.frames}
    } catch {
      return undefined
    }
  }

  #streamEvent(e: MigrateEvent): void {
    // Our helper's words for a COLO checkpoint's sets: "checkpoint N: A pages dirty here, B on the secondary, S sent".
    if (e.kind === 'helper-log') {
      const m = /^checkpoint \d+: (\d+) pages dirty here, (\d+) on the secondary/.exec(e.log.message)
      if (m) this.#dirty = {primaryDirty: Number(m[1]), secondaryDirty: Number(m[2])}
    }
    if (e.kind === 'helper-started' && e.pid !== undefined) {
      this.#helperPid = e.pid
      void this.#guardian?.helper(e.pid)
    }
    // A checkpoint's pages: the first one's go out as the live round's last pass ("Frames final").
    if (e.kind === 'helper-progress' && /^(Checkpointed save|Frames final)/.test(e.progress.doingWhat)) this.#pages = Number(e.progress.total)
    this.#o.onStreamEvent?.(e)
  }

  /** xl's ending (main_remus after libxl_domain_remus_start returns). */
  async #finish(failure: unknown, stoppedCleanly: boolean): Promise<RemusResult> {
    const o = this.#o
    const done = (outcome: RemusOutcome, exitCode: number): RemusResult => ({outcome, exitCode, checkpoints: this.#checkpoints})
    if (!(await this.#exists())) {
      this.#line(`${this.#ha}: Primary domain has been destroyed.`)
      return done('primary-destroyed', 0)
    }
    if (stoppedCleanly) {
      this.#line(`${this.#ha}: replication stopped after ${this.#checkpoints} checkpoints; domain ${o.name} runs on at primary, unprotected.`)
      return done('stopped', 0)
    }
    const why = failure instanceof Error ? failure.message : String(failure)
    if (failure instanceof MigrateError && failure.code === 'suspend') {
      this.#log('error', why)
      this.#line('Failed to suspend domain at primary.')
      return done('suspend-failed', 1)
    }
    this.#log(this.#checkpoints > 0 ? 'detail' : 'error', `${this.#ha}: Domain suspend terminated with rc ${ERROR_FAIL}: ${why}`)
    if (this.#secondaryMayRun()) {
      // Beyond xl, whose split-brain check is a TODO: we were silent longer than the secondary
      // waits, so it may have failed over and run the guest. Never a second running copy.
      this.#line(`${this.#ha}: the secondary may have taken over (no checkpoint request for longer than its heartbeat timeout); domain paused at primary so that two copies never run.`)
      await this.#pauseHere()
      return done('backup-failed', 1)
    }
    this.#line(`${this.#ha}: Backup failed? resuming domain at primary.`)
    await this.#resumeHere()
    return done('backup-failed', 1)
  }

  /** COLO with a heartbeat: did the secondary wait longer than its timeout for our request? */
  #secondaryMayRun(): boolean {
    const h = this.#o.colo?.heartbeatTimeoutMs
    if (h === undefined || !this.#secondaryHolds) return false
    const answered = this.#requestAt >= this.#resumedAt ? this.#requestAt : performance.now()
    return answered - this.#resumedAt > h
  }

  async #pauseHere(): Promise<void> {
    const id = this.#o.domid
    try {
      const info = await this.#hv.info(id)
      if (!info.state.paused) await this.#hv.pause(id)
      await this.#hv.logDirty(id).disable().catch(() => undefined)
    } catch (err) {
      this.#log('error', `cannot pause domain ${id}: ${(err as Error).message}`)
    }
  }

  async #exists(): Promise<boolean> {
    try {
      await this.#hv.info(this.#o.domid)
      return true
    } catch (err) {
      if (err instanceof HypervisorError && err.code === 'no-such-domain') return false
      return true
    }
  }

  /** libxl_domain_resume(ctx, domid, 1, 0): only a suspended guest needs it. */
  async #resumeHere(): Promise<void> {
    const id = this.#o.domid
    try {
      const info = await this.#hv.info(id)
      if (info.state.shutdown) await this.#hv.resume(id, {cancel: true})
      await this.#hv.logDirty(id).disable().catch(() => undefined)
    } catch (err) {
      this.#log('error', `cannot resume domain ${id}: ${(err as Error).message}`)
    }
  }

  async #cleanup(): Promise<void> {
    if (this.#o.blackhole && this.#sendFd >= 0) fs.closeSync(this.#sendFd)
    this.#pair?.closeSend()
    if (this.#transport) {
      const exit = await this.#transport.wait(CHILD_REPORT_MS)
      if (exit === 'timeout') await this.#transport.killAll()
      else if (exit.code !== 0 && exit.code !== null) this.#log('detail', `${this.#ha} transport process exited with error status ${exit.code}`)
    }
    this.#pair?.close()
    await this.#ackLoop
  }
}
