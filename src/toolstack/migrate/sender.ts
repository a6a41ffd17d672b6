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
 * Checkpointed streams (Remus, COLO) come later: their callbacks (postcopy, checkpoint,
 * wait_checkpoint) go into `saveCallbacks` next to suspend, and the per-checkpoint libxl records
 * (EMULATOR_CONTEXT, CHECKPOINT_END) into `writeCheckpointRecords`, which the plain stream writes
 * once, with END instead of CHECKPOINT_END.
 */
import {STREAM_TYPE, XCFLAGS, type HelperCallbacks, type HelperCommand, type HelperOutcome} from '../helper/index.js'
import type {Hypervisor} from '../hypervisor/index.js'
import {EMULATOR, encodeLibxlHeader, encodeLibxlRecord, type LibxlRecord} from '../stream/index.js'
import {MigrateError} from './errors.js'
import type {MigrateEventHandler} from './events.js'
import {fdPosition, writeAll} from '../fd/index.js'
import {helperFailure, runStreamHelper} from './helper-run.js'
import {helperEnv} from './host-env.js'
import {ioError} from './savefile.js'

export interface SendDomainOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  /** The stream fd: a file opened for writing, or the migration stream. Never closed here. */
  readonly fd: number
  /** XCFLAGS_LIVE: precopy while the guest runs (migrate); false for `save`. */
  readonly live: boolean
  /** XCFLAGS_DEBUG (migrate --debug): the libxc stream re-sends memory for verification. */
  readonly debug: boolean
  readonly streamType: 'plain'
  /** The helper's environment; default: ours with XL_TS_BACKEND/XL_TS_ROOT of `hypervisor`. */
  readonly env?: NodeJS.ProcessEnv
  readonly onEvent?: MigrateEventHandler
  /** Aborts the helper (SIGTERM). */
  readonly signal?: AbortSignal
  /** The helper to run (default: $LIBXL_SAVE_HELPER, else ours). */
  readonly helperCommand?: HelperCommand
  /** Stream offset of the fd's current position, for events on a pipe (default 0; a file tells its own). */
  readonly offset?: number
}

export interface SendResult {
  readonly helper: HelperOutcome
  /** Time the helper took (the libxc stream), ms. */
  readonly helperMs: number
  /** Bytes of device model state sent (0: none, not an HVM guest). */
  readonly deviceStateBytes: number
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
  let suspended = false
  let suspendFailure: string | undefined
  const callbacks = saveCallbacks({
    suspend: async () => {
      try {
        await hv.suspend(domid)
      } catch (err) {
        suspendFailure = (err as Error).message
        emit?.({kind: 'suspend-failed', domid, reason: suspendFailure})
        return 0
      }
      suspended = true
      emit?.({kind: 'suspended', domid})
      return 1
    },
  })
  const before = fdPosition(fd)
  let helper
  afterHandOff = true
  try {
    helper = await runStreamHelper({
      params: {
        mode: 'save',
        ioFd: fd,
        domid,
        xcflags: (opts.live ? XCFLAGS.LIVE : 0) | (opts.debug ? XCFLAGS.DEBUG : 0),
        streamType: STREAM_TYPE.PLAIN,
      },
      callbacks,
      env: opts.env ?? helperEnv(hv),
      ...(opts.onEvent ? {onEvent: opts.onEvent} : {}),
      ...(opts.signal ? {signal: opts.signal} : {}),
      ...(opts.helperCommand ? {command: opts.helperCommand} : {}),
    })
  } catch (err) {
    if (suspendFailure !== undefined) {
      throw new MigrateError('suspend', 'libxc stream', `domain ${domid} could not be suspended: ${suspendFailure}`, {cause: err, suspended})
    }
    throw helperFailure(err, 'save', {suspended})
  }
  const after = fdPosition(fd)
  emit?.({kind: 'helper-done', mode: 'save', ms: helper.ms, ...(before !== undefined && after !== undefined ? {bytes: after - before} : {})})

  // After the libxc stream: the device model's state (HVM), then END.
  let deviceStateBytes = 0
  if (info.type === 'hvm') {
    let blob: Buffer
    try {
      blob = await hv.saveDeviceState(domid)
    } catch (err) {
      throw new MigrateError('hypervisor', 'emulator context', `domain ${domid}: cannot save the device model state: ${(err as Error).message}`, {cause: err, suspended})
    }
    await record({kind: 'EMULATOR_CONTEXT', emulator: EMULATOR.QEMU_UPSTREAM, index: 0, blob}, index++, 'emulator context')
    deviceStateBytes = blob.length
    emit?.({kind: 'device-state', direction: 'saved', bytes: blob.length})
  }
  const endOffset = where()
  await record({kind: 'END'}, index++, 'end')
  emit?.({kind: 'stream-end', offset: endOffset})
  return {helper: helper.outcome, helperMs: helper.ms, deviceStateBytes}
}

/**
 * libxl's save callbacks for the helper. A plain stream needs suspend and switch_qemu_logdirty
 * (cbflags 0x88, as libxl announces); Remus and COLO will add postcopy, checkpoint and
 * wait_checkpoint here.
 */
function saveCallbacks(cb: {suspend: () => Promise<number>}): HelperCallbacks {
  return {
    suspend: cb.suspend,
    // libxl asks QEMU (xen-set-global-dirty-log); the simulated host has no device model to ask.
    switchQemuLogdirty: async () => 1,
  }
}
