/**
 * The xl-level sender of a live migration: what xl's migrate_domain does (XEN-FACTS §1.4-§1.6),
 * on top of the libxl layer (libxl/save-stream.ts: sendDomain) and the xl header (savefile-header.ts).
 *
 *   1. the fd pair and the transport child `sh -c RUNE` (its stdin FIFO A, its stdout FIFO B);
 *   2. the banner (54 bytes) on recvFd, then the xl header and config JSON on sendFd;
 *   3. sendDomain: libxl records and the save helper on sendFd (precopy, suspend, last pages);
 *   4. ready (34) on recvFd; rename to `<name>--migratedaway`; GO (44) on sendFd: no return;
 *   5. report (39) + status byte; success: destroy here; failure at the target: wait for its GO
 *      (44: it has destroyed its copy), rename back, resume here.
 *
 * Every failure goes through one function, `fail`, with xl's label for it:
 *
 *   preamble        banner not read: nothing was touched                        exit 1
 *   failed_suspend  the guest never suspended (ERROR_GUEST_TIMEDOUT): no resume  exit 1
 *   failed_resume   anything else before GO: resume at the sender               exit 1
 *   go_undelivered  (ours) GO could not enter the pipe at all (EPIPE, 0 bytes):
 *                   the target can never start the domain, so resume here       exit 1
 *   failed_badly    GO written, no (complete) report: state undefined; the copy
 *                   here stays suspended as `<name>--migratedaway`              exit 1
 *   target failure  status != 0 then the target's GO: resume here                exit 1
 *
 * Beyond xl: `timeoutMs` and `signal` (an operator's interrupt) abort a migration that has not
 * reached GO: the helper is aborted (SIGTERM), the transport killed, and failed_resume runs.
 * After GO neither does anything: the handshake is finished whatever it takes.
 *
 * If this process itself dies (SIGKILL) before GO, its guardian (guardian-main.ts, in its own
 * session) kills the helper and resumes the domain here; after GO it leaves the suspended
 * `--migratedaway` copy alone, as failed_badly does.
 *
 * Nothing is left behind: the FIFOs are gone once open (fd-pair.ts), every fd is closed, and the
 * transport child is waited for (xl waits 2 s on failure; we then kill it) on every path.
 */
import {openFdPair, type FdPair} from '../fd/index.js'
import {prestartHelper, type PrestartedHelper} from '../helper/index.js'
import {HypervisorError, type Hypervisor} from '../hypervisor/index.js'
import {PRECOPY_ENV, type PrecopyTuning} from '../save/index.js'
import {testHooks} from '../test-hooks.js'
import {MigrateError, } from '../libxl/index.js'
import type {MigrateEvent, MigrateEventHandler} from '../libxl/index.js'
import {Guardian} from './guardian.js'
import {
  ACK_STREAM,
  HandshakeError,
  MIGRATE_PERMISSION_TO_GO,
  MIGRATE_RECEIVER_BANNER,
  MIGRATE_RECEIVER_READY,
  MIGRATE_REPORT,
  RECEIVER_STREAM,
  decodeStatus,
  readBytes,
  readFixedMessage,
  writeMessage,
} from './handshake.js'
import {helperEnv} from '../libxl/index.js'
import {PrecopyTracker, type MigrationEventHandler, type MigrationOutcome, type MigrationPhase, type MigrationResult} from './migration-events.js'
import {writeSavefileHeader} from './savefile-header.js'
import {sendDomain} from '../libxl/index.js'
import {destroyDomain, renameDomain} from '../libxl/index.js'
import {Transport} from './transport.js'

/** libxl error codes the sender prints. */
const ERROR_FAIL = -3
const ERROR_GUEST_TIMEDOUT = -8
const SHUTDOWN_SUSPEND = 2
/** migration_child_report: how long xl waits for the transport after a failure. */
const CHILD_REPORT_MS = 2000
/** How long the transport may take to finish after a successful migration (the receiver exits). */
const CHILD_AFTER_SUCCESS_MS = 10_000

export const FAILED_BADLY_BANNER = [
  '** Migration failed during final handshake **',
  'Domain state is now undefined !',
  'Please CHECK AT BOTH ENDS for running instances, before renaming and',
  ' resuming at most one instance.  Two simultaneous instances of the domain',
  ' would probably result in SEVERE DATA LOSS and it is now your',
  ' responsibility to avoid that.  Sorry.',
] as const

export interface MigrationSenderOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  /** The domain's name (xl's common_domname): renamed `<name>--migratedaway` before GO. */
  readonly name: string
  /** The domain config as libxl JSON (stored at creation, or from -C). */
  readonly configJson: string
  /** The command to reach the receiver (rune.ts). */
  readonly rune: string
  /** migrate --debug: the libxc stream re-sends memory for verification. */
  readonly debug?: boolean
  /** Precopy tuning for our helper (XL_TS_PRECOPY); empty = xl's policy. */
  readonly tuning?: PrecopyTuning
  /** Abort (and resume here) when GO has not been sent after this many ms. */
  readonly timeoutMs?: number
  /** An operator's interrupt: handled as the timeout is. */
  readonly signal?: AbortSignal
  /** Where the fd pair's private directory is made (default os.tmpdir()). */
  readonly tmpDir?: string
  /** The transport's and the helper's environment (default process.env). */
  readonly env?: NodeJS.ProcessEnv
  /** Migration events: xl's lines, phases, rounds, the result. */
  readonly onEvent: MigrationEventHandler
  /** The libxl layer's events (for -v lines). */
  readonly onStreamEvent?: MigrateEventHandler
}

type FailureLabel = 'preamble' | 'failed_suspend' | 'failed_resume' | 'go_undelivered' | 'failed_badly'

class Failure extends Error {
  constructor(
    readonly label: FailureLabel,
    /** Lines printed before the failure is handled (the error's own words). */
    readonly lines: readonly string[],
    message: string,
  ) {
    super(message)
  }
}

/** Runs the migration; never throws for a failed migration: the result says how it ended. */
export async function migrateDomain(opts: MigrationSenderOptions): Promise<MigrationResult> {
  return new MigrationSender(opts).run()
}

class MigrationSender {
  readonly #o: MigrationSenderOptions
  readonly #hv: Hypervisor
  readonly #hooks = testHooks().faultPoints('sender')
  readonly #tracker: PrecopyTracker
  readonly #abort = new AbortController()
  readonly #started = performance.now()
  #pair: FdPair | undefined
  #transport: Transport | undefined
  #guardian: Guardian | undefined
  /** The transport has been waited for (or killed). */
  #reaped = false
  #timer: NodeJS.Timeout | undefined
  /** Set when the timeout or an interrupt aborted the migration. */
  #aborted: 'timeout' | 'interrupt' | undefined
  /** GO has been (or is being) written: nothing may abort any more. */
  #noReturn = false
  #renamed = false
  #suspendedAt: number | undefined
  #reportAt: number | undefined
  #headerBytes = 0
  #deviceStateBytes = 0
  #precopyStopped = false

  constructor(opts: MigrationSenderOptions) {
    this.#o = opts
    this.#hv = opts.hypervisor
    this.#tracker = new PrecopyTracker((e) => {
      this.#o.onEvent(e)
      if (e.kind === 'pages' && e.iteration !== null && e.iteration >= 2 && !this.#precopyStopped) {
        this.#precopyStopped = true
        this.#hooks.at('sender:precopy')
      }
    })
  }

  get #away(): string {
    return `${this.#o.name}--migratedaway`
  }

  #line(text: string): void {
    this.#o.onEvent({kind: 'line', text})
  }

  #log(level: 'error' | 'warning' | 'info' | 'detail' | 'verbose' | 'debug', text: string): void {
    this.#o.onEvent({kind: 'log', level, text})
  }

  #phase(phase: MigrationPhase): void {
    this.#o.onEvent({kind: 'phase', phase, atMs: performance.now() - this.#started})
  }

  async run(): Promise<MigrationResult> {
    const o = this.#o
    this.#phase('connect')
    try {
      this.#pair = await openFdPair(o.tmpDir ? {tmpDir: o.tmpDir} : {})
    } catch (err) {
      return this.#result('untouched', 1, `cannot make the fd pair for the transport: ${(err as Error).message}`, [
        `migration sender: cannot make the fd pair for the transport: ${(err as Error).message}`,
      ])
    }
    if (o.timeoutMs !== undefined) {
      this.#timer = setTimeout(() => this.#abortMigration('timeout'), o.timeoutMs)
    }
    const onSignal = (): void => this.#abortMigration('interrupt')
    o.signal?.addEventListener('abort', onSignal, {once: true})
    if (o.signal?.aborted) onSignal()
    // If this process dies before GO, the guardian resumes the domain here.
    this.#guardian = Guardian.start(
      {role: 'sender', domid: o.domid, name: o.name, awayName: this.#away},
      helperEnv(this.#hv, o.env ?? process.env),
      (why) => this.#log('warning', `cannot start the guardian of domain ${o.domid}: ${why}`),
    )
    this.#hooks.note('guardian', this.#guardian?.pid)
    try {
      await this.#startTransport()
      return await this.#migrate()
    } catch (err) {
      // Anything unforeseen is handled as xl's label for where it happened.
      const why = err instanceof Error ? err.message : String(err)
      const f = err instanceof Failure ? err : new Failure(this.#noReturn ? 'failed_badly' : 'failed_resume', [`xl-ts: error: ${why}`], why)
      return await this.#fail(f)
    } finally {
      if (this.#timer) clearTimeout(this.#timer)
      o.signal?.removeEventListener('abort', onSignal)
      await this.#reapTransport(CHILD_AFTER_SUCCESS_MS, false)
      this.#pair?.close()
      await this.#guardian?.done()
    }
  }

  async #startTransport(): Promise<void> {
    const t = await Transport.start(this.#o.rune, this.#pair!, this.#o.env, (why) => this.#log('error', why))
    this.#transport = t
    this.#hooks.note('transport', t.pid)
    this.#log('debug', `migration transport process [${t.pid ?? '?'}]: sh -c ${this.#o.rune}`)
  }

  /** The timeout or an interrupt: only before GO. */
  #abortMigration(why: 'timeout' | 'interrupt'): void {
    if (this.#noReturn || this.#aborted) return
    this.#aborted = why
    this.#log('detail', why === 'timeout' ? `timed out after ${this.#o.timeoutMs} ms: aborting` : 'interrupted: aborting')
    this.#abort.abort()
    void this.#transport?.killAll()
  }

  #abortedLine(): string | undefined {
    if (this.#aborted === 'timeout') return `migration sender: timed out after ${formatSeconds(this.#o.timeoutMs ?? 0)} (--timeout) before the target had the domain`
    if (this.#aborted === 'interrupt') return 'migration sender: interrupted before the target had the domain'
    return undefined
  }

  async #migrate(): Promise<MigrationResult> {
    const o = this.#o
    const pair = this.#pair!
    const tuning = o.tuning ?? {}
    const env: NodeJS.ProcessEnv = {...helperEnv(this.#hv, o.env ?? process.env)}
    if (Object.keys(tuning).length > 0) env[PRECOPY_ENV] = JSON.stringify(tuning)
    else delete env[PRECOPY_ENV]
    // Our save helper starts while we wait for the receiver (its CLI's start takes longer), not
    // after the header, where the receiver starts its domain and helper on the same cores.
    const prestarted = prestartHelper({mode: 'save', ioFd: pair.sendFd, env, stderr: 'pipe'})
    this.#hooks.note('prestarted-helper', prestarted?.pid)
    try {
      return await this.#stream(env, prestarted)
    } finally {
      prestarted?.dispose()
    }
  }

  async #stream(env: NodeJS.ProcessEnv, prestarted: PrestartedHelper | undefined): Promise<MigrationResult> {
    const o = this.#o
    const pair = this.#pair!
    const rune = o.rune

    // migrate_do_preamble: the banner, then the xl header and config.
    try {
      await readFixedMessage(pair.recvFd, MIGRATE_RECEIVER_BANNER, 'banner', rune)
    } catch (err) {
      throw this.#handshakeFailure('preamble', err)
    }
    this.#phase('banner')
    try {
      const info = await writeSavefileHeader({fd: pair.sendFd, configJson: o.configJson, source: RECEIVER_STREAM, onEvent: (e) => this.#streamEvent(e)})
      this.#headerBytes = 48 + info.optionalDataLength
    } catch (err) {
      // xl: CHK_ERRNOVAL exits here; the domain is untouched.
      throw new Failure('preamble', [], `cannot write the xl header: ${(err as Error).message}`)
    }
    this.#phase('header')

    // libxl_domain_suspend: the libxl stream, the helper's precopy and stop-and-copy.
    this.#phase('precopy')
    try {
      const sent = await sendDomain({
        hypervisor: this.#hv,
        domid: o.domid,
        fd: pair.sendFd,
        live: true,
        debug: o.debug ?? false,
        env,
        signal: this.#abort.signal,
        offset: this.#headerBytes,
        ...(prestarted ? {prestarted} : {}),
        onEvent: (e) => this.#streamEvent(e),
      })
      this.#deviceStateBytes = sent.deviceStateBytes
    } catch (err) {
      this.#tracker.finish()
      const rc = err instanceof MigrateError && err.code === 'suspend' ? ERROR_GUEST_TIMEDOUT : ERROR_FAIL
      const why = err instanceof Error ? err.message : String(err)
      const lines = [...(this.#aborted ? [] : [`xl-ts: error: ${why}`]), `migration sender: libxl_domain_suspend failed (rc=${rc})`]
      throw new Failure(rc === ERROR_GUEST_TIMEDOUT && !this.#aborted ? 'failed_suspend' : 'failed_resume', lines, why)
    }
    this.#tracker.finish()

    try {
      await readFixedMessage(pair.recvFd, MIGRATE_RECEIVER_READY, 'ready message', rune)
    } catch (err) {
      throw this.#handshakeFailure('failed_resume', err)
    }
    this.#phase('ready')
    this.#hooks.at('sender:after-ready')
    if (this.#aborted) throw new Failure('failed_resume', [], 'aborted')

    this.#line('migration sender: Target has acknowledged transfer.')
    try {
      await renameDomain(this.#hv, o.domid, this.#away)
      this.#renamed = true
    } catch (err) {
      throw new Failure('failed_resume', [`xl-ts: error: cannot rename domain ${o.domid} to ${this.#away}: ${(err as Error).message}`], (err as Error).message)
    }

    // Point of no return: from the first byte of GO on, the target may start the domain.
    if (this.#aborted) throw new Failure('failed_resume', [], 'aborted')
    this.#noReturn = true
    if (this.#timer) clearTimeout(this.#timer)
    await this.#guardian?.go()
    this.#line('migration sender: Giving target permission to start.')
    try {
      await writeMessage(pair.sendFd, MIGRATE_PERMISSION_TO_GO, 'GO message', RECEIVER_STREAM)
    } catch (err) {
      const h = err as HandshakeError
      // A pipe write of 44 bytes is all or nothing: EPIPE with nothing written means no one can
      // ever read GO, so the target will destroy its copy: this one may run again.
      const label: FailureLabel = h instanceof HandshakeError && (h.written ?? 0) === 0 ? 'go_undelivered' : 'failed_badly'
      throw this.#handshakeFailure(label, err)
    }
    this.#phase('go')
    this.#hooks.at('sender:after-go')

    let status: number
    try {
      await readFixedMessage(pair.recvFd, MIGRATE_REPORT, 'success/failure report message', rune)
      status = decodeStatus(await readBytes(pair.recvFd, 1, 'success/failure status', ACK_STREAM))
    } catch (err) {
      throw this.#handshakeFailure('failed_badly', err)
    }
    this.#reportAt = performance.now()
    this.#phase('report')

    if (status !== 0) {
      this.#line(`migration sender: Target reports startup failure (status code ${status}).`)
      try {
        await readFixedMessage(pair.recvFd, MIGRATE_PERMISSION_TO_GO, 'permission for sender to resume', rune)
      } catch (err) {
        throw this.#handshakeFailure('failed_badly', err)
      }
      this.#line('migration sender: Trying to resume at our end.')
      this.#phase('resume')
      const resumed = await this.#resumeHere()
      if (resumed !== 'failed') this.#line('migration sender: Resumed OK.')
      await this.#reapTransport(CHILD_REPORT_MS, true)
      return this.#result(resumed !== 'failed' ? 'resumed' : 'undefined', 1, `the target reported startup failure (status code ${status})`, [
        'Migration failed due to problems at target.',
      ])
    }

    this.#line('migration sender: Target reports successful startup.')
    try {
      await destroyDomain(this.#hv, o.domid)
    } catch (err) {
      this.#log('error', `cannot destroy domain ${o.domid} (${this.#away}) here: ${(err as Error).message}`)
    }
    await this.#reapTransport(CHILD_AFTER_SUCCESS_MS, false)
    return this.#result('migrated', 0, undefined, ['Migration successful.'])
  }

  /** A handshake error as a Failure with xl's lines for it. */
  #handshakeFailure(label: FailureLabel, err: unknown): Failure {
    if (err instanceof HandshakeError) return new Failure(label, this.#aborted ? [] : err.lines, err.lines.join(' '))
    return new Failure(label, [`xl-ts: error: ${(err as Error).message}`], (err as Error).message)
  }

  /** The one place where a failed migration is handled (xl's labels). */
  async #fail(f: Failure): Promise<MigrationResult> {
    const aborted = this.#abortedLine()
    for (const l of f.lines) this.#line(l)
    if (aborted) this.#line(aborted)
    const reason = aborted ? aborted.replace(/^migration sender: /, '') : f.message
    this.#pair?.closeSend()
    switch (f.label) {
      case 'preamble':
        await this.#reapTransport(CHILD_REPORT_MS, true)
        return this.#result('untouched', 1, reason, aborted ? ['Migration failed: the receiver did not answer in time.'] : [])
      case 'failed_suspend': {
        await this.#reapTransport(CHILD_REPORT_MS, true)
        // xl does not resume a guest that never suspended. One that did (it answered late) is
        // resumed all the same: it must not stay stopped here with no copy anywhere else.
        const resumed = await this.#resumeHere()
        return this.#result(resumed === 'resumed' ? 'resumed' : resumed === 'running' ? 'not-suspended' : 'undefined', 1, reason, ['Migration failed, failed to suspend at sender.'])
      }
      case 'failed_resume': {
        await this.#reapTransport(CHILD_REPORT_MS, true)
        this.#line('Migration failed, resuming at sender.')
        this.#phase('resume')
        const resumed = await this.#resumeHere()
        return this.#result(resumed !== 'failed' ? 'resumed' : 'undefined', 1, reason, [])
      }
      case 'go_undelivered': {
        await this.#guardian?.abandon()
        this.#line('migration sender: the GO message never left: the target cannot start the domain.')
        await this.#reapTransport(CHILD_REPORT_MS, true)
        this.#line('Migration failed, resuming at sender.')
        this.#phase('resume')
        const resumed = await this.#resumeHere()
        return this.#result(resumed !== 'failed' ? 'resumed' : 'undefined', 1, reason, [])
      }
      case 'failed_badly':
        for (const l of FAILED_BADLY_BANNER) this.#line(l)
        await this.#reapTransport(CHILD_REPORT_MS, true)
        return this.#result('undefined', 1, `${reason} (after GO: domain state undefined; ${this.#away} kept here, suspended)`, [])
    }
  }

  /**
   * libxl_domain_resume(ctx, domid, 1, 0) with what must come first: the name back, log-dirty
   * off (a killed helper leaves it on). A guest that is not suspended (the failure came during
   * precopy, or it never answered the suspend) is running already and is left alone.
   */
  async #resumeHere(): Promise<'resumed' | 'running' | 'failed'> {
    const {domid, name} = this.#o
    const hv = this.#hv
    if (this.#renamed) {
      try {
        await renameDomain(hv, domid, name)
        this.#renamed = false
      } catch (err) {
        this.#log('error', `cannot rename domain ${domid} back to ${name}: ${(err as Error).message}`)
      }
    }
    await hv
      .logDirty(domid)
      .disable()
      .catch(() => undefined)
    let info
    try {
      info = await hv.info(domid)
    } catch (err) {
      this.#log('error', `domain ${domid}: ${(err as Error).message}`)
      return 'failed'
    }
    const suspended = info.state.shutdown && info.state.shutdownReason === SHUTDOWN_SUSPEND
    if (!suspended) return info.state.shutdown ? 'failed' : 'running'
    try {
      await hv.resume(domid, {cancel: true})
      this.#log('detail', `domain ${domid} (${name}) resumed`)
      return 'resumed'
    } catch (err) {
      const why = err instanceof HypervisorError ? err.message : (err as Error).message
      this.#log('error', `libxl_domain_resume failed for domain ${domid}: ${why}`)
      return 'failed'
    }
  }

  /**
   * migration_child_report: waits for the transport (after closing our send end it sees EOF),
   * reports a non-zero exit; after `ms` says so as xl does and, unlike xl, kills it and whatever
   * still holds our FIFOs.
   */
  async #reapTransport(ms: number, report: boolean): Promise<void> {
    const t = this.#transport
    if (!t || this.#reaped) return
    this.#reaped = true
    const pid = t.pid ?? 0
    const exit = await t.wait(ms)
    if (exit === 'timeout') {
      if (report) this.#line(`migration child [${pid}] not exiting, no longer waiting (exit status will be unreported)`)
      await t.killAll()
      this.#log('detail', `migration transport process [${pid}] killed`)
      return
    }
    // A grandchild may still hold a FIFO (a rune without exec): it goes with its parent.
    const left = t.holders()
    if (left.length > 0) {
      await t.killAll(100)
      this.#log('detail', `killed ${left.length} process(es) left holding the migration FIFOs: ${left.join(' ')}`)
    }
    if (report && (exit.code || exit.signal)) {
      const how = exit.signal ? `died due to fatal signal ${exit.signal}` : `exited with error status ${exit.code}`
      this.#log('info', `migration transport process [${pid}] ${how}`)
    }
  }

  #streamEvent(e: MigrateEvent): void {
    switch (e.kind) {
      case 'helper-started':
        this.#hooks.note('helper', e.pid)
        if (e.pid !== undefined) void this.#guardian?.helper(e.pid)
        break
      case 'helper-progress':
        this.#tracker.progress(e.progress)
        return
      case 'helper-log':
        this.#tracker.log(e.log)
        break
      case 'suspended':
        this.#suspendedAt = performance.now()
        this.#phase('stop-and-copy')
        this.#hooks.at('sender:stop-and-copy')
        break
    }
    this.#o.onStreamEvent?.(e)
  }

  #result(outcome: MigrationOutcome, exitCode: number, error: string | undefined, finalLines: readonly string[]): MigrationResult {
    const t = this.#tracker
    const totalMs = performance.now() - this.#started
    const downtimeMs = this.#suspendedAt !== undefined && this.#reportAt !== undefined && outcome === 'migrated' ? this.#reportAt - this.#suspendedAt : null
    const bytes = this.#headerBytes + t.recordBytes + this.#deviceStateBytes
    const result: MigrationResult = {
      ok: exitCode === 0,
      domain: this.#o.name,
      domid: this.#o.domid,
      outcome,
      exitCode,
      totalMs,
      downtimeMs,
      iterations: t.iterations,
      pagesSent: t.pagesSent,
      pausedPages: t.pausedPages,
      bytes,
      bandwidthMiBps: totalMs > 0 ? bytes / (1024 * 1024) / (totalMs / 1000) : 0,
      ...(error !== undefined ? {error} : {}),
    }
    this.#o.onEvent({kind: 'result', ...result})
    for (const l of finalLines) this.#line(l)
    return result
  }
}

function formatSeconds(ms: number): string {
  const s = ms / 1000
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`
}
