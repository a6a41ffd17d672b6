/**
 * The libxl-level sender: what libxl_domain_suspend / libxl__stream_write do for a plain stream
 * (XEN-FACTS §2.4): the libxl header and LIBXC_CONTEXT on the fd, then the save helper on the same
 * fd for the libxc stream, answering its callbacks (suspend: the guest is suspended through the
 * hypervisor; switch_qemu_logdirty: there is no device model to switch), then, with the guest still
 * suspended, the device model's state as EMULATOR_CONTEXT (HVM guests only, as libxl) and END.
 *
 * It never resumes, pauses or destroys the domain: that is the caller's decision (xl save resumes
 * on failure, destroys on success; migrate decides by the receiver's answer).
 *
 * A Remus stream (stream_type 1, XEN-FACTS §3.6, §10.2) runs the same helper with the callbacks
 * libxl gives it: suspend (the guest is suspended and its device model state kept, then the
 * devices' postsuspend: `hooks.suspended`), postcopy (the guest resumes: `hooks.resumed`) and
 * checkpoint (EMULATOR_CONTEXT + CHECKPOINT_END on the stream, then `hooks.committed`, which
 * commits the devices and waits for the next checkpoint; false stops replication). No END is ever
 * written: the stream ends when replication stops, and `sendDomain` then resolves with how it
 * stopped instead of throwing.
 */
import {STREAM_TYPE, XCFLAGS, type HelperCallbacks, type HelperCommand, type HelperOutcome, type PrestartedHelper} from '../helper/index.js'
import type {Hypervisor} from '../hypervisor/index.js'
import {EMULATOR, encodeLibxlHeader, encodeLibxlRecord, type LibxlRecord} from '../stream/index.js'
import {MigrateError} from './errors.js'
import type {MigrateEventHandler} from './events.js'
import {fdPosition, writeAll} from '../fd/index.js'
import {helperFailure, runStreamHelper} from './helper-run.js'
import {helperEnv} from './host-env.js'
import {ioError} from './savefile.js'
import {ColoStateError, readCheckpointState} from './colo-states.js'

export interface SendDomainOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  /** The stream fd: a file opened for writing, or the migration stream. Never closed here. */
  readonly fd: number
  /** XCFLAGS_LIVE: precopy while the guest runs (migrate); false for `save`. */
  readonly live: boolean
  /** XCFLAGS_DEBUG (migrate --debug): the libxc stream re-sends memory for verification. */
  readonly debug: boolean
  readonly streamType: 'plain' | 'remus' | 'colo'
  /** Remus and COLO: what happens around each checkpoint (required for those streams). */
  readonly checkpoints?: CheckpointHooks
  /**
   * COLO: the back channel from the secondary (our end of its stdout). The save helper gets it as
   * its recv_fd (it reads the secondary's dirty pfn lists there) and we read the secondary's
   * CHECKPOINT_STATE records (SVM_SUSPENDED, SVM_READY, SVM_RESUMED) between its reads.
   */
  readonly backChannel?: number
  /** The helper's environment; default: ours with XL_TS_BACKEND/XL_TS_ROOT of `hypervisor`. */
  readonly env?: NodeJS.ProcessEnv
  readonly onEvent?: MigrateEventHandler
  /** Aborts the helper (SIGTERM). */
  readonly signal?: AbortSignal
  /** The helper to run (default: $LIBXL_SAVE_HELPER, else ours). */
  readonly helperCommand?: HelperCommand
  /** Our helper started ahead for this stream (helper/prestart.ts): used if it still waits. */
  readonly prestarted?: PrestartedHelper
  /** Stream offset of the fd's current position, for events on a pipe (default 0; a file tells its own). */
  readonly offset?: number
}

/** The toolstack's part of each Remus checkpoint (n counts from 1). */
export interface CheckpointHooks {
  /** The helper asks for the suspend of checkpoint n (the guest still runs). */
  suspending?(n: number): void
  /** The guest is suspended for checkpoint n (devices postsuspend: a new network epoch). */
  suspended?(n: number): Promise<void> | void
  /** The guest runs again after checkpoint n's memory went out (postcopy). */
  resumed?(n: number): Promise<void> | void
  /**
   * Checkpoint n is on the stream, CHECKPOINT_END included (COLO: and both guests run again):
   * commit the devices and wait until the next checkpoint is due (COLO: until the proxy asks for
   * one). false: stop replicating (the helper then ends).
   */
  committed(n: number): Promise<boolean>
  /** COLO: the secondary holds checkpoint n and resumes next (its SVM_READY arrived); we resume after. */
  secondaryReady?(n: number): Promise<void> | void
  /** COLO: the secondary runs again after checkpoint n (its SVM_RESUMED arrived). */
  secondaryResumed?(n: number): Promise<void> | void
}

export interface SendResult {
  /** The helper's outcome (none when a Remus stream stopped: the helper then failed by design). */
  readonly helper?: HelperOutcome
  /** Time the helper took (the libxc stream), ms. */
  readonly helperMs: number
  /** Bytes of device model state sent (0: none, not an HVM guest). */
  readonly deviceStateBytes: number
  /** Remus: checkpoints completed (CHECKPOINT_END written). */
  readonly checkpoints?: number
  /** Remus: why replication stopped (`committed` said stop, or the stream/helper failed after the first checkpoint). */
  readonly stopped?: {readonly requested: boolean; readonly reason: string; readonly suspended: boolean}
}

export async function sendDomain(opts: SendDomainOptions): Promise<SendResult> {
  const {hypervisor: hv, domid, fd} = opts
  const emit = opts.onEvent
  let info
  try {
    info = await hv.info(domid)
  } catch (err) {
    throw new MigrateError('hypervisor', 'libxl header', `domain ${domid}: ${(err as Error).message}`, {cause: err})
  }
  // Offsets for events: a file tells its position; on a pipe we count until the hand-off.
  let counted = opts.offset ?? 0
  let afterHandOff = false
  const where = (): number | null => fdPosition(fd) ?? (afterHandOff ? null : counted)

  const write = async (parts: Buffer[], step: MigrateError['step'], what: string): Promise<void> => {
    try {
      counted += await writeAll(fd, parts, {what})
    } catch (err) {
      throw ioError(err, step, `cannot write ${what}`)
    }
  }
  const record = async (rec: LibxlRecord, index: number, step: MigrateError['step']): Promise<void> => {
    const parts = encodeLibxlRecord(rec)
    const offset = where()
    await write(parts, step, `the libxl ${rec.kind} record`)
    emit?.({kind: 'libxl-record', record: rec.kind, index, offset, length: parts[0]!.readUInt32LE(4)})
  }

  emit?.({kind: 'libxl-header', offset: where() ?? 0})
  await write([encodeLibxlHeader()], 'libxl header', 'the libxl stream header')
  let index = 0
  await record({kind: 'LIBXC_CONTEXT'}, index++, 'libxl records')

  // The libxc stream, by the helper on the same fd.
  const colo = opts.streamType === 'colo'
  /** Remus or COLO: a checkpointed stream. */
  const remus = opts.streamType !== 'plain'
  if (remus && !opts.checkpoints) throw new Error(`a ${opts.streamType} stream needs checkpoint hooks`)
  if (colo && opts.backChannel === undefined) throw new Error('a COLO stream needs the back channel')
  const back = opts.backChannel ?? -1
  /** COLO: the secondary runs (after the first checkpoint): it sends SVM_SUSPENDED at each suspend. */
  let svmRunning = false
  let suspended = false
  let suspendFailure: string | undefined
  let checkpoints = 0
  let stopRequested = false
  /** Remus: the device model state taken while the guest was suspended, for its checkpoint. */
  let deviceState: Buffer | undefined
  let deviceStateBytes = 0
  const hvm = info.type === 'hvm'
  const emulatorContext = async (blob: Buffer): Promise<void> => {
    await record({kind: 'EMULATOR_CONTEXT', emulator: EMULATOR.QEMU_UPSTREAM, index: 0, blob}, index++, 'emulator context')
    deviceStateBytes += blob.length
    emit?.({kind: 'device-state', direction: 'saved', bytes: blob.length})
  }
  const saveDeviceState = async (): Promise<Buffer> => {
    try {
      return await hv.saveDeviceState(domid)
    } catch (err) {
      throw new MigrateError('hypervisor', 'emulator context', `domain ${domid}: cannot save the device model state: ${(err as Error).message}`, {cause: err, suspended})
    }
  }
  const callbacks: HelperCallbacks = {
    suspend: async () => {
      if (remus) opts.checkpoints!.suspending?.(checkpoints + 1)
      // COLO: the secondary suspends at our NEW as we do here; its SVM_SUSPENDED is awaited after
      // our own suspend but read meanwhile (nobody else reads the back channel until we answer).
      const svmSuspended = colo && svmRunning ? readCheckpointState(back, 'SVM_SUSPENDED', 'the back channel') : undefined
      svmSuspended?.catch(() => undefined)
      try {
        await hv.suspend(domid)
      } catch (err) {
        suspendFailure = (err as Error).message
        emit?.({kind: 'suspend-failed', domid, reason: suspendFailure})
        return 0
      }
      suspended = true
      emit?.({kind: 'suspended', domid})
      if (!remus) return 1
      try {
        if (hvm) deviceState = await saveDeviceState()
        await opts.checkpoints!.suspended?.(checkpoints + 1)
        await svmSuspended
      } catch (err) {
        emit?.({kind: 'checkpoint-failed', number: checkpoints + 1, reason: (err as Error).message})
        return 0
      }
      return 1
    },
    // libxl asks QEMU (xen-set-global-dirty-log); the simulated host has no device model to ask.
    switchQemuLogdirty: async () => 1,
    ...(remus
      ? {
          postcopy: async () => {
            // COLO: the secondary has applied the checkpoint (SVM_READY); both resume, then it says
            // SVM_RESUMED. libxl__domain_resume(..., suspend_cancel 1): the guest carries on.
            const n = colo ? checkpoints : checkpoints + 1
            try {
              if (colo) {
                await readCheckpointState(back, 'SVM_READY', 'the back channel')
                await opts.checkpoints!.secondaryReady?.(n)
              }
              await hv.resume(domid, {cancel: true})
              suspended = false
              if (colo) {
                svmRunning = true
                await readCheckpointState(back, 'SVM_RESUMED', 'the back channel')
                await opts.checkpoints!.secondaryResumed?.(n)
              }
            } catch (err) {
              emit?.({kind: 'checkpoint-failed', number: n, reason: err instanceof ColoStateError ? err.message : `cannot resume the domain: ${(err as Error).message}`})
              return 0
            }
            await opts.checkpoints!.resumed?.(n)
            return 1
          },
          checkpoint: async () => {
            const n = checkpoints + 1
            try {
              if (deviceState) await emulatorContext(deviceState)
              deviceState = undefined
              await record({kind: 'CHECKPOINT_END'}, index++, 'libxl records')
            } catch (err) {
              emit?.({kind: 'checkpoint-failed', number: n, reason: (err as Error).message})
              return 0
            }
            checkpoints = n
            emit?.({kind: 'checkpoint-sent', number: n})
            // COLO waits in wait_checkpoint, after both guests resumed.
            if (colo) return 1
            const more = await opts.checkpoints!.committed(n)
            if (!more) stopRequested = true
            return more ? 1 : 0
          },
          ...(colo
            ? {
                waitCheckpoint: async () => {
                  const more = await opts.checkpoints!.committed(checkpoints)
                  if (!more) {
                    stopRequested = true
                    return 0
                  }
                  try {
                    await record({kind: 'CHECKPOINT_STATE', state: 'NEW'}, index++, 'libxl records')
                  } catch (err) {
                    emit?.({kind: 'checkpoint-failed', number: checkpoints + 1, reason: `sending data fails: ${(err as Error).message}`})
                    return 0
                  }
                  return 1
                },
              }
            : {}),
        }
      : {}),
  }
  const before = fdPosition(fd)
  let helper
  afterHandOff = true
  try {
    helper = await runStreamHelper({
      params: {
        mode: 'save',
        ioFd: fd,
        ...(colo ? {recvFd: back} : {}),
        domid,
        xcflags: (opts.live ? XCFLAGS.LIVE : 0) | (opts.debug ? XCFLAGS.DEBUG : 0),
        streamType: colo ? STREAM_TYPE.COLO : remus ? STREAM_TYPE.REMUS : STREAM_TYPE.PLAIN,
      },
      callbacks,
      env: opts.env ?? helperEnv(hv),
      ...(opts.onEvent ? {onEvent: opts.onEvent} : {}),
      ...(opts.signal ? {signal: opts.signal} : {}),
      ...(opts.helperCommand ? {command: opts.helperCommand} : {}),
      ...(opts.prestarted ? {prestarted: opts.prestarted} : {}),
      // Remus is stopped by the operator's interrupt, which must not kill the helper under it.
      ...(remus ? {ownSession: true} : {}),
    })
  } catch (err) {
    if (suspendFailure !== undefined) {
      throw new MigrateError('suspend', 'libxc stream', `domain ${domid} could not be suspended: ${suspendFailure}`, {cause: err, suspended})
    }
    const failure = helperFailure(err, 'save', {suspended})
    // A Remus stream ends with the helper failing: asked to stop, or the backup went away. Only
    // before the first checkpoint is that a failure of the whole operation.
    if (remus && (stopRequested || checkpoints > 0)) {
      return {helperMs: 0, deviceStateBytes, checkpoints, stopped: {requested: stopRequested, reason: failure.message, suspended}}
    }
    throw failure
  }
  if (remus) throw new MigrateError('helper', 'libxc stream', 'the save helper ended a Remus stream without an error: it cannot have replicated')
  const after = fdPosition(fd)
  emit?.({kind: 'helper-done', mode: 'save', ms: helper.ms, ...(before !== undefined && after !== undefined ? {bytes: after - before} : {})})

  // After the libxc stream: the device model's state (HVM), then END.
  if (hvm) await emulatorContext(await saveDeviceState())
  const endOffset = where()
  await record({kind: 'END'}, index++, 'end')
  emit?.({kind: 'stream-end', offset: endOffset})
  return {helper: helper.outcome, helperMs: helper.ms, deviceStateBytes}
}
