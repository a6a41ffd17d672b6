/**
 * `xl save` and `xl restore` below the command line (xl_saverestore.c save_domain, xl_vmcontrol.c
 * create_domain's restore path): a savefile is the xl header with the config, then the libxl stream.
 *
 * Save never loses the VM: a save that fails after the guest was suspended resumes it
 * (suspend-cancel: it carries on where it was), as xl does. Restore never leaves a half-built
 * domain: any failure after the domain was built destroys it.
 */
import * as fs from 'node:fs'

import {FdByteSource, errnoText} from '../fd/index.js'
import type {EarlyDomain, Hypervisor} from '../hypervisor/index.js'
import {domainSpec, type DomainConfig} from '../config/index.js'
import {MigrateError, } from '../libxl/index.js'
import {startDomainDeviceModel} from '../colo/index.js'
import type {MigrateEventHandler, SavefileInfo} from '../libxl/index.js'
import {readSavefileHeader, writeSavefileHeader, type SavefileHeader} from './savefile-header.js'
import {receiveDomain, type ReceiveResult} from '../libxl/index.js'
import {sendDomain, type SendResult} from '../libxl/index.js'
import {createDomain, destroyDomain} from '../libxl/index.js'

const SHUTDOWN_SUSPEND = 2

/** What becomes of the domain after a good save: xl destroys it; -c leaves it running; -p paused. */
export type AfterSave = 'destroy' | 'running' | 'paused'

export interface SaveToFileOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  readonly file: string
  /** The config JSON to put in the savefile (libxl's JSON of the domain config). */
  readonly configJson?: string
  readonly after: AfterSave
  readonly env?: NodeJS.ProcessEnv
  readonly onEvent?: MigrateEventHandler
  readonly signal?: AbortSignal
}

export interface SaveToFileResult {
  readonly info: SavefileInfo
  readonly send: SendResult
  /** Size of the savefile. */
  readonly bytes: number
}

/** A save that failed. The domain was resumed if it had been suspended (`resumeError` if that failed). */
export class SaveFailedError extends Error {
  override readonly name = 'SaveFailedError'
  constructor(
    readonly failure: MigrateError,
    readonly suspended: boolean,
    readonly resumeError?: string,
  ) {
    super(failure.message, {cause: failure})
  }
}

function openForWriting(file: string): Promise<number> {
  const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC
  return new Promise((resolve, reject) => fs.open(file, flags, 0o644, (err, fd) => (err ? reject(err) : resolve(fd))))
}

function closeFd(fd: number): Promise<void> {
  return new Promise((resolve) => fs.close(fd, () => resolve()))
}

async function isSuspended(hv: Hypervisor, domid: number): Promise<boolean> {
  try {
    const s = (await hv.info(domid)).state
    return s.shutdown && s.shutdownReason === SHUTDOWN_SUSPEND
  } catch {
    return false
  }
}

/**
 * xl's save_domain after the config is known: opens the file (O_WRONLY|O_CREAT|O_TRUNC, 0644),
 * writes the xl header and config, sends the domain (not live), closes the file; then resumes,
 * pauses or destroys the domain as `after` says. A failure to open or to write the header is a
 * MigrateError and leaves the domain as it was; a failure of the stream is a SaveFailedError after
 * the domain was resumed.
 */
export async function saveDomainToFile(opts: SaveToFileOptions): Promise<SaveToFileResult> {
  const {hypervisor: hv, domid, file} = opts
  const emit = opts.onEvent
  let fd: number
  try {
    fd = await openForWriting(file)
  } catch (err) {
    throw new MigrateError('open', 'open', `Failed to open temp file ${file} for writing: ${errnoText(err)}`, {cause: err})
  }
  let info: SavefileInfo
  let send: SendResult
  let bytes = 0
  try {
    info = await writeSavefileHeader({fd, source: file, ...(opts.configJson !== undefined ? {configJson: opts.configJson} : {}), ...(emit ? {onEvent: emit} : {})})
    try {
      send = await sendDomain({
        hypervisor: hv,
        domid,
        fd,
        live: false,
        debug: false,
        ...(opts.env ? {env: opts.env} : {}),
        ...(emit ? {onEvent: emit} : {}),
        ...(opts.signal ? {signal: opts.signal} : {}),
      })
    } catch (err) {
      const failure = err instanceof MigrateError ? err : new MigrateError('io', 'libxc stream', (err as Error).message, {cause: err})
      const suspended = await isSuspended(hv, domid)
      emit?.({kind: 'save-failed', domid, reason: failure.message, suspended})
      let resumeError: string | undefined
      if (suspended) {
        try {
          await hv.resume(domid, {cancel: true})
          emit?.({kind: 'source-domain', domid, action: 'resumed'})
        } catch (e) {
          resumeError = (e as Error).message
          emit?.({kind: 'source-domain', domid, action: 'resumed', error: resumeError})
        }
      }
      throw new SaveFailedError(failure, suspended, resumeError)
    }
    try {
      bytes = fs.fstatSync(fd).size
    } catch {
      // only for the result
    }
  } finally {
    await closeFd(fd)
  }

  // xl: -p pauses and resumes, -c resumes (suspend-cancel), otherwise the domain is destroyed.
  const action = opts.after === 'destroy' ? 'destroyed' : opts.after === 'paused' ? 'paused' : 'resumed'
  try {
    if (opts.after === 'destroy') {
      await destroyDomain(hv, domid)
    } else {
      if (opts.after === 'paused') await hv.pause(domid)
      await hv.resume(domid, {cancel: true})
    }
  } catch (err) {
    const why = (err as Error).message
    emit?.({kind: 'source-domain', domid, action, error: why})
    throw new MigrateError('hypervisor', 'after save', `the domain was saved to ${file}, but could not be ${action}: ${why}`, {cause: err})
  }
  emit?.({kind: 'source-domain', domid, action})
  return {info: info!, send: send!, bytes}
}

/** An open savefile whose xl header has been read: the fd stands at the libxl stream. */
export interface OpenSavefile {
  readonly file: string
  readonly fd: number
  readonly header: SavefileHeader
  /** Stream offset of the libxl header (= file offset). */
  readonly offset: number
  /** Closes the fd; safe to call more than once. */
  close(): Promise<void>
}

/**
 * Opens a savefile and reads its xl header (create_domain: `Can't open restore file: <strerror>`,
 * then the header checks with xl's messages, emitting `savefile-loading` and `savefile-config`).
 */
export async function openSavefile(file: string, opts: {onEvent?: MigrateEventHandler} = {}): Promise<OpenSavefile> {
  let fd: number
  try {
    fd = await new Promise<number>((resolve, reject) => fs.open(file, 'r', (err, fd) => (err ? reject(err) : resolve(fd))))
  } catch (err) {
    throw new MigrateError('open', 'open', `Can't open restore file: ${errnoText(err)}`, {cause: err})
  }
  try {
    if (fs.fstatSync(fd).isDirectory()) {
      throw new MigrateError('open', 'open', `Can't open restore file: ${file} is a directory`)
    }
    const source = new FdByteSource(fd)
    const header = await readSavefileHeader(source, {source: file, ...(opts.onEvent ? {onEvent: opts.onEvent} : {})})
    if (header.streamVersion !== 2) {
      throw new MigrateError('stream', 'savefile header', `${file}: a legacy (pre-STREAMv2) savefile: convert it with convert-legacy-stream first`, {format: 'xl', offset: 0})
    }
    let closed: Promise<void> | undefined
    // Idempotent: a second close must not close whatever got the fd number since.
    return {file, fd, header, offset: source.offset, close: () => (closed ??= closeFd(fd))}
  } catch (err) {
    await closeFd(fd)
    throw err
  }
}

export interface RestoreFromSavefileOptions {
  readonly hypervisor: Hypervisor
  readonly savefile: OpenSavefile
  /** The config the domain is built from (the saved one, or the one given on the command line). */
  readonly config: DomainConfig
  /** Leave the domain paused (xl restore -p). */
  readonly paused: boolean
  readonly env?: NodeJS.ProcessEnv
  readonly onEvent?: MigrateEventHandler
  readonly signal?: AbortSignal
}

export interface RestoreFromSavefileResult {
  readonly domid: number
  readonly receive: ReceiveResult
}

/**
 * Builds the domain for restore (paused, empty, with the config's name), receives the stream into
 * it, unpauses it unless `paused`. Any failure after the domain was built destroys it before the
 * error is thrown (`domain-destroyed`); a failure to build it (the name is taken) is a MigrateError
 * whose cause is the HypervisorError.
 */
export async function restoreFromSavefile(opts: RestoreFromSavefileOptions): Promise<RestoreFromSavefileResult> {
  const {hypervisor: hv, savefile, config} = opts
  const emit = opts.onEvent
  let early: EarlyDomain
  try {
    early = await createDomain(hv, domainSpec(config, hv.backend), {paused: true, forRestore: true})
  } catch (err) {
    throw new MigrateError('hypervisor', 'create', (err as Error).message, {cause: err})
  }
  const {domid, built} = early
  const buildFailure = built.then(
    () => {
      emit?.({kind: 'domain-created', domid, name: config.c_info.name})
      return undefined
    },
    (err: unknown) => err as Error,
  )
  try {
    const receive = await receiveDomain({
      hypervisor: hv,
      domid,
      domainBuilt: built,
      fd: savefile.fd,
      streamType: 'plain',
      offset: savefile.offset,
      ...(opts.env ? {env: opts.env} : {}),
      ...(emit ? {onEvent: emit} : {}),
      ...(opts.signal ? {signal: opts.signal} : {}),
    })
    // libxl's domcreate_launch_dm: the device model comes up once the stream is in, from its state.
    try {
      await startDomainDeviceModel(hv, domid, config as unknown as Record<string, unknown>, {restored: true, ...(opts.env ? {env: opts.env} : {})})
    } catch (err) {
      throw new MigrateError('hypervisor', 'device model', `domain ${domid}: cannot start its device model: ${(err as Error).message}`, {cause: err})
    }
    if (!opts.paused) {
      try {
        await hv.unpause(domid)
      } catch (err) {
        throw new MigrateError('hypervisor', 'unpause', `domain ${domid}: cannot unpause: ${(err as Error).message}`, {cause: err})
      }
    }
    return {domid, receive}
  } catch (err) {
    // A domain that never got built is gone already, and its failure is the one to report.
    const failed = await buildFailure
    if (failed) throw new MigrateError('hypervisor', 'create', failed.message, {cause: failed})
    let destroyError: string | undefined
    try {
      await destroyDomain(hv, domid)
    } catch (e) {
      destroyError = (e as Error).message
    }
    emit?.({kind: 'domain-destroyed', domid, ...(destroyError !== undefined ? {error: destroyError} : {})})
    throw err
  }
}
