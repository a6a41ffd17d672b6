/**
 * The libxl-level sender: what libxl__domain_save / libxl__stream_write do (XEN-FACTS §2.4). A save
 * stream is the libxl header and LIBXC_CONTEXT on the fd, then the save helper on the same fd for
 * the libxc stream, its callbacks handed out in turn on a HelperChannel. `switch_qemu_logdirty` has
 * a standing answer; the others belong to whoever drives the stream: `sendDomain` for a plain
 * stream (below), the replication cycles for Remus and COLO (replication/).
 *
 * A plain stream: the helper asks for the suspend once (the guest is suspended through the
 * hypervisor); after the libxc stream, with the guest still suspended, the device model's state as
 * EMULATOR_CONTEXT (HVM guests only, as libxl) and END. It never resumes, pauses or destroys the
 * domain: that is the caller's decision (xl save resumes on failure, destroys on success; migrate
 * decides by the receiver's answer).
 */
import {HelperChannel, STREAM_TYPE, XCFLAGS, type CycleCallback, type HelperCommand, type HelperOutcome, type HelperStreamType, type PrestartedHelper} from '../helper/index.js'
import type {Hypervisor} from '../hypervisor/index.js'
import {MigrateError} from './errors.js'
import type {MigrateEventHandler} from './events.js'
import {helperFailure, runStreamHelper, type HelperRunResult} from './helper-callout.js'
import {helperEnv} from './helper-env.js'
import {saveDeviceModelState} from './device-model.js'
import {LibxlStreamWriter} from './stream-writer.js'

export type SaveStreamType = 'plain' | 'remus' | 'colo'

export interface SaveStreamOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  /** The stream fd: a file opened for writing, or the migration stream. Never closed here. */
  readonly fd: number
  /** XCFLAGS_LIVE: precopy while the guest runs (migrate, Remus, COLO); false for `save`. */
  readonly live: boolean
  /** XCFLAGS_DEBUG (migrate --debug): the libxc stream re-sends memory for verification. */
  readonly debug: boolean
  readonly streamType: SaveStreamType
  /** COLO: the back channel from the secondary: the save helper's recv_fd (its dirty pfn lists). */
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
  /** Run the helper in a session of its own (Remus: the operator's interrupt must not kill it). */
  readonly ownSession?: boolean
  /** Stream offset of the fd's current position, for events on a pipe (default 0; a file tells its own). */
  readonly offset?: number
}

/** libxl's callbacks for each stream type (libxl_save_callout.c: what libxl__domain_save installs). */
const CYCLE_CALLBACKS: Readonly<Record<SaveStreamType, readonly CycleCallback[]>> = {
  plain: ['suspend'],
  remus: ['suspend', 'postcopy', 'checkpoint'],
  colo: ['suspend', 'postcopy', 'checkpoint', 'wait_checkpoint'],
}

const HELPER_STREAM_TYPE: Readonly<Record<SaveStreamType, HelperStreamType>> = {
  plain: STREAM_TYPE.PLAIN,
  remus: STREAM_TYPE.REMUS,
  colo: STREAM_TYPE.COLO,
}

export interface SaveStream {
  readonly writer: LibxlStreamWriter
  /** The helper's callbacks, in libxc's order. */
  readonly helper: HelperChannel
  /** The helper's run: resolves when it completes, rejects with a MigrateError. Never unhandled. */
  readonly done: Promise<HelperRunResult>
  /** The guest is HVM: its device model's state goes into the stream. */
  readonly hvm: boolean
  /**
   * The device model's state now (EMULATOR_CONTEXT), undefined when the domain has no device model
   * (then there is no record); a MigrateError when it cannot be had.
   */
  saveDeviceState(): Promise<Buffer | undefined>
}

/** The libxl header and LIBXC_CONTEXT, then the save helper on the same fd. */
export async function startSaveStream(opts: SaveStreamOptions): Promise<SaveStream> {
  const {hypervisor: hv, domid, fd} = opts
  let info
  try {
    info = await hv.info(domid)
  } catch (err) {
    throw new MigrateError('hypervisor', 'libxl header', `domain ${domid}: ${(err as Error).message}`, {cause: err})
  }
  if (opts.streamType === 'colo' && opts.backChannel === undefined) throw new Error('a COLO stream needs the back channel')
  const writer = new LibxlStreamWriter(fd, opts.offset ?? 0, opts.onEvent)
  await writer.header()
  await writer.record({kind: 'LIBXC_CONTEXT'})

  const helper = new HelperChannel()
  writer.handOff()
  const done = runStreamHelper({
    params: {
      mode: 'save',
      ioFd: fd,
      ...(opts.streamType === 'colo' ? {recvFd: opts.backChannel!} : {}),
      domid,
      xcflags: (opts.live ? XCFLAGS.LIVE : 0) | (opts.debug ? XCFLAGS.DEBUG : 0),
      streamType: HELPER_STREAM_TYPE[opts.streamType],
    },
    callbacks: {
      ...helper.callbacks(CYCLE_CALLBACKS[opts.streamType]),
      // libxl asks QEMU to track the guest pages it writes (xen-set-global-dirty-log); the simulated
      // host's device model (QEMU without Xen) writes no guest memory, so there is nothing to switch.
      switchQemuLogdirty: async () => 1,
    },
    env: opts.env ?? helperEnv(hv),
    ...(opts.onEvent ? {onEvent: opts.onEvent} : {}),
    ...(opts.signal ? {signal: opts.signal} : {}),
    ...(opts.helperCommand ? {command: opts.helperCommand} : {}),
    ...(opts.prestarted ? {prestarted: opts.prestarted} : {}),
    ...(opts.ownSession ? {ownSession: true} : {}),
  })
  done.then(
    () => helper.end(),
    (err: unknown) => helper.end(err),
  )
  return {
    writer,
    helper,
    done,
    hvm: info.type === 'hvm',
    saveDeviceState: async () => {
      try {
        return await saveDeviceModelState(hv, domid)
      } catch (err) {
        throw new MigrateError('hypervisor', 'emulator context', `domain ${domid}: cannot save the device model state: ${(err as Error).message}`, {cause: err, suspended: true})
      }
    },
  }
}

export type SendDomainOptions = Omit<SaveStreamOptions, 'streamType' | 'backChannel' | 'ownSession'>

export interface SendResult {
  readonly helper: HelperOutcome
  /** Time the helper took (the libxc stream), ms. */
  readonly helperMs: number
  /** Bytes of device model state sent (0: none, not an HVM guest). */
  readonly deviceStateBytes: number
}

/** A plain stream: the helper's precopy and stop-and-copy, then the device model's state and END. */
export async function sendDomain(opts: SendDomainOptions): Promise<SendResult> {
  const {hypervisor: hv, domid} = opts
  const emit = opts.onEvent
  const stream = await startSaveStream({...opts, streamType: 'plain'})
  let suspended = false
  // The suspend: asked once, at the end of the live rounds (or at once without XCFLAGS_LIVE).
  const suspendFailure = (async (): Promise<string | undefined> => {
    let owed
    try {
      owed = await stream.helper.next('suspend')
    } catch {
      return undefined // the helper ended first: its own failure says why
    }
    try {
      await hv.suspend(domid)
    } catch (err) {
      const reason = (err as Error).message
      emit?.({kind: 'suspend-failed', domid, reason})
      owed.reply(0)
      return reason
    }
    suspended = true
    emit?.({kind: 'suspended', domid})
    owed.reply(1)
    return undefined
  })()
  let run
  try {
    run = await stream.done
  } catch (err) {
    const failed = await suspendFailure
    if (failed !== undefined) throw new MigrateError('suspend', 'libxc stream', `domain ${domid} could not be suspended: ${failed}`, {cause: err, suspended})
    throw helperFailure(err, 'save', {suspended})
  }
  const bytes = stream.writer.helperBytes()
  emit?.({kind: 'helper-done', mode: 'save', ms: run.ms, ...(bytes !== undefined ? {bytes} : {})})

  // After the libxc stream: the device model's state (HVM), then END.
  const {writer} = stream
  const deviceState = stream.hvm ? await stream.saveDeviceState() : undefined
  if (deviceState) await writer.emulatorContext(deviceState)
  const endOffset = writer.where()
  await writer.record({kind: 'END'}, 'end')
  emit?.({kind: 'stream-end', offset: endOffset})
  return {helper: run.outcome, helperMs: run.ms, deviceStateBytes: writer.deviceStateBytes}
}
