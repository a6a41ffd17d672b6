/**
 * The toolstack's end of the save/restore helper: what libxl_save_callout.c does. It spawns the
 * helper (Xen's libxl-save-helper or ours, same argv, same protocol) with the fd map of XEN-FACTS
 * §5.2, reads its messages, calls the caller's callbacks, writes their int replies, enforces the
 * protocol, and turns the end into a result or a HelperError.
 *
 * Reading: the helper's stdout is a pipe (a socketpair, as Node makes them) that only we read, so a
 * Node stream over it is fine: its read-ahead can only take bytes that are ours anyway. (The raw
 * reads of fd/raw-io.ts are for fds shared with another reader, like the migration stream.) The
 * helper's stdin carries only our replies, so a Node stream is fine there too.
 *
 * Order: one message is handled at a time. A message that needs a reply (suspend, postcopy,
 * checkpoint, wait_checkpoint, switch_qemu_logdirty, static_data_done, complete) blocks the helper
 * until the reply is written, so nothing may follow it before that: bytes that do are a protocol
 * violation, as are a malformed message, a message of the other mode, a callback the cbflags did not
 * announce, anything after complete, and a second complete. A violation kills the helper with
 * SIGKILL (libxl's helper_failed); abort() sends SIGTERM (libxl__save_helper_abort: Xen's save helper
 * then makes libxc's next write fail so that its cleanup runs, and still reports complete).
 *
 * The end is decided when the helper has exited and its stdout has ended, as libxl's helper_exited:
 * complete(0, _) and exit status 0 is success (with the restore results on restore); complete with
 * retval != 0 is HelperError 'failed' naming retval and errno; no complete is "<what> exited without
 * signaling completion" with the exit status or signal; a restore without restore_results is
 * "<what> exited without providing results".
 */
import type {ChildProcess} from 'node:child_process'
import * as os from 'node:os'
import * as util from 'node:util'

import {entryPointFile} from '../entry-points.js'
import type {ChildStdio} from '../fd/index.js'
import {buildHelperArgv, type HelperArgs, type HelperStreamType} from './argv.js'
import {PrestartedHelper, spawnHelperProcess} from './prestart.js'
import {
  HELPER_MESSAGES,
  HelperMessageDecoder,
  HelperProtocolError,
  RESTORE_CBFLAGS,
  SAVE_CBFLAGS,
  XTL,
  encodeHelperReply,
  helperMessageSpec,
  helperMessageValues,
  xtlLevelName,
  type DecodedHelperMessage,
  type HelperCallbackName,
  type HelperMessage,
  type HelperMessageName,
  type HelperMessageSpec,
  type XtlLevelName,
} from './protocol.js'

/** The environment variable that names the helper binary, as for libxl. */
export const HELPER_ENV = 'LIBXL_SAVE_HELPER'

export interface HelperCommand {
  /** What is executed. */
  readonly file: string
  /** Arguments before the helper's own (`[<helper script>]` when `file` is node). */
  readonly args: readonly string[]
}

/** Our helper: dist/bundle/save-helper.js when current, else dist/toolstack/save-helper/main.js (entry-points.ts). */
export function defaultHelperScript(): string {
  return entryPointFile('save-helper')
}

/** `$LIBXL_SAVE_HELPER` when set (run as it is), else our helper run by this Node. */
export function resolveHelperCommand(env: NodeJS.ProcessEnv = process.env): HelperCommand {
  const override = env[HELPER_ENV]
  if (override) return {file: override, args: []}
  return {file: process.execPath, args: [defaultHelperScript()]}
}

/** Set to 0 to start the helper only when it is needed, as libxl does (no prestart). */
export const PRESTART_ENV = 'XL_TS_PRESTART_HELPER'

/**
 * Starts our helper ahead of its argv (prestart.ts) for a stream on `ioFd` (and `backFd`), with the
 * environment it is to run with. Undefined when the helper is not ours (`LIBXL_SAVE_HELPER`), when
 * `XL_TS_PRESTART_HELPER=0`, or when it cannot be spawned (the start then spawns one as usual).
 */
export function prestartHelper(opts: {
  mode: 'save' | 'restore'
  ioFd: number
  backFd?: number
  env: NodeJS.ProcessEnv
  stderr?: ChildStdio
  /** It does not keep this process alive until it is taken. */
  background?: boolean
}): PrestartedHelper | undefined {
  if (opts.env[PRESTART_ENV] === '0') return undefined
  const command = resolveHelperCommand(opts.env)
  if (command.file !== process.execPath || command.args.length !== 1) return undefined
  try {
    return PrestartedHelper.start({...opts, file: command.file, script: command.args[0]!})
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------------------------------
// What the caller gives

export interface HelperLogEvent {
  /** xentoollog level (XTL.DEBUG .. XTL.CRITICAL) and its name. */
  readonly level: number
  readonly levelName: XtlLevelName | `level ${number}`
  /** errno the message is about, 0 for none, and its name (`ENOENT`) when known. */
  readonly errnoval: number
  readonly errnoName?: string
  /** Who logged: `libxl-save-helper`, `xc`, `xencall`, ... */
  readonly context: string
  readonly message: string
}

export interface HelperProgressEvent {
  readonly context: string
  readonly doingWhat: string
  readonly done: number
  readonly total: number
}

/** A callback's int reply (see XEN-FACTS §5.4 for what each value means to libxc). */
export type CallbackReply = number | Promise<number>

/**
 * The callbacks of libxl's save/restore callbacks struct. Present ones are announced in cbflags
 * (unless cbflags is given explicitly); the helper sends only announced ones.
 */
export interface HelperCallbacks {
  onLog?(event: HelperLogEvent): void
  onProgress?(event: HelperProgressEvent): void
  suspend?(): CallbackReply
  postcopy?(): CallbackReply
  checkpoint?(): CallbackReply
  waitCheckpoint?(): CallbackReply
  switchQemuLogdirty?(domid: number, enable: boolean): CallbackReply
  staticDataDone?(missing: number): CallbackReply
  /** Restore: the store and console gfns (sent once at the end; with COLO also per checkpoint). */
  restoreResults?(storeGfn: bigint, consoleGfn: bigint): void
}

/**
 * The member of HelperCallbacks that answers a callback message: its name in code
 * (`waitCheckpoint`). Each callback of the table has one, or indexing HelperCallbacks fails to compile.
 */
function handlerOf(spec: HelperMessageSpec): HelperCallbackName {
  return spec.callbackName as HelperCallbackName
}

export interface SaveHelperParams {
  readonly mode: 'save'
  /** Our fd of the stream (becomes the helper's fd 3). */
  readonly ioFd: number
  /** Our fd of the back channel (COLO), if any (becomes the helper's fd 4). */
  readonly recvFd?: number
  readonly domid: number
  /** XCFLAGS.LIVE | XCFLAGS.DEBUG */
  readonly xcflags: number
  readonly streamType: HelperStreamType
}

export interface RestoreHelperParams {
  readonly mode: 'restore'
  readonly ioFd: number
  readonly sendBackFd?: number
  readonly domid: number
  readonly storeEvtchn: number
  readonly storeDomid: number
  readonly consoleEvtchn: number
  readonly consoleDomid: number
  readonly streamType: HelperStreamType
}

export type HelperParams = SaveHelperParams | RestoreHelperParams

export interface StartHelperOptions {
  readonly params: HelperParams
  readonly callbacks?: HelperCallbacks
  /** Default: from the callbacks present (restore always announces restore_results, as libxl). */
  readonly cbflags?: number
  /** Default: resolveHelperCommand(env). */
  readonly command?: HelperCommand
  /** The helper's environment (default process.env). */
  readonly env?: NodeJS.ProcessEnv
  /** The helper's stderr: inherited by default, as libxl does; 'pipe' collects it (up to 64 KiB). */
  readonly stderr?: ChildStdio
  /**
   * A helper started ahead (prestart.ts) for the same mode, fds and program: used instead of a
   * new process while it waits; else it is disposed of and a new one is spawned.
   */
  readonly prestarted?: PrestartedHelper
  /** How errors name the helper (default `domain <domid> save/restore helper`, as libxl). */
  readonly what?: string
  /** Aborting it aborts the helper (SIGTERM). */
  readonly signal?: AbortSignal
  /** Run the helper in a session of its own: a terminal's Ctrl-C for us does not reach it. */
  readonly ownSession?: boolean
  /** How many recent log events results and errors keep (default 20). */
  readonly keepLogs?: number
  /**
   * Pass a non-blocking stream or back channel fd (a pipe some program set O_NONBLOCK on, like our
   * stdout under oclif) as a blocking reopen of the same pipe, as Xen's helper expects (default
   * true). A socket cannot be reopened: it is passed as it is, with a warning in `run.warnings`.
   */
  readonly ensureBlocking?: boolean
  /**
   * After abort() or a failed callback (SIGTERM), how long to wait for the helper to exit before
   * SIGKILL, in ms (default 10000; Infinity: never). libxl waits for ever.
   */
  readonly killGraceMs?: number
}

/** cbflags for these callbacks, as libxl's enumcallbacks. */
export function cbflagsFor(mode: 'save' | 'restore', callbacks: HelperCallbacks = {}): number {
  let flags = 0
  for (const spec of HELPER_MESSAGES) {
    if (!spec.announced || !(mode === 'save' ? spec.save : spec.restore)) continue
    if (callbacks[handlerOf(spec)] || spec.name === 'restore_results') flags |= spec.cbflag!
  }
  return flags >>> 0
}

/** The names of the callbacks a cbflags value announces. */
export function cbflagNames(cbflags: number): HelperMessageName[] {
  return HELPER_MESSAGES.filter((s) => s.cbflag !== undefined && (cbflags & s.cbflag) !== 0).map((s) => s.name)
}

// ---------------------------------------------------------------------------------------------------
// What comes back

export interface HelperExit {
  readonly pid: number | undefined
  /** Exit status, null when killed by a signal. */
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface RestoreResults {
  readonly storeGfn: bigint
  readonly consoleGfn: bigint
}

export interface HelperOutcome {
  readonly retval: number
  readonly errnoval: number
  /** Restore only: the last restore_results. */
  readonly restoreResults?: RestoreResults
  readonly exit: HelperExit
  /** Messages received. */
  readonly messages: number
  /** The most recent log events. */
  readonly logs: readonly HelperLogEvent[]
  /** The helper's stderr when `stderr: 'pipe'`. */
  readonly stderr?: string
}

export type HelperErrorCode =
  | 'spawn' // the helper could not be started
  | 'protocol' // it broke the protocol (killed with SIGKILL)
  | 'reply' // a reply could not be written to its stdin
  | 'callback' // one of our callbacks threw or returned a non-int (helper aborted with SIGTERM)
  | 'aborted' // abort() or the AbortSignal (SIGTERM)
  | 'no-completion' // it exited without sending complete
  | 'exit-status' // it sent complete but exited with a non-zero status or a signal
  | 'no-results' // a restore helper exited without sending restore_results
  | 'failed' // complete(retval != 0, errnoval)

export class HelperError extends Error {
  override readonly name = 'HelperError'
  constructor(
    readonly code: HelperErrorCode,
    /** `domain 5 save/restore helper` */
    readonly what: string,
    detail: string,
    readonly info: {
      readonly exit?: HelperExit
      readonly retval?: number
      readonly errnoval?: number
      readonly errnoName?: string
      /** The message a violation or callback failure is about. */
      readonly message?: HelperMessageName
      readonly protocolError?: HelperProtocolError
      /** The signal we sent, if any. */
      readonly killedWith?: NodeJS.Signals
      readonly completed: boolean
      readonly restoreResults?: RestoreResults
      readonly logs: readonly HelperLogEvent[]
      readonly stderr?: string
      readonly cause?: unknown
    },
  ) {
    super(detail, info.cause === undefined ? undefined : {cause: info.cause})
  }

  get exit(): HelperExit | undefined {
    return this.info.exit
  }

  /** The last log at level error or above, which usually says why. */
  get lastError(): HelperLogEvent | undefined {
    return [...this.info.logs].reverse().find((l) => l.level >= XTL.ERROR)
  }
}

export interface HelperRun {
  readonly pid: number | undefined
  /** The whole argv: command, its arguments, then the helper's (a prestarted one got it on stdin). */
  readonly argv: readonly string[]
  /** The process was prestarted (prestart.ts) and took its argv now. */
  readonly prestarted: boolean
  /** The helper's arguments as parsed (the fds as the helper sees them). */
  readonly args: HelperArgs
  readonly cbflags: number
  /** Our fds without close-on-exec that the helper inherited besides the map (see fd-map.ts). */
  readonly strays: readonly number[]
  /** Our fds that were non-blocking and were passed as a blocking reopen of the same pipe. */
  readonly reopened: readonly number[]
  /** Things worth telling an operator (a non-blocking fd that could not be made blocking). */
  readonly warnings: readonly string[]
  /** Resolves on success; rejects with HelperError. */
  readonly done: Promise<HelperOutcome>
  /** libxl__save_helper_abort: SIGTERM, unless the helper has exited already. */
  abort(): void
}

// ---------------------------------------------------------------------------------------------------

const SIGNAL_TEXT: Partial<Record<NodeJS.Signals, string>> = {
  SIGHUP: 'Hangup',
  SIGINT: 'Interrupt',
  SIGQUIT: 'Quit',
  SIGILL: 'Illegal instruction',
  SIGABRT: 'Aborted',
  SIGBUS: 'Bus error',
  SIGFPE: 'Floating point exception',
  SIGKILL: 'Killed',
  SIGSEGV: 'Segmentation fault',
  SIGPIPE: 'Broken pipe',
  SIGTERM: 'Terminated',
}

/** As libxl_report_child_exitstatus words it. */
export function describeExit(exit: HelperExit): string {
  const pid = exit.pid === undefined ? '' : ` [${exit.pid}]`
  if (exit.signal) return `${pid.trim()} died due to fatal signal ${SIGNAL_TEXT[exit.signal] ?? exit.signal} (${exit.signal})`.trim()
  if (exit.code) return `${pid.trim()} exited with error status ${exit.code}`.trim()
  return `${pid.trim()} exited with status 0`.trim()
}

let errnoMap: Map<number, [string, string]> | undefined

/** `ENOENT` for 2, undefined for 0 or an unknown number. */
export function errnoName(errnoval: number): string | undefined {
  if (!errnoval) return undefined
  errnoMap ??= util.getSystemErrorMap()
  return errnoMap.get(-Math.abs(errnoval))?.[0]
}

function errnoText(errnoval: number): string {
  errnoMap ??= util.getSystemErrorMap()
  const e = errnoMap.get(-Math.abs(errnoval))
  return e ? `${e[0]}: ${e[1]}` : `errno ${errnoval}`
}

const MAX_STDERR = 64 * 1024

/** Spawns the helper and starts talking to it. */
export function startHelper(opts: StartHelperOptions): HelperRun {
  return new Session(opts).run
}

/** startHelper(opts).done */
export function runHelper(opts: StartHelperOptions): Promise<HelperOutcome> {
  return startHelper(opts).done
}

function checkCbflags(mode: 'save' | 'restore', cbflags: number, callbacks: HelperCallbacks): void {
  const allowed = mode === 'save' ? SAVE_CBFLAGS : RESTORE_CBFLAGS
  if (!Number.isInteger(cbflags) || cbflags < 0 || (cbflags & ~allowed) !== 0) {
    throw new RangeError(`cbflags 0x${cbflags.toString(16)} has bits a ${mode} helper does not know (allowed 0x${allowed.toString(16)})`)
  }
  for (const name of cbflagNames(cbflags)) {
    if (name === 'restore_results') continue
    const handler = handlerOf(helperMessageSpec(name))
    if (!callbacks[handler]) throw new TypeError(`cbflags announce ${name} but no ${handler} callback is given`)
  }
}

class Session {
  readonly run: HelperRun
  readonly #opts: StartHelperOptions
  readonly #mode: 'save' | 'restore'
  readonly #what: string
  readonly #callbacks: HelperCallbacks
  readonly #cbflags: number
  readonly #keepLogs: number
  readonly #decoder = new HelperMessageDecoder()
  readonly #queue: DecodedHelperMessage[] = []
  readonly #logs: HelperLogEvent[] = []
  #lastError: HelperLogEvent | undefined
  #child: ChildProcess | undefined
  #resolve!: (o: HelperOutcome) => void
  #reject!: (e: HelperError) => void
  #busy = false
  /** The message whose reply is owed and not yet being written. */
  #owed: HelperMessageName | undefined
  #completed: {retval: number; errnoval: number} | undefined
  #results: RestoreResults | undefined
  #exit: HelperExit | undefined
  #stdoutEnded = false
  #truncated: HelperProtocolError | undefined
  #finished = false
  #killedWith: NodeJS.Signals | undefined
  #spawnError: unknown
  #failure: {code: 'protocol' | 'reply' | 'callback' | 'aborted'; detail: string; message?: HelperMessageName; cause?: unknown} | undefined
  /** No more messages are handled (after a violation, a reply that failed, a callback that failed). */
  #stopped = false
  #graceTimer: NodeJS.Timeout | undefined
  #stderr: Buffer[] = []
  #stderrBytes = 0
  #exitTimer: NodeJS.Timeout | undefined
  #unlisten: (() => void) | undefined
  readonly #warnings: string[] = []

  constructor(opts: StartHelperOptions) {
    this.#opts = opts
    const p = opts.params
    this.#mode = p.mode
    this.#what = opts.what ?? `domain ${p.domid} save/restore helper`
    this.#callbacks = opts.callbacks ?? {}
    this.#cbflags = opts.cbflags ?? cbflagsFor(p.mode, this.#callbacks)
    checkCbflags(p.mode, this.#cbflags, this.#callbacks)
    if (os.endianness() !== 'LE') {
      // The protocol is in host byte order; the codecs write little-endian.
      throw new Error('the save/restore helper protocol is implemented for little-endian hosts only')
    }
    this.#keepLogs = Math.max(1, opts.keepLogs ?? 20)
    const command = opts.command ?? resolveHelperCommand(opts.env ?? process.env)

    const back = p.mode === 'save' ? p.recvFd : p.sendBackFd
    const ours = back === undefined || back < 0 ? [p.ioFd] : [p.ioFd, back]
    let args: HelperArgs | undefined
    const helperArgv = (childFds: readonly number[]): string[] => {
      const ioFd = childFds[0]!
      const backFd = childFds[1] ?? -1
      args =
        p.mode === 'save'
          ? {mode: 'save', ioFd, recvFd: backFd, domid: p.domid, xcflags: p.xcflags, cbflags: this.#cbflags, streamType: p.streamType}
          : {
              mode: 'restore',
              ioFd,
              sendBackFd: backFd,
              domid: p.domid,
              storeEvtchn: p.storeEvtchn,
              storeDomid: p.storeDomid,
              consoleEvtchn: p.consoleEvtchn,
              consoleDomid: p.consoleDomid,
              cbflags: this.#cbflags,
              streamType: p.streamType,
            }
      return buildHelperArgv(args)
    }
    const done = new Promise<HelperOutcome>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    // A helper prestarted for these fds takes its argv now; else (none, or it died) one is spawned
    // with it, Xen's helper expecting blocking fds (see blockingForHelper).
    const want = {mode: p.mode, ioFd: p.ioFd, ...(back !== undefined ? {backFd: back} : {}), file: command.file, args: command.args, ...(opts.env ? {env: opts.env} : {}), ...(opts.stderr ? {stderr: opts.stderr} : {}), ...(opts.ownSession ? {ownSession: true} : {})}
    const spawned =
      opts.prestarted?.take(want, helperArgv) ??
      spawnHelperProcess(
        {
          file: command.file,
          fds: ours,
          ...(opts.env ? {env: opts.env} : {}),
          ...(opts.stderr ? {stderr: opts.stderr} : {}),
          ...(opts.ownSession ? {ownSession: true} : {}),
          ...(opts.ensureBlocking !== undefined ? {ensureBlocking: opts.ensureBlocking} : {}),
        },
        (fds) => [...command.args, ...helperArgv(fds)],
      )
    this.#warnings.push(...spawned.warnings)
    const child = spawned.child
    this.#child = child
    const self = this
    this.run = {
      pid: child.pid,
      argv: [command.file, ...command.args, ...buildHelperArgv(args!)],
      prestarted: opts.prestarted !== undefined && opts.prestarted.pid === child.pid,
      args: args!,
      cbflags: this.#cbflags,
      strays: spawned.strays,
      reopened: spawned.reopened,
      warnings: this.#warnings,
      done,
      abort: () => self.#abort(),
    }
    this.#wire(child)
    const signal = opts.signal
    if (signal) {
      if (signal.aborted) this.#abort()
      else {
        const onAbort = (): void => this.#abort()
        signal.addEventListener('abort', onAbort, {once: true})
        this.#unlisten = () => signal.removeEventListener('abort', onAbort)
      }
    }
  }

  #wire(child: ChildProcess): void {
    child.once('error', (err) => {
      if (child.pid === undefined) {
        this.#spawnError = err
        this.#finish()
      }
    })
    child.once('exit', (code, signal) => {
      this.#exit = {pid: child.pid, code, signal}
      // stdout normally ends with the exit; if something else still holds it, stop waiting.
      this.#exitTimer = setTimeout(() => {
        if (!this.#stdoutEnded) {
          child.stdout?.destroy()
          this.#stdoutEnded = true
          this.#maybeFinish()
        }
      }, 2000)
      this.#maybeFinish()
    })
    child.stdin?.on('error', () => {
      // reported through the reply's write callback
    })
    child.stdout?.on('data', (chunk: Buffer) => this.#onData(chunk))
    child.stdout?.once('end', () => this.#onEnd())
    child.stdout?.once('close', () => this.#onEnd())
    child.stderr?.on('data', (chunk: Buffer) => {
      if (this.#stderrBytes >= MAX_STDERR) return
      const part = chunk.subarray(0, MAX_STDERR - this.#stderrBytes)
      this.#stderr.push(part)
      this.#stderrBytes += part.length
    })
  }

  #onData(chunk: Buffer): void {
    if (this.#stopped || this.#finished) return
    if (this.#owed) {
      this.#violation(`wrote ${chunk.length} more bytes while the reply to ${this.#owed} was owed`, this.#owed)
      return
    }
    let decoded: DecodedHelperMessage[]
    try {
      decoded = this.#decoder.push(chunk)
    } catch (err) {
      this.#violation(err instanceof Error ? err.message : String(err), undefined, err)
      return
    }
    if (decoded.length === 0) return
    this.#queue.push(...decoded)
    void this.#pump()
  }

  #onEnd(): void {
    if (this.#stdoutEnded) return
    this.#stdoutEnded = true
    try {
      this.#decoder.end()
    } catch (err) {
      if (err instanceof HelperProtocolError && err.code === 'truncated-frame') this.#truncated = err
    }
    this.#maybeFinish()
  }

  async #pump(): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      while (this.#queue.length > 0 && !this.#stopped && !this.#finished) {
        await this.#handle(this.#queue.shift()!)
      }
    } finally {
      this.#busy = false
    }
    this.#maybeFinish()
  }

  async #handle(d: DecodedHelperMessage): Promise<void> {
    const m = d.message
    const spec = helperMessageSpec(m.type)
    if (this.#completed) {
      this.#violation(`sent ${m.type} (message #${d.index}) after complete`, m.type)
      return
    }
    if (!(this.#mode === 'save' ? spec.save : spec.restore)) {
      this.#violation(`sent ${m.type} (message #${d.index}), which a ${this.#mode} helper never sends`, m.type)
      return
    }
    // restore_results is sent by the helper's main() itself after xc_domain_restore, announced or not.
    if (spec.announced && m.type !== 'restore_results' && (this.#cbflags & spec.cbflag!) === 0) {
      this.#violation(
        `sent ${m.type} (message #${d.index}), a callback cbflags 0x${this.#cbflags.toString(16)} did not announce`,
        m.type,
      )
      return
    }
    if (spec.reply !== 'none' && this.#queue.length > 0) {
      this.#violation(`sent more messages after ${m.type} (message #${d.index}) without waiting for its reply`, m.type)
      return
    }
    switch (m.type) {
      case 'log':
        this.#log(m)
        return
      case 'progress':
        this.#guard('progress', 'onProgress', () =>
          this.#callbacks.onProgress?.({context: m.context, doingWhat: m.doingWhat, done: m.done, total: m.total}),
        )
        return
      case 'restore_results':
        this.#results = {storeGfn: m.storeGfn, consoleGfn: m.consoleGfn}
        break
      case 'complete':
        this.#completed = {retval: m.retval, errnoval: m.errnoval}
        this.#owed = 'complete'
        // libxl's complete callback returns 0.
        await this.#reply(0, 'complete')
        return
    }
    // The rest are callbacks: the table says whether the helper waits for an answer.
    if (spec.reply === 'none') this.#guard(m.type, handlerOf(spec), () => this.#handler(spec)?.(...callbackArgs(m)))
    else await this.#callback(m, spec)
  }

  /** The caller's callback for a callback message, when it gave one. */
  #handler(spec: HelperMessageSpec): ((...args: unknown[]) => CallbackReply | void) | undefined {
    return this.#callbacks[handlerOf(spec)] as ((...args: unknown[]) => CallbackReply | void) | undefined
  }

  #log(m: Extract<HelperMessage, {type: 'log'}>): void {
    const name = errnoName(m.errnoval)
    const event: HelperLogEvent = {
      level: m.level,
      levelName: xtlLevelName(m.level),
      errnoval: m.errnoval,
      ...(name ? {errnoName: name} : {}),
      context: m.context,
      message: m.formatted,
    }
    this.#logs.push(event)
    if (this.#logs.length > this.#keepLogs) this.#logs.shift()
    if (event.level >= XTL.ERROR) this.#lastError = event
    this.#guard('log', 'onLog', () => this.#callbacks.onLog?.(event))
  }

  /** Runs a callback that returns nothing; a throw aborts the helper. */
  #guard(message: HelperMessageName, callback: string, f: () => void): void {
    try {
      f()
    } catch (err) {
      this.#callbackFailed(message, err, callback)
    }
  }

  /** A callback that needs a reply: announced in cbflags, so given (checkCbflags). */
  async #callback(m: HelperMessage, spec: HelperMessageSpec): Promise<void> {
    this.#owed = m.type
    let value: unknown
    try {
      value = await this.#handler(spec)!(...callbackArgs(m))
    } catch (err) {
      this.#owed = undefined
      this.#callbackFailed(m.type, err)
      return
    }
    if (this.#stopped || this.#finished || this.#exit) {
      this.#owed = undefined
      return
    }
    if (typeof value !== 'number' || !Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
      this.#owed = undefined
      this.#callbackFailed(m.type, new TypeError(`returned ${String(value)}, not an int`))
      return
    }
    await this.#reply(value, m.type)
  }

  #reply(value: number, name: HelperMessageName): Promise<void> {
    const stdin = this.#child?.stdin
    // From here on the helper may answer: bytes that come now are legitimate.
    this.#owed = undefined
    if (!stdin || stdin.destroyed) {
      this.#replyFailed(name, new Error('stdin is closed'))
      return Promise.resolve()
    }
    return new Promise((resolve) => {
      stdin.write(encodeHelperReply(value), (err) => {
        if (err) this.#replyFailed(name, err)
        resolve()
      })
    })
  }

  #replyFailed(name: HelperMessageName, err: unknown): void {
    if (this.#stopped) return
    // A helper that has died cannot read; its exit says more than our EPIPE.
    if (this.#exit) return
    this.#stop()
    this.#failure = {code: 'reply', detail: `cannot write the reply to ${name}: ${(err as Error).message ?? String(err)}`, message: name, cause: err}
    this.#kill('SIGKILL')
  }

  /**
   * One of our callbacks failed: the helper waits for an answer that will not come. Close its stdin
   * (a helper blocked reading the reply sees EOF: Xen's exits -2) and SIGTERM it, SIGKILL after the
   * grace period.
   */
  #callbackFailed(name: HelperMessageName, err: unknown, callback: string = name): void {
    if (this.#stopped) return
    this.#stop()
    const why = err instanceof Error ? err.message : String(err)
    this.#failure = {code: 'callback', detail: `the ${callback} callback failed: ${why}`, message: name, cause: err}
    this.#child?.stdin?.destroy()
    this.#terminate()
  }

  #violation(detail: string, message?: HelperMessageName, cause?: unknown): void {
    if (this.#stopped) return
    this.#stop()
    this.#failure = {code: 'protocol', detail, ...(message ? {message} : {}), ...(cause ? {cause} : {})}
    this.#kill('SIGKILL')
  }

  #stop(): void {
    this.#stopped = true
    this.#queue.length = 0
    this.#owed = undefined
  }

  /**
   * libxl__save_helper_abort: SIGTERM. Messages are still served (a save helper cleans up, may call
   * back, and reports complete) until it exits; SIGKILL if it has not after the grace period.
   */
  #abort(): void {
    if (this.#finished || this.#exit || this.#failure) return
    this.#failure = {code: 'aborted', detail: 'aborted'}
    this.#terminate()
  }

  #terminate(): void {
    this.#kill('SIGTERM')
    const grace = this.#opts.killGraceMs ?? 10_000
    if (!this.#graceTimer && Number.isFinite(grace)) {
      this.#graceTimer = setTimeout(() => this.#kill('SIGKILL'), grace)
      this.#graceTimer.unref()
    }
  }

  #kill(signal: NodeJS.Signals): void {
    const child = this.#child
    if (!child || this.#exit || child.pid === undefined) return
    this.#killedWith ??= signal
    if (signal === 'SIGKILL') this.#killedWith = signal
    child.kill(signal)
  }

  #maybeFinish(): void {
    if (this.#finished) return
    if (this.#spawnError !== undefined) {
      this.#finish()
      return
    }
    if (!this.#exit || !this.#stdoutEnded) return
    // Still working through messages: wait, unless stuck in one of our callbacks (the helper that
    // asked is gone; its answer is of no use now).
    if (this.#busy && !this.#owed) return
    this.#finish()
  }

  #finish(): void {
    if (this.#finished) return
    this.#finished = true
    if (this.#exitTimer) clearTimeout(this.#exitTimer)
    if (this.#graceTimer) clearTimeout(this.#graceTimer)
    this.#unlisten?.()
    this.#child?.stdin?.destroy()
    const outcome = this.#outcome()
    if (outcome instanceof HelperError) this.#reject(outcome)
    else this.#resolve(outcome)
  }

  #outcome(): HelperOutcome | HelperError {
    const what = this.#what
    const logs = [...this.#logs]
    if (this.#lastError && !logs.includes(this.#lastError)) logs.unshift(this.#lastError)
    const stderr = this.#stderr.length ? Buffer.concat(this.#stderr).toString('utf8') : undefined
    const base = {
      completed: this.#completed !== undefined,
      logs,
      ...(this.#exit ? {exit: this.#exit} : {}),
      ...(this.#results ? {restoreResults: this.#results} : {}),
      ...(this.#killedWith ? {killedWith: this.#killedWith} : {}),
      ...(stderr !== undefined ? {stderr} : {}),
      ...(this.#completed ? {retval: this.#completed.retval, errnoval: this.#completed.errnoval} : {}),
    }
    const exitText = this.#exit ? describeExit(this.#exit) : ''
    const last = this.#lastError ? `; last error: ${formatLog(this.#lastError)}` : ''
    const err = (code: HelperErrorCode, detail: string, extra: Partial<HelperError['info']> = {}): HelperError =>
      new HelperError(code, what, detail, {...base, ...extra})

    if (this.#spawnError !== undefined) {
      const e = this.#spawnError as NodeJS.ErrnoException
      const cmd = this.run ? this.run.argv[0] : '?'
      return err('spawn', `cannot run ${what} (${cmd}): ${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' '), {cause: e})
    }
    const f = this.#failure
    if (f) {
      const extra = {...(f.message ? {message: f.message} : {}), ...(f.cause !== undefined ? {cause: f.cause} : {})}
      const protocolError = f.cause instanceof HelperProtocolError ? {protocolError: f.cause} : {}
      switch (f.code) {
        case 'protocol':
          return err('protocol', `${what} broke the protocol: ${f.detail}; killed it with SIGKILL (${exitText})`, {...extra, ...protocolError})
        case 'reply':
          return err('reply', `${what}: ${f.detail}; killed it with SIGKILL (${exitText})`, extra)
        case 'callback':
          return err('callback', `${what}: ${f.detail}; aborted it with ${this.#killedWith ?? 'SIGTERM'} (${exitText})`, extra)
        case 'aborted': {
          const c = this.#completed
          const said = c ? `; it completed with retval ${c.retval}${c.errnoval ? `, errno ${errnoText(c.errnoval)}` : ''}` : ''
          return err('aborted', `${what} aborted with ${this.#killedWith ?? 'SIGTERM'} (${exitText})${said}`, extra)
        }
      }
    }
    const exit = this.#exit!
    const c = this.#completed
    if (!c) {
      const cut = this.#truncated ? `; its output ended inside a message (${this.#truncated.detail})` : ''
      return err('no-completion', `${what} exited without signaling completion (${exitText})${cut}${last}`)
    }
    if (exit.code !== 0 || exit.signal) {
      return err('exit-status', `${what} ${exitText} after signaling completion (retval ${c.retval})${last}`)
    }
    if (this.#mode === 'restore' && !this.#results) {
      return err('no-results', `${what} exited without providing results${last}`)
    }
    if (c.retval !== 0) {
      const name = errnoName(c.errnoval)
      return err(
        'failed',
        `${what} reported failure: retval ${c.retval}, errno ${c.errnoval}${c.errnoval ? ` (${errnoText(c.errnoval)})` : ''}${last}`,
        name ? {errnoName: name} : {},
      )
    }
    return {
      retval: c.retval,
      errnoval: c.errnoval,
      ...(this.#results ? {restoreResults: this.#results} : {}),
      exit,
      messages: this.#decoder.count,
      logs,
      ...(stderr !== undefined ? {stderr} : {}),
    }
  }
}

/** A message's arguments as its callback takes them: in table order, switch_qemu_logdirty's `enable` as a boolean. */
function callbackArgs(m: HelperMessage): unknown[] {
  return m.type === 'switch_qemu_logdirty' ? [m.domid, m.enable !== 0] : helperMessageValues(m)
}

/** One log event as a line: `libxl-save-helper: xc_interface_open failed (ENOENT)`. */
export function formatLog(e: HelperLogEvent): string {
  const errno = e.errnoval ? ` (${e.errnoName ?? `errno ${e.errnoval}`})` : ''
  return `${e.context}: ${e.message}${errno}`
}
