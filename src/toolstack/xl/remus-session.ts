/**
 * The Remus and COLO primary's session: what xl's main_remus and libxl's checkpoint setup do around
 * the checkpoint cycles (XEN-FACTS §1.8, §7.1, §10), the same for both modes:
 *
 *   1. the transport (`sh -c RUNE`, rune `exec ssh HOST xl-ts migrate-receive -r|--colo ...`), the
 *      banner, the xl header and config; with -b (blackhole) the stream goes to /dev/null;
 *   2. the libxl stream with the save helper (stream type REMUS or COLO, the first round live);
 *   3. checkpoint after checkpoint, each one function of the mode (remus-primary.ts,
 *      colo-primary.ts), until one stops cleanly or fails;
 *   4. the end, as xl: the domain gone -> "<mode>: Primary domain has been destroyed." (exit 0); the
 *      guest never suspended -> "Failed to suspend domain at primary." (exit 1); anything else (the
 *      backup went away) -> "<mode>: Backup failed? resuming domain at primary.", resume, exit 1.
 *      Beyond xl: an operator's interrupt ends the stream after a whole checkpoint and the guest
 *      runs on here (exit 0); a COLO secondary that may have failed over keeps the guest paused here.
 */
import * as fs from 'node:fs'

import {openFdPair, type FdPair} from '../fd/index.js'
import {HypervisorError, type Hypervisor} from '../hypervisor/index.js'
import {MigrateError} from '../libxl/index.js'
import {MIGRATE_RECEIVER_BANNER, RECEIVER_STREAM, readFixedMessage} from './handshake.js'
import {helperEnv} from '../libxl/index.js'
import {writeSavefileHeader} from './savefile-header.js'
import {Guardian} from './guardian.js'
import {claimLive, hasTieBreaker, pauseAsStale, staleName, type TieBreakerSpec} from './tie-breaker.js'
import {Transport} from './transport.js'
import {Checkpointing, primaryMode, type LogLevel, type PrimaryMode, type RemusOutcome, type RemusPrimaryOptions, type RemusResult} from '../replication/index.js'

const ERROR_FAIL = -3
/** How long the transport may take to go after the stream is closed. */
const CHILD_REPORT_MS = 2000

export interface RemusSessionOptions extends RemusPrimaryOptions {
  /** Who decides, when the backup is lost, whether the guest may run here (--witness, --fence). */
  readonly tieBreaker?: TieBreakerSpec
}

export async function runRemusPrimary(opts: RemusSessionOptions): Promise<RemusResult> {
  const startedAt = opts.startedAt ?? performance.now()
  return new PrimarySession(opts, primaryMode(opts, startedAt), startedAt).run()
}

class PrimarySession {
  readonly #o: RemusSessionOptions
  readonly #mode: PrimaryMode
  readonly #started: number
  readonly #hv: Hypervisor
  readonly #domid: number
  #guardian: Guardian | undefined
  #checkpointing: Checkpointing | undefined
  #pair: FdPair | undefined
  #sendFd = -1
  #transport: Transport | undefined

  constructor(opts: RemusSessionOptions, mode: PrimaryMode, startedAt: number) {
    this.#o = opts
    this.#mode = mode
    this.#started = startedAt
    this.#hv = opts.hypervisor
    this.#domid = opts.domid
  }

  get #checkpoints(): number {
    return this.#checkpointing?.checkpoints ?? 0
  }

  #log(level: LogLevel, text: string): void {
    this.#o.onEvent({kind: 'log', level, text})
  }

  #line(text: string): void {
    this.#o.onEvent({kind: 'line', text})
  }

  #now(): number {
    return performance.now() - this.#started
  }

  async run(): Promise<RemusResult> {
    const o = this.#o
    const ha = this.#mode.name
    const onSignal = (): void => this.#log('info', `${ha}: stopping replication after the next checkpoint`)
    o.signal?.addEventListener('abort', onSignal, {once: true})
    if (o.signal?.aborted) onSignal()
    // If this process dies: before the backup holds a checkpoint the guest must run here; after,
    // the backup takes over and the guest must not run here too.
    this.#guardian = Guardian.start({role: 'remus-primary', domid: o.domid, name: o.name, ...(o.tieBreaker ? {tieBreaker: o.tieBreaker} : {})}, helperEnv(this.#hv, o.env ?? process.env), (why) =>
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
    // Replication is over either way.
    await this.#mode.close()
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
      acked: this.#mode.acked,
      ...(failure !== undefined ? {reason: failure instanceof Error ? failure.message : String(failure)} : {}),
      totalMs: this.#now(),
    })
    return result
  }

  /** True when replication was stopped on request with the stream ended cleanly. */
  async #replicate(): Promise<boolean> {
    const o = this.#o
    let headerBytes = 0
    let wayBack: number | undefined
    const checkpointing = (fd: number): Checkpointing =>
      new Checkpointing({
        hypervisor: this.#hv,
        domid: o.domid,
        mode: this.#mode,
        fd,
        ...(wayBack !== undefined ? {wayBack} : {}),
        offset: headerBytes,
        ...(this.#guardian ? {guardian: this.#guardian} : {}),
        ...(o.env ? {env: o.env} : {}),
        ...(o.signal ? {signal: o.signal} : {}),
        onEvent: o.onEvent,
        ...(o.onStreamEvent ? {onStreamEvent: o.onStreamEvent} : {}),
        startedAt: this.#started,
      })
    if (o.blackhole) {
      this.#sendFd = fs.openSync('/dev/null', 'r+')
      this.#checkpointing = checkpointing(this.#sendFd)
    } else {
      this.#pair = await openFdPair(o.tmpDir ? {tmpDir: o.tmpDir} : {})
      this.#sendFd = this.#pair.sendFd
      wayBack = this.#pair.recvFd
      // In its own session: a Ctrl-C meant to stop replication cleanly must not cut the connection
      // first (which the backup would take for our death). ssh then cannot ask for a password.
      this.#transport = await Transport.start(o.rune, this.#pair, o.env, (why) => this.#log('error', why), {ownSession: true})
      this.#log('debug', `${this.#mode.name} transport process [${this.#transport.pid ?? '?'}]: sh -c ${o.rune}`)
      await readFixedMessage(this.#pair.recvFd, MIGRATE_RECEIVER_BANNER, 'banner', o.rune)
      const info = await writeSavefileHeader({fd: this.#sendFd, configJson: o.configJson, source: RECEIVER_STREAM, onEvent: (e) => o.onStreamEvent?.(e)})
      headerBytes = 48 + info.optionalDataLength
      this.#checkpointing = checkpointing(this.#sendFd)
    }
    return this.#checkpointing.run()
  }

  // ---- the end ----------------------------------------------------------------------------------

  /** xl's ending (main_remus after libxl_domain_remus_start returns). */
  async #finish(failure: unknown, stoppedCleanly: boolean): Promise<RemusResult> {
    const o = this.#o
    const ha = this.#mode.name
    const done = (outcome: RemusOutcome, exitCode: number): RemusResult => ({outcome, exitCode, checkpoints: this.#checkpoints})
    if (!(await this.#exists())) {
      this.#line(`${ha}: Primary domain has been destroyed.`)
      return done('primary-destroyed', 0)
    }
    if (stoppedCleanly) {
      this.#line(`${ha}: replication stopped after ${this.#checkpoints} checkpoints; domain ${o.name} runs on at primary, unprotected.`)
      return done('stopped', 0)
    }
    const why = failure instanceof Error ? failure.message : String(failure)
    if (failure instanceof MigrateError && failure.code === 'suspend') {
      this.#log('error', why)
      this.#line('Failed to suspend domain at primary.')
      return done('suspend-failed', 1)
    }
    this.#log(this.#checkpoints > 0 ? 'detail' : 'error', `${ha}: Domain suspend terminated with rc ${ERROR_FAIL}: ${why}`)
    if (this.#mode.secondaryMayRun()) {
      // We were silent longer than the secondary waits, so it may have failed over and run the
      // guest. Never a second running copy.
      this.#line(`${ha}: the secondary may have taken over (no checkpoint request for longer than its heartbeat timeout); domain paused at primary as ${staleName(o.name)} so that two copies never run.`)
      await this.#pauseHere()
      await this.#markStale()
      return done('backup-failed', 1)
    }
    // Before the guest runs here alone: the backup may have gone live after losing us too.
    const verdict = await claimLive(o.tieBreaker, {side: 'primary', domain: o.name, checkpoint: this.#checkpoints})
    if (!verdict.live) {
      this.#line(`${ha}: the backup went live first (${verdict.why}); domain paused at primary as ${staleName(o.name)} so that two copies never run.`)
      await this.#pauseHere()
      await this.#markStale()
      return done('lost-tie', 1)
    }
    if (hasTieBreaker(o.tieBreaker)) this.#log('info', `${ha}: ${verdict.how}: the guest runs here`)
    this.#line(`${ha}: Backup failed? resuming domain at primary.`)
    await this.#resumeHere()
    return done('backup-failed', 1)
  }

  async #pauseHere(): Promise<void> {
    const id = this.#domid
    try {
      const info = await this.#hv.info(id)
      if (!info.state.paused) await this.#hv.pause(id)
      await this.#hv.logDirty(id).disable().catch(() => undefined)
    } catch (err) {
      this.#log('error', `cannot pause domain ${id}: ${(err as Error).message}`)
    }
  }

  /** The copy that must not run is paused and named so that `list` shows which copy is the live one. */
  async #markStale(): Promise<void> {
    for (const problem of await pauseAsStale(this.#hv, this.#domid, this.#o.name)) this.#log('error', problem)
  }

  async #exists(): Promise<boolean> {
    try {
      await this.#hv.info(this.#domid)
      return true
    } catch (err) {
      if (err instanceof HypervisorError && err.code === 'no-such-domain') return false
      return true
    }
  }

  /** libxl_domain_resume(ctx, domid, 1, 0): only a suspended guest needs it. */
  async #resumeHere(): Promise<void> {
    const id = this.#domid
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
      else if (exit.code !== 0 && exit.code !== null) this.#log('detail', `${this.#mode.name} transport process exited with error status ${exit.code}`)
    }
    this.#pair?.close()
    await this.#mode.settled()
  }
}
