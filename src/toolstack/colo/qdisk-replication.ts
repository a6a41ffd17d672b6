/**
 * COLO block replication driven over QMP: the primary's and the secondary's command sequences, as
 * two classes over a QmpSession (the device model's `qmp`). The drives must be the ones of
 * qdisk-args.ts (quorum on the primary; export + replication top on the secondary).
 *
 * Facts followed (XEN-FACTS §7, §8.2; libxl_colo_qdisk.c; QEMU-REPLICATION.md, measured on 7.2.22):
 * - Secondary setup (libxl: restore-side device setup, then start): `nbd-server-start` once on
 *   colo-host:colo-port (port as a string), `nbd-server-add {device: <export>, writable: true}` per
 *   disk, then `xen-set-replication {enable: true, primary: false}`.
 * - Primary (libxl: first preresume; the NBD server must be up by then): per disk, HMP `drive_add -n
 *   buddy driver=replication,mode=primary,file.driver=nbd,...,node-name=colo_node<N>` (QMP's
 *   blockdev-add would do too, libxl uses HMP) then `x-blockdev-change {parent: <export>, node}`
 *   (the node becomes quorum child `children.1`), then `xen-set-replication {enable: true,
 *   primary: true}`. Writes made before that are not replicated. HMP reports failure in its
 *   return string ("Failed to connect to ...: Connection refused"), not as a QMP error.
 * - Every checkpoint: `xen-colo-do-checkpoint` on both sides; after each suspend libxl reads
 *   `query-xen-replication-status` and fails on `error: true` (libxl itself ignores the reply body;
 *   here it is checked: "replication error occurs when primary/secondary vm is running").
 * - Primary teardown (secondary lost): `xen-set-replication {enable: false, primary: true,
 *   failover: true}`, `x-blockdev-change {parent, child: "children.1"}`, `blockdev-del` of the
 *   node; then the primary writes its own image only. Killing the secondary does not hang primary
 *   writes; status turns to `{error: true, desc: "I/O error occurred"}`.
 * - Secondary failover (primary lost): `xen-set-replication {enable: false, primary: false,
 *   failover: true}` starts committing the active image into the target; the commit job is not in
 *   `query-block-jobs`: it is done when the active and hidden nodes have left
 *   `query-named-block-nodes {flat: true}`. Then `nbd-server-stop`. With `failover: true` QEMU
 *   swallows stop's errors (measured: `{}` even when replication never started), so the status is
 *   asked first.
 * - Secondary clean stop (`failover` false) always fails on 7.2 with "Backup job was cancelled
 *   unexpectedly" although replication is stopped: tolerated by stop().
 * - Idempotence messages: "Block replication is not running", "NBD server not running",
 *   "Node '<q>' does not have child 'children.1'", "Failed to find node with node-name='<n>'".
 *
 * Every command has a timeout (default 10 s, libxl's QMP command timeout). A drive_add towards a
 * host that does not answer blocks QEMU's main loop until the kernel gives up the TCP connect; the
 * timeout then only tells us.
 */
import {qemuOptValue} from '../device-model/index.js'
import {QmpCommandError, QmpConnectionError, QmpTimeoutError, type QmpSession} from '../qmp/index.js'
import {qdiskIds, type ColoDisk} from './qdisk-config.js'

export const DEFAULT_REPLICATION_TIMEOUT_MS = 10_000
export const DEFAULT_FAILOVER_TIMEOUT_MS = 30_000
const FAILOVER_POLL_MS = 5

export type ReplicationSide = 'primary' | 'secondary'

export type ReplicationErrorCode =
  | 'command' // QEMU refused a command (its message is qemuMessage)
  | 'hmp' // an HMP command printed an error (its text is qemuMessage)
  | 'timeout' // no reply within the timeout
  | 'connection' // the QMP connection is gone (QEMU exited?)
  | 'replication-error' // query-xen-replication-status says error
  | 'failover-timeout' // the failover commit did not finish in time
  | 'state' // used out of order (started twice)

export class ReplicationError extends Error {
  override readonly name = 'ReplicationError'
  constructor(
    readonly code: ReplicationErrorCode,
    readonly side: ReplicationSide,
    /** The QMP (or HMP) command concerned. */
    readonly command: string | undefined,
    /** What QEMU said. */
    readonly qemuMessage: string | undefined,
    message: string,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : {cause})
  }
}

/** query-xen-replication-status. */
export interface ReplicationStatus {
  readonly error: boolean
  readonly desc?: string
}

export interface ReplicationOptions {
  /** Per command (default 10 s). */
  readonly timeoutMs?: number
}

/** One step of a teardown. */
export interface TeardownStep {
  readonly command: string
  /** The export, node or server the step was about. */
  readonly target: string
  /** `ok`; `already`: QEMU said there was nothing (left) to do; `failed`. */
  readonly outcome: 'ok' | 'already' | 'failed'
  /** QEMU's message (already, failed), or our error's. */
  readonly message?: string
}

export interface TeardownReport {
  /** No step failed. */
  readonly ok: boolean
  readonly steps: readonly TeardownStep[]
  readonly failures: readonly TeardownStep[]
}

export interface FailoverResult {
  /** From the stop command to the NBD server stopped. */
  readonly ms: number
  /** From the stop command until the active/hidden nodes were gone (the commit). */
  readonly commitMs: number
}

function report(steps: TeardownStep[]): TeardownReport {
  const failures = steps.filter((s) => s.outcome === 'failed')
  return {ok: failures.length === 0, steps, failures}
}

/** What both sides do alike: commands with typed errors, checkpoint, status. */
abstract class ReplicationEnd {
  protected readonly timeoutMs: number
  protected started = false

  constructor(
    readonly side: ReplicationSide,
    protected readonly qmp: QmpSession,
    readonly disks: readonly ColoDisk[],
    options: ReplicationOptions,
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_REPLICATION_TIMEOUT_MS
  }

  /** A QMP command; every failure as a ReplicationError naming it. */
  protected async run<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    try {
      return await this.qmp.execute<T>(command, args, {timeoutMs: this.timeoutMs})
    } catch (err) {
      throw this.wrap(command, err)
    }
  }

  protected wrap(command: string, err: unknown): ReplicationError {
    const side = `COLO ${this.side}`
    if (err instanceof QmpCommandError) {
      return new ReplicationError('command', this.side, command, err.desc, `${side}: ${command} failed: ${err.desc}`, err)
    }
    if (err instanceof QmpTimeoutError) {
      return new ReplicationError('timeout', this.side, command, undefined, `${side}: ${command}: no reply within ${err.timeoutMs} ms`, err)
    }
    if (err instanceof QmpConnectionError) {
      return new ReplicationError('connection', this.side, command, undefined, `${side}: ${command}: ${err.message}`, err)
    }
    if (err instanceof ReplicationError) return err
    return new ReplicationError('command', this.side, command, undefined, `${side}: ${command}: ${(err as Error)?.message ?? String(err)}`, err)
  }

  /** An HMP command; its printed error (HMP returns text, not a QMP error) as a ReplicationError. */
  protected async hmp(commandLine: string): Promise<void> {
    const verb = commandLine.split(' ', 1)[0]!
    const said = await this.run<string>('human-monitor-command', {'command-line': commandLine})
    const text = typeof said === 'string' ? said.replace(/\r/g, '').trim() : ''
    if (text !== '') {
      throw new ReplicationError('hmp', this.side, verb, text, `COLO ${this.side}: ${verb} failed: ${text.replace(/\n/g, '; ')}`)
    }
  }

  /** A teardown step: runs it, and tells what happened without throwing. */
  protected async step(command: string, target: string, args: Record<string, unknown>, gone: RegExp[]): Promise<TeardownStep> {
    try {
      await this.qmp.execute(command, args, {timeoutMs: this.timeoutMs})
      return {command, target, outcome: 'ok'}
    } catch (err) {
      const e = this.wrap(command, err)
      if (e.qemuMessage !== undefined && gone.some((re) => re.test(e.qemuMessage!))) {
        return {command, target, outcome: 'already', message: e.qemuMessage}
      }
      return {command, target, outcome: 'failed', message: e.qemuMessage ?? e.message}
    }
  }

  protected startOnce(): void {
    if (this.started) throw new ReplicationError('state', this.side, undefined, undefined, `COLO ${this.side}: replication already started`)
    this.started = true
  }

  /** `xen-colo-do-checkpoint`: the disks' checkpoint (secondary: drops its guest's writes since the last one). */
  async checkpoint(): Promise<void> {
    await this.run('xen-colo-do-checkpoint')
  }

  /** `query-xen-replication-status`. */
  async status(): Promise<ReplicationStatus> {
    const s = await this.run<{error?: unknown; desc?: unknown}>('query-xen-replication-status')
    const error = s?.error === true
    return typeof s?.desc === 'string' ? {error, desc: s.desc} : {error}
  }

  /** Throws a ReplicationError (`replication-error`) when the status says error, as libxl fails the checkpoint. */
  async check(): Promise<void> {
    const s = await this.status()
    if (s.error) {
      throw new ReplicationError(
        'replication-error',
        this.side,
        'query-xen-replication-status',
        s.desc,
        `replication error occurs when ${this.side} vm is running${s.desc ? `: ${s.desc}` : ''}`,
      )
    }
  }
}

const NOT_RUNNING = /Block replication is not running/
const NO_CHILD = /does not have child/
const NO_NODE = /Failed to find node with node-name|Cannot find device=.* nor node-name/
const NBD_NOT_RUNNING = /NBD server not running/
const BACKUP_CANCELLED = /Backup job was cancelled unexpectedly/

/** The primary's side: an NBD child for each quorum, replication start, checkpoints, teardown. */
export class PrimaryReplication extends ReplicationEnd {
  constructor(qmp: QmpSession, disks: readonly ColoDisk[], options: ReplicationOptions = {}) {
    super('primary', qmp, disks, options)
  }

  /** The HMP command that adds a disk's replication node over an NBD client of the secondary's export. */
  static driveAddCommand(disk: ColoDisk): string {
    const v = qemuOptValue
    return (
      `drive_add -n buddy driver=replication,mode=primary,file.driver=nbd,file.host=${v(disk.host)},` +
      `file.port=${disk.port},file.export=${v(disk.exportName)},node-name=${qdiskIds(disk).nbdNode}`
    )
  }

  /**
   * Connects each disk's quorum to the secondary's NBD export and starts replication (libxl's
   * first preresume). The secondary must have started (its NBD server up). On failure, what was
   * done stays: call teardown().
   */
  async start(): Promise<void> {
    this.startOnce()
    for (const disk of this.disks) {
      await this.hmp(PrimaryReplication.driveAddCommand(disk))
      await this.run('x-blockdev-change', {parent: qdiskIds(disk).exportId, node: qdiskIds(disk).nbdNode})
    }
    await this.run('xen-set-replication', {enable: true, primary: true})
  }

  /**
   * Stops replication and takes each disk's NBD child out of its quorum (the secondary is gone or
   * going): afterwards the primary writes its own images only. Every step is tried; what QEMU
   * says is already done counts as done. Never throws: the report says what failed.
   */
  async teardown(): Promise<TeardownReport> {
    const steps: TeardownStep[] = []
    steps.push(await this.step('xen-set-replication', 'replication', {enable: false, primary: true, failover: true}, [NOT_RUNNING]))
    for (const disk of this.disks) {
      const ids = qdiskIds(disk)
      steps.push(await this.step('x-blockdev-change', ids.exportId, {parent: ids.exportId, child: 'children.1'}, [NO_CHILD]))
      steps.push(await this.step('blockdev-del', ids.nbdNode, {'node-name': ids.nbdNode}, [NO_NODE]))
    }
    this.started = false
    return report(steps)
  }
}

export interface SecondaryOptions extends ReplicationOptions {
  /** Where the NBD server listens (default: the disks' colo-host, as libxl). */
  readonly bindHost?: string
}

export interface FailoverOptions {
  /** How long the commit may take (default 30 s). */
  readonly timeoutMs?: number
  /** Between looks at the block graph (default 5 ms). */
  readonly pollMs?: number
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** The secondary's side: NBD exports, replication start, checkpoints, failover or stop. */
export class SecondaryReplication extends ReplicationEnd {
  private readonly bindHost: string | undefined
  private failedOver = false

  constructor(qmp: QmpSession, disks: readonly ColoDisk[], options: SecondaryOptions = {}) {
    super('secondary', qmp, disks, options)
    this.bindHost = options.bindHost
  }

  /** Exports every disk's target over NBD (one server: all disks share host and port) and starts replication. */
  async start(): Promise<void> {
    const first = this.disks[0]
    if (!first) return
    this.startOnce()
    const host = this.bindHost ?? first.host
    await this.run('nbd-server-start', {addr: {type: 'inet', data: {host, port: String(first.port)}}})
    for (const disk of this.disks) await this.run('nbd-server-add', {device: qdiskIds(disk).exportId, writable: true})
    await this.run('xen-set-replication', {enable: true, primary: false})
  }

  /** True while any disk's active or hidden image is still in QEMU's block graph. */
  private async commitPending(): Promise<boolean> {
    const nodes = await this.run<{'node-name'?: string}[]>('query-named-block-nodes', {flat: true})
    const names = new Set(nodes.map((n) => n['node-name']))
    return this.disks.some((disk) => {
      const ids = qdiskIds(disk)
      return names.has(ids.activeNode) || names.has(ids.hiddenNode)
    })
  }

  /**
   * Takes over (the primary is lost): stops replication with failover, which commits the active
   * images (the checkpointed state plus this guest's writes since) into the targets; waits until
   * that is done; stops the NBD server. `ms` counts from the stop command (the status asked
   * before it is not counted). Throws a ReplicationError: `state` when replication is not running
   * (QEMU's status says so) or this already failed over, `failover-timeout` when the commit takes
   * longer than `timeoutMs`, or what a command met.
   */
  async failover(options: FailoverOptions = {}): Promise<FailoverResult> {
    const limit = options.timeoutMs ?? DEFAULT_FAILOVER_TIMEOUT_MS
    const pollMs = options.pollMs ?? FAILOVER_POLL_MS
    if (this.failedOver) throw new ReplicationError('state', this.side, undefined, undefined, 'COLO secondary: already failed over')
    // With failover set, QEMU drops stop's errors (replication_stop_all gets no errp): a
    // replication that never ran would "fail over" silently and its nodes never leave. Ask first.
    const before = await this.status()
    if (before.desc !== undefined && NOT_RUNNING.test(before.desc)) {
      throw new ReplicationError(
        'state',
        this.side,
        'query-xen-replication-status',
        before.desc,
        `COLO secondary: cannot fail over: ${before.desc}`,
      )
    }
    const t0 = performance.now()
    await this.run('xen-set-replication', {enable: false, primary: false, failover: true})
    while (await this.commitPending()) {
      if (performance.now() - t0 > limit) {
        throw new ReplicationError(
          'failover-timeout',
          this.side,
          'xen-set-replication',
          undefined,
          `COLO secondary: failover: the active disks were not committed within ${limit} ms`,
        )
      }
      await sleep(pollMs)
    }
    const commitMs = performance.now() - t0
    const nbd = await this.step('nbd-server-stop', 'nbd-server', {}, [NBD_NOT_RUNNING])
    if (nbd.outcome === 'failed') {
      throw new ReplicationError('command', this.side, 'nbd-server-stop', nbd.message, `COLO secondary: nbd-server-stop failed: ${nbd.message}`)
    }
    this.started = false
    this.failedOver = true
    return {ms: performance.now() - t0, commitMs}
  }

  /**
   * Stops replication without failover and the NBD server, for a secondary about to be destroyed
   * (its disks' state no longer matters). QEMU 7.2's "Backup job was cancelled unexpectedly" and
   * anything already stopped count as done. Never throws: the report says what failed.
   */
  async stop(): Promise<TeardownReport> {
    const steps: TeardownStep[] = []
    steps.push(await this.step('xen-set-replication', 'replication', {enable: false, primary: false}, [NOT_RUNNING, BACKUP_CANCELLED]))
    steps.push(await this.step('nbd-server-stop', 'nbd-server', {}, [NBD_NOT_RUNNING]))
    this.started = false
    return report(steps)
  }
}
