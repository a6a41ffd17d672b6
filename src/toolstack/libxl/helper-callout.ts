/**
 * Running the save/restore helper for the sender and the receiver: the fd map and argv come from
 * helper/ (startHelper); this adds what both sides want around it: events for its logs and
 * progress, its stderr kept (a Node helper that crashes prints a stack there, which must not reach
 * the operator's terminal as is), and one MigrateError, worded from the helper's last error, when
 * it fails.
 */
import {
  HelperError,
  startHelper,
  type HelperCallbacks,
  type HelperCommand,
  type HelperOutcome,
  type HelperParams,
  type PrestartedHelper,
} from '../helper/index.js'
import {MigrateError, type MigrateErrorInfo} from './errors.js'
import type {MigrateEventHandler} from './events.js'

export interface RunHelperOptions {
  readonly params: HelperParams
  readonly callbacks: HelperCallbacks
  readonly env: NodeJS.ProcessEnv
  readonly onEvent?: MigrateEventHandler
  readonly signal?: AbortSignal
  readonly command?: HelperCommand
  /** Run the helper in a session of its own (Remus: a Ctrl-C for us must not kill it). */
  readonly ownSession?: boolean
  /** A helper started ahead for this run (prestart.ts), used if it still waits. */
  readonly prestarted?: PrestartedHelper
}

export interface HelperRunResult {
  readonly outcome: HelperOutcome
  readonly ms: number
}

export async function runStreamHelper(opts: RunHelperOptions): Promise<HelperRunResult> {
  const mode = opts.params.mode
  const emit = opts.onEvent
  const callbacks: HelperCallbacks = {
    ...opts.callbacks,
    onLog: (log) => emit?.({kind: 'helper-log', log}),
    onProgress: (progress) => emit?.({kind: 'helper-progress', progress}),
  }
  const started = performance.now()
  let run
  try {
    run = startHelper({
      params: opts.params,
      callbacks,
      env: opts.env,
      stderr: 'pipe',
      what: `domain ${opts.params.domid} ${mode} helper`,
      ...(opts.signal ? {signal: opts.signal} : {}),
      ...(opts.command ? {command: opts.command} : {}),
      ...(opts.ownSession ? {ownSession: true} : {}),
      ...(opts.prestarted ? {prestarted: opts.prestarted} : {}),
    })
  } catch (err) {
    throw helperFailure(err, mode)
  }
  emit?.({kind: 'helper-started', mode, pid: run.pid, argv: run.argv, prestarted: run.prestarted})
  try {
    const outcome = await run.done
    return {outcome, ms: performance.now() - started}
  } catch (err) {
    throw helperFailure(err, mode)
  }
}

/** The last line of what the helper wrote on stderr, if anything. */
function lastStderrLine(stderr: string | undefined): string | undefined {
  const lines = (stderr ?? '').split('\n').map((l) => l.trim()).filter(Boolean)
  // A Node stack trace: the line naming the error is the useful one.
  const named = lines.find((l) => /^[A-Za-z]*Error\b|^Error:/.test(l))
  return named ?? lines[lines.length - 1]
}

/** One line: the helper's own last error first (it names the record and offset), then who failed. */
export function helperFailure(err: unknown, mode: 'save' | 'restore', extra: MigrateErrorInfo = {}): MigrateError {
  if (err instanceof MigrateError) return err
  if (!(err instanceof HelperError)) {
    const why = err instanceof Error ? err.message : String(err)
    return new MigrateError('helper', 'libxc stream', `cannot run the ${mode} helper: ${why}`, {cause: err, ...extra})
  }
  const last = err.lastError
  const stderr = last ? undefined : lastStderrLine(err.info.stderr)
  let message: string
  if (last) {
    const errno = last.errnoval ? ` (${last.errnoName ?? `errno ${last.errnoval}`})` : ''
    message = `${last.message}${errno} (${err.what}: ${summary(err)})`
  } else {
    message = `${err.message}${stderr ? `; its stderr: ${stderr}` : ''}`
  }
  return new MigrateError('helper', 'libxc stream', message, {cause: err, helper: err, ...extra})
}

function summary(err: HelperError): string {
  switch (err.code) {
    case 'failed':
      return `retval ${err.info.retval ?? '?'}`
    case 'no-completion':
      return 'exited without signaling completion'
    default:
      return err.code
  }
}
