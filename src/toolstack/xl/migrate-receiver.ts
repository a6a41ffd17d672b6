/**
 * The xl-level receiver of a live migration: what xl's migrate_receive and create_domain do for an
 * incoming stream (XEN-FACTS §1.4, §1.7, §1.9), on top of the libxl layer (receiver.ts:
 * receiveDomain) and the xl header (savefile.ts).
 *
 *   banner (54) on outFd; xl header + config from inFd; the domain built as `<name>--incoming`,
 *   paused; the libxl stream and the restore helper on inFd; ready (34) on outFd; GO (44) from
 *   inFd; rename to `<name>`, unpause unless -p; report (39) + status byte on outFd; on failure
 *   destroy our copy, then GO (44) back: the sender may resume.
 *
 * inFd and outFd are raw fds (our stdin and stdout): never a Node stream over them, and nothing
 * but the protocol on outFd (every human line is an event for stderr).
 *
 * Failures, all in `#fail` / the report path:
 *   - anything before `ready` is written, and `ready` itself: our copy is destroyed (xl leaves it
 *     when the ack stream is dead; "never a half-built domain on the receiver" wins), exit 1;
 *   - GO not received (rc 1, status byte 0xff as xl), rename or unpause failed: report the
 *     failure, destroy our copy, grant the sender permission to resume (GO back), exit 0 as xl;
 *     if the ack stream is dead meanwhile, our copy is still destroyed, exit 1.
 *   - our own death (SIGKILL, hangup) at any point: the guardian (guardian-main.ts) destroys the
 *     `--incoming` domain before `ready`; after `ready` it takes the GO from the stream itself (it
 *     holds our stdin and stdout), starts the domain and writes the report, as we would have; so
 *     even a GO in flight when we die ends with one running copy (xl's undefined window).
 */
import {domainConfigFromJson, domainSpec, type DomainConfig} from '../config/index.js'
import {FdByteSource, writeAll} from '../fd/index.js'
import {prestartHelper, type PrestartedHelper} from '../helper/index.js'
import {HypervisorError, type Hypervisor} from '../hypervisor/index.js'
import {StreamError} from '../stream/index.js'
import {testHooks, type CheckpointProbe} from '../test-hooks.js'
import {MigrateError} from '../libxl/index.js'
import type {MigrateEvent, MigrateEventHandler} from '../libxl/index.js'
import {Guardian} from './guardian.js'
import type {ReceiverEarlyStart} from './receiver-early.js'
import {
  ACK_STREAM,
  HandshakeError,
  MIGRATE_PERMISSION_TO_GO,
  MIGRATE_RECEIVER_BANNER,
  MIGRATE_RECEIVER_READY,
  MIGRATE_REPORT,
  encodeStatus,
  readFixedMessage,
  writeMessage,
} from './handshake.js'
import {helperEnv} from '../libxl/index.js'
import type {MigrationEventHandler} from './migration-events.js'
import {receiveDomain, type SecondaryIo, type ReceiveResult} from '../libxl/index.js'
import {createDomain, createDomainBuilt, destroyDomain, renameDomain} from '../libxl/index.js'
import {claimLive, hasTieBreaker, pauseAsStale, staleName, type TieBreakerSpec} from './tie-breaker.js'
import {readSavefileHeader} from './savefile-header.js'
import {REMUS_ACK} from './remus-ack.js'
import {checkpointHeldAt} from '../testing/index.js'
import {SecondaryColoDisks, coloDisksOfConfig, forwardSecondaryFrames, secondaryInOf, startDomainDeviceModel, type SecondaryForwarder} from '../colo/index.js'
import {hostNetworkOf} from '../backends/index.js'
import {ColoSecondary} from '../replication/index.js'

const ERROR_FAIL = -3
const ERROR_INVAL = -6

/** xl's name for the stream in create_domain's messages. */
export const INCOMING_SOURCE = '<incoming migration stream>'

export interface MigrationReceiverOptions {
  readonly hypervisor: Hypervisor
  /** The stream (default 0, our stdin). */
  readonly inFd?: number
  /** The way back (default 1, our stdout). */
  readonly outFd?: number
  /** -p: leave the domain paused after the migration. */
  readonly paused?: boolean
  /**
   * -r: the stream is a Remus stream. The domain stays `<name>--incoming`, paused, and takes each
   * checkpoint whole (acknowledged to the primary on the way back); when the stream breaks it fails
   * over: renamed, unpaused, exit 0 (XEN-FACTS §1.8). No ready/GO/report.
   */
  readonly checkpointed?: 'remus' | 'colo'
  /** COLO: fail over when the primary sends no checkpoint request for this long (--heartbeat-timeout). */
  readonly heartbeatTimeoutMs?: number
  /** The helper's and guardian's environment (default process.env). */
  readonly env?: NodeJS.ProcessEnv
  /** xl's lines and log lines, for stderr. */
  readonly onEvent: MigrationEventHandler
  /** The libxl layer's events (for -v lines). */
  readonly onStreamEvent?: MigrateEventHandler
  /** The domain config as it will be built (`<name>--incoming`): xl -d prints it. */
  readonly onConfig?: (config: DomainConfig) => void
  /** The guardian and helper started while the CLI loaded (receiver-early.ts), if any. */
  readonly early?: ReceiverEarlyStart
  /** Remus/COLO: who decides, when the primary is lost, whether the copy here may go live. */
  readonly tieBreaker?: TieBreakerSpec
}

export type ReceiveOutcome =
  /** The domain runs here (or is paused here with -p). */
  | 'started'
  /** Nothing runs here; the sender was told (or could not be). */
  | 'failed'

export interface ReceiveMigrationResult {
  readonly outcome: ReceiveOutcome
  readonly exitCode: number
  readonly domid?: number
  readonly name?: string
}

class CreateFailure extends Error {
  constructor(
    readonly rc: number,
    readonly lines: readonly string[],
  ) {
    super(lines.join(' '))
  }
}

export async function receiveMigration(opts: MigrationReceiverOptions): Promise<ReceiveMigrationResult> {
  return new MigrationReceiver(opts).run()
}

class MigrationReceiver {
  readonly #o: MigrationReceiverOptions
  readonly #hv: Hypervisor
  readonly #in: number
  readonly #out: number
  readonly #hooks = testHooks().faultPoints('receiver')
  #guardian: Guardian | undefined
  #domid: number | undefined
  #name: string | undefined
  /** The domain was renamed and unpaused: it is the one running copy now. */
  #started = false
  /** Remus: the way back refused an ack; no more are tried. */
  #ackBroken = false
  /** COLO on the sim host: forwards the SVM's frames to the primary's comparator. */
  #forwarder: SecondaryForwarder | undefined
  /** Remus: the test probe, if a test installed one. */
  #probe: CheckpointProbe | undefined
  /** COLO: the secondary's COLO disks (none without). */
  #disks: SecondaryColoDisks | undefined
  /** The domain config from the stream (libxl JSON), for its device model. */
  #config: Record<string, unknown> | undefined
  /** Remus: whole checkpoints received. */
  #checkpoints = 0
  /** COLO: the secondary guest ran when the stream ended. */
  #secondaryRunning = false
  /** A plain stream's restore helper, started before the banner (helper/prestart.ts). */
  #prestarted: PrestartedHelper | undefined

  constructor(opts: MigrationReceiverOptions) {
    this.#o = opts
    this.#hv = opts.hypervisor
    this.#in = opts.inFd ?? 0
    this.#out = opts.outFd ?? 1
  }

  #line(text: string): void {
    this.#o.onEvent({kind: 'line', text})
  }

  #log(level: 'error' | 'warning' | 'info' | 'detail' | 'verbose' | 'debug', text: string): void {
    this.#o.onEvent({kind: 'log', level, text})
  }

  async run(): Promise<ReceiveMigrationResult> {
    try {
      return await this.#receive()
    } catch (err) {
      // Anything unforeseen: a domain that was not started must not stay.
      this.#line(`xl-ts: error: ${err instanceof Error ? err.message : String(err)}`)
      if (!this.#started) await this.#destroyOurCopy(true)
      return {outcome: this.#started ? 'started' : 'failed', exitCode: 1}
    } finally {
      await this.#forwarder?.stop()
      await this.#disks?.close()
      // Whatever happened, the guardian has nothing left to do unless we die before this.
      await this.#guardian?.done()
    }
  }

  async #receive(): Promise<ReceiveMigrationResult> {
    // Our guardian and (for a plain stream) our restore helper: started while the CLI loaded
    // (receiver-early.ts), else now, while the sender reads our banner and writes its header.
    const env = helperEnv(this.#hv, this.#o.env ?? process.env)
    const early = this.#o.early
    if (early?.guardianFailure !== undefined) this.#log('warning', `cannot start the guardian ahead: ${early.guardianFailure}`)
    this.#guardian = early?.guardian?.alive
      ? early.guardian
      : Guardian.prestart({inFd: this.#in, outFd: this.#out}, env, (why) => this.#log('warning', `cannot start the guardian: ${why}`))
    this.#hooks.note('guardian', this.#guardian?.pid)
    // A checkpointed stream sets up around a built domain first, as libxl does: its helper starts then.
    if (this.#o.checkpointed !== undefined) early?.helper?.dispose()
    else this.#prestarted = early?.helper?.waiting ? early.helper : prestartHelper({mode: 'restore', ioFd: this.#in, env, stderr: 'pipe'})
    this.#hooks.note('prestarted-helper', this.#prestarted?.pid)
    try {
      return await this.#handshake(env)
    } finally {
      this.#prestarted?.dispose()
    }
  }

  async #handshake(env: NodeJS.ProcessEnv): Promise<ReceiveMigrationResult> {
    this.#line('migration target: Ready to receive domain.')
    this.#hooks.at('receiver:banner')
    try {
      await writeMessage(this.#out, MIGRATE_RECEIVER_BANNER, 'banner', ACK_STREAM)
    } catch (err) {
      for (const l of lines(err)) this.#line(l)
      return {outcome: 'failed', exitCode: 1}
    }

    // create_domain: the header, the config, the domain, the stream.
    let domid: number
    let stoppedByPrimary = false
    try {
      domid = await this.#createDomain(env, (r) => (stoppedByPrimary = r.stoppedByPrimary === true))
    } catch (err) {
      const f = err instanceof CreateFailure ? err : new CreateFailure(ERROR_FAIL, [`xl-ts: error: ${(err as Error).message}`])
      for (const l of f.lines) this.#line(l)
      await this.#destroyOurCopy(false)
      this.#line(`migration target: Domain creation failed (code ${f.rc}).`)
      return {outcome: 'failed', exitCode: 1}
    }

    if (this.#o.checkpointed && stoppedByPrimary) {
      // Not a failover: the primary stopped replicating and runs the domain itself.
      this.#line(`migration target: ${this.#o.checkpointed === 'colo' ? 'COLO' : 'Remus'} stopped by the primary; destroying our copy (domid ${domid}).`)
      const rc = await this.#destroyOurCopy(false)
      return {outcome: 'failed', exitCode: rc === 0 ? 0 : 1}
    }
    if (this.#o.checkpointed) return this.#failover(domid)

    this.#hooks.at('receiver:before-ready')
    this.#line('migration target: Transfer complete, requesting permission to start domain.')
    try {
      await writeMessage(this.#out, MIGRATE_RECEIVER_READY, 'ready message', ACK_STREAM)
    } catch (err) {
      // xl exits here and leaves its copy; the sender cannot have sent GO: ours must go.
      for (const l of lines(err)) this.#line(l)
      await this.#destroyOurCopy(true)
      return {outcome: 'failed', exitCode: 1}
    }
    // From here the GO may be on its way: if we die, the guardian takes it from the stream.
    await this.#guardian?.ready()
    this.#hooks.at('receiver:after-ready')

    let rc = 0
    try {
      await readFixedMessage(this.#in, MIGRATE_PERMISSION_TO_GO, 'GO message')
    } catch (err) {
      for (const l of lines(err)) this.#line(l)
      rc = 1
    }
    if (rc === 0) {
      // From here the domain is ours whatever happens to this process.
      await this.#guardian?.go()
      this.#hooks.at('receiver:after-go')
      this.#line('migration target: Got permission, starting domain.')
      rc = await this.#start(domid)
      this.#started = rc === 0
      if (rc === 0) this.#line('migration target: Domain started successsfully.')
      else await this.#guardian?.abandon()
    }

    // perhaps_destroy_notify_rc: the report and its status byte in one write (the bytes xl sends
    // in two), so that a guardian finishing for us never follows half a report.
    try {
      await writeMessage(this.#out, Buffer.concat([MIGRATE_REPORT, encodeStatus(rc)]), 'success/failure report', ACK_STREAM)
      if (rc === 0) await this.#guardian?.done()
    } catch (err) {
      for (const l of lines(err)) this.#line(l)
      if (rc !== 0) await this.#destroyOurCopy(true)
      return {outcome: rc === 0 ? 'started' : 'failed', exitCode: 1, ...(rc === 0 ? {domid, name: this.#name!} : {})}
    }
    if (rc === 0) return {outcome: 'started', exitCode: 0, domid, name: this.#name!}

    this.#line('migration target: Failure, destroying our copy.')
    const destroyed = await this.#destroyOurCopy(false)
    if (destroyed !== 0) {
      this.#line(`migration target: Failed to destroy our copy (code ${destroyed}).`)
      return {outcome: 'failed', exitCode: 1}
    }
    this.#line('migration target: Cleanup OK, granting sender permission to resume.')
    try {
      await writeMessage(this.#out, MIGRATE_PERMISSION_TO_GO, 'permission to sender to have domain back', ACK_STREAM)
    } catch (err) {
      for (const l of lines(err)) this.#line(l)
      return {outcome: 'failed', exitCode: 1}
    }
    return {outcome: 'failed', exitCode: 0}
  }

  /**
   * The Remus stream broke after at least one whole checkpoint (the primary is gone): start the
   * copy here, as xl does; a failed rename is only reported, a failed unpause leaves it paused.
   */
  async #failover(domid: number): Promise<ReceiveMigrationResult> {
    const colo = this.#o.checkpointed === 'colo'
    const ha = colo ? 'COLO' : 'Remus'
    // Before the copy runs here alone: the primary may have resumed after losing us too.
    const verdict = await claimLive(this.#o.tieBreaker, {side: 'secondary', domain: this.#name!, checkpoint: this.#checkpoints})
    if (!verdict.live) return this.#standDown(domid, ha, verdict.why)
    if (hasTieBreaker(this.#o.tieBreaker)) this.#log('info', `${ha}: ${verdict.how}: the copy here goes live`)
    if (colo) {
      // The secondary has run since its last checkpoint (or is suspended for the next one): it
      // goes on from there, log-dirty off, without loading device state again.
      await this.#hv
        .logDirty(domid)
        .disable()
        .catch(() => undefined)
      // Its disk: the last checkpoint's, with the guest's own writes since committed on top.
      if (this.#disks) {
        try {
          const f = await this.#disks.failover()
          if (f) this.#log('detail', `COLO: disk replication failed over in ${f.ms.toFixed(0)} ms (commit ${f.commitMs.toFixed(0)} ms)`)
        } catch (err) {
          this.#log('error', `COLO: disk failover: ${(err as Error).message}`)
        }
      }
      if (!this.#secondaryRunning) {
        try {
          await this.#hv.resume(domid, {cancel: false})
        } catch (err) {
          this.#log('error', `cannot resume domain ${domid}: ${(err as Error).message}`)
        }
      }
    } else {
      await this.#probe?.record(this.#checkpoints, {force: true, failover: true})
    }
    // From here the domain is the one copy: if we die, the guardian starts it.
    await this.#guardian?.go()
    this.#line(`migration target: ${ha} Failover for domain ${domid}`)
    const name = this.#name!
    let renameRc = 0
    try {
      await renameDomain(this.#hv, domid, name)
    } catch (err) {
      renameRc = err instanceof HypervisorError && err.code === 'name-in-use' ? ERROR_INVAL : ERROR_FAIL
      this.#line(`migration target (${ha}): Failed to rename domain from ${name}--incoming to ${name}:${renameRc}`)
    }
    this.#started = true
    // COLO: the guest runs already; xl exits 3 when the rename failed.
    if (colo) return {outcome: 'started', exitCode: renameRc === 0 ? 0 : 3, domid, name}
    try {
      // Remus: libxl's restore completes here, its device model started from the last checkpoint.
      await this.#startDeviceModel(domid, false)
      await this.#hv.unpause(domid)
    } catch (err) {
      this.#log('error', `cannot unpause domain ${domid}: ${(err as Error).message}`)
      this.#line(`migration target (${ha}): Failed to unpause domain ${name} (id: ${domid}):${ERROR_FAIL}`)
      return {outcome: 'started', exitCode: 1, domid, name}
    }
    return {outcome: 'started', exitCode: 0, domid, name}
  }

  /**
   * The primary went live first: the copy here never runs. It is paused (a COLO secondary runs
   * between checkpoints) and named `<name>--stale`, so that list shows which copy is the live one.
   */
  async #standDown(domid: number, ha: string, why: string): Promise<ReceiveMigrationResult> {
    const name = this.#name!
    for (const problem of await pauseAsStale(this.#hv, domid, name, `${name}--incoming`)) this.#log('error', problem)
    this.#line(`migration target (${ha}): the primary went live first (${why}); domain ${staleName(name)} (id: ${domid}) stays paused here`)
    // Nothing of ours runs: the guardian has nothing to start.
    await this.#guardian?.done()
    return {outcome: 'failed', exitCode: 1, domid, name}
  }

  /** The way back carries one CHECKPOINT_END record per whole checkpoint (xl-ts's Remus ack). */
  async #ack(n: number): Promise<void> {
    if (this.#ackBroken) return
    try {
      await writeAll(this.#out, REMUS_ACK, {what: 'the Remus acknowledgement'})
    } catch (err) {
      // The primary is gone or does not read acks (xl): the stream itself tells us the rest.
      this.#ackBroken = true
      this.#log('detail', `cannot acknowledge checkpoint ${n} to the primary: ${(err as Error).message}`)
    }
  }

  /** create_domain for an incoming stream; returns the domid of `<name>--incoming`, paused. */
  async #createDomain(env: NodeJS.ProcessEnv, onReceived: (r: ReceiveResult) => void): Promise<number> {
    const hv = this.#hv
    const source = new FdByteSource(this.#in)
    let header
    try {
      header = await readSavefileHeader(source, {source: INCOMING_SOURCE, onEvent: (e) => this.#streamEvent(e)})
    } catch (err) {
      // xl's words for the header (`File has wrong magic number - ...`), without our position
      // prefix: the header is the first 48 bytes.
      const cause = (err as Error).cause
      throw new CreateFailure(ERROR_INVAL, [cause instanceof StreamError ? cause.detail : (err as Error).message])
    }
    if (header.config === undefined) throw new CreateFailure(ERROR_INVAL, ['Config file not specified and none in save file'])
    this.#line('Parsing config from <saved>')
    let config: DomainConfig
    try {
      if (!header.json) throw new Error('the config in the stream is not JSON (xl.cfg text from an old xl is not supported)')
      config = domainConfigFromJson(JSON.parse(header.config) as unknown)
    } catch (err) {
      throw new CreateFailure(ERROR_INVAL, [`xl-ts: error: cannot use the config from the stream: ${(err as Error).message}`])
    }
    this.#hooks.at('receiver:header')

    const name = config.c_info.name
    const incoming = `${name}--incoming`
    this.#name = name
    this.#o.onConfig?.({...config, c_info: {...config.c_info, name: incoming}})
    const role = {
      role: 'receiver',
      incomingName: incoming,
      finalName: name,
      leavePaused: this.#o.paused ?? false,
      stream: {inFd: this.#in, outFd: this.#out},
      checkpointed: this.#o.checkpointed !== undefined,
      ...(this.#o.tieBreaker ? {tieBreaker: this.#o.tieBreaker} : {}),
    } as const
    if (this.#guardian?.alive) await this.#guardian.assign(role, env)
    else {
      this.#guardian = Guardian.start(role, env, (why) => this.#log('warning', `cannot start the guardian of ${incoming}: ${why}`))
      this.#hooks.note('guardian', this.#guardian?.pid)
    }

    const spec = domainSpec({...config, c_info: {...config.c_info, name: incoming}}, hv.backend)
    let domid: number
    // A plain migration starts its restore helper while the domain is still being built (both are
    // process starts); a checkpointed one sets up around a built domain, as libxl does.
    let built: Promise<void> | undefined
    const cannotCreate = (err: unknown): CreateFailure => {
      if (err instanceof HypervisorError && err.code === 'name-in-use') return new CreateFailure(ERROR_FAIL, [`Domain with name "${incoming}" already exists.`])
      return new CreateFailure(ERROR_FAIL, [`xl-ts: error: cannot create domain ${incoming}: ${(err as Error).message}`])
    }
    try {
      if (this.#o.checkpointed === undefined) ({domid, built} = await createDomain(hv, spec, {paused: true, forRestore: true}))
      else domid = await createDomainBuilt(hv, spec, {paused: true, forRestore: true})
    } catch (err) {
      throw cannotCreate(err)
    }
    const buildFailure = built?.then(
      () => undefined,
      (err: unknown) => err,
    )
    this.#domid = domid
    await this.#guardian?.created(domid)
    if (this.#o.checkpointed) this.#probe = testHooks().checkpointProbe(hv, domid, 'secondary')
    // COLO on the sim host: the SVM's frames go to the primary's comparator (the first vif's
    // colo_sock_compare_sec_in_ip/port), from its first run on.
    const address = this.#o.checkpointed === 'colo' && hv.simulation ? secondaryInOf(config as unknown as Record<string, unknown>) : undefined
    if (address) {
      this.#forwarder = await forwardSecondaryFrames(hv, hostNetworkOf(hv), domid, address, (t) => this.#log('warning', t))
      this.#forwarder.pause()
    }
    const created = (): void => this.#log('detail', `created domain ${incoming} (domid ${domid}) for the incoming stream`)
    if (built) void built.then(created, () => {})
    else created()
    // COLO disks: replicated into this host's images through the device model (XEN-FACTS §8).
    // Its device model comes up at the first resume (libxl: from the first checkpoint's state).
    this.#config = config as unknown as Record<string, unknown>
    const coloDisks = this.#o.checkpointed === 'colo' ? coloDisksOfConfig(this.#config) : []
    let applied = 0
    const skipDiskCheckpoint = testHooks().coloSkipDiskCheckpoint
    const disks = coloDisks.length > 0 ? () => this.#disks! : undefined

    try {
      const received = await receiveDomain({
        hypervisor: hv,
        domid,
        ...(built ? {domainBuilt: built} : {}),
        fd: this.#in,
        streamType: this.#o.checkpointed ?? 'plain',
        ...(this.#o.checkpointed === 'remus'
          ? {
              onCheckpoint: async (n: number) => {
                await this.#probe?.record(checkpointHeldAt(n))
                await this.#ack(n)
              },
            }
          : {}),
        ...(this.#o.checkpointed === 'colo'
          ? {
              backChannel: this.#out,
              ...(this.#o.heartbeatTimeoutMs !== undefined ? {heartbeatTimeoutMs: this.#o.heartbeatTimeoutMs} : {}),
              coloCycles: (io: SecondaryIo) =>
                new ColoSecondary(io, {
                  onApplied: async (n: number) => {
                    applied = n
                    await this.#probe?.record(n, {context: true})
                  },
                  ...(disks
                    ? {
                        devices: {
                          setup: async () => {
                            await this.#startDeviceModel(domid, true)
                            try {
                              this.#disks = await SecondaryColoDisks.open(hv, domid, coloDisks)
                            } catch (err) {
                              throw new Error(`COLO: cannot reach the device model of domain ${domid}: ${(err as Error).message}`, {cause: err})
                            }
                            await disks().setup()
                          },
                          preresume: async () => {
                            if (!skipDiskCheckpoint) await disks().preresume()
                            await this.#probe?.recordView(applied)
                          },
                          postsuspend: () => disks().postsuspend(),
                        },
                      }
                    : {}),
                  onSuspending: () => this.#forwarder?.pause(),
                  onResuming: () => this.#forwarder?.resume(),
                }).run(),
            }
          : {}),
        env,
        ...(this.#prestarted ? {prestarted: this.#prestarted} : {}),
        offset: header.length,
        onEvent: (e) => this.#streamEvent(e),
      })
      this.#checkpoints = received.checkpoints ?? 0
      this.#secondaryRunning = received.secondaryRunning ?? false
      // A plain migration: libxl's domain creation ends with its device model, from the stream's state.
      if (!this.#o.checkpointed) await this.#startDeviceModel(domid, false)
      onReceived(received)
    } catch (err) {
      // A domain that never got built is gone already, and its failure is the one to report.
      const failed = await buildFailure
      if (failed) {
        this.#domid = undefined
        throw cannotCreate(failed)
      }
      const why = err instanceof MigrateError || err instanceof Error ? err.message : String(err)
      throw new CreateFailure(ERROR_FAIL, [`xl-ts: error: ${why}`])
    }
    return domid
  }

  /** Rename to the final name and unpause (unless -p): 0, or libxl's rc for what failed. */
  async #start(domid: number): Promise<number> {
    const name = this.#name!
    try {
      await renameDomain(this.#hv, domid, name)
    } catch (err) {
      const exists = err instanceof HypervisorError && err.code === 'name-in-use'
      this.#line(exists ? `Domain with name "${name}" already exists.` : `xl-ts: error: cannot rename domain ${domid} to ${name}: ${(err as Error).message}`)
      return exists ? ERROR_INVAL : ERROR_FAIL
    }
    if (!this.#o.paused) {
      try {
        await this.#hv.unpause(domid)
      } catch (err) {
        this.#line(`xl-ts: error: cannot unpause domain ${domid}: ${(err as Error).message}`)
        return ERROR_FAIL
      }
    }
    return 0
  }

  /** Starts the device model the domain's config asks for (libxl's domcreate_launch_dm), from the stream's device state. */
  async #startDeviceModel(domid: number, coloSecondary: boolean): Promise<void> {
    await startDomainDeviceModel(this.#hv, domid, this.#config ?? {}, {
      restored: true,
      coloSecondary,
      log: (text) => this.#log('detail', text),
    })
  }

  /** Destroys the domain we built (if any): 0, or libxl's rc. */
  async #destroyOurCopy(say: boolean): Promise<number> {
    const domid = this.#domid
    if (domid === undefined) return 0
    try {
      await destroyDomain(this.#hv, domid)
      this.#domid = undefined
      if (say) this.#log('info', `migration target: destroyed our copy (domid ${domid})`)
      return 0
    } catch (err) {
      if (err instanceof HypervisorError && err.code === 'no-such-domain') {
        this.#domid = undefined
        return 0
      }
      this.#log('error', `cannot destroy domain ${domid}: ${(err as Error).message}`)
      return ERROR_FAIL
    }
  }

  #streamEvent(e: MigrateEvent): void {
    if (e.kind === 'helper-started') this.#hooks.note('helper', e.pid)
    this.#o.onStreamEvent?.(e)
  }
}

function lines(err: unknown): readonly string[] {
  if (err instanceof HandshakeError) return err.lines
  return [`xl-ts: error: ${err instanceof Error ? err.message : String(err)}`]
}
