/**
 * The one place where an error becomes output: one line on stderr and xl's exit status. Commands
 * throw; they never print an error themselves. xl's own message is used where xl has one (the
 * command raises an XlExit with it); everything else reads `xl-ts: <command>: <why>`.
 */
import {Errors} from '@oclif/core'

import {ConfigError} from '../toolstack/config/index.js'
import {HypervisorError, type HypervisorErrorCode} from '../toolstack/hypervisor/errors.js'
import {StreamError} from '../toolstack/stream/index.js'

/** xl's exit statuses. */
export const EXIT_SUCCESS = 0
export const EXIT_FAILURE = 1
/** def_getopt (xl_utils.c): an unknown option or too few arguments. */
export const EXIT_USAGE = 2

/** libxl error codes (libxl_types.idl, libxl_error), as xl prints them in `(rc=N)`. */
export const LIBXL = {
  ERROR_FAIL: -3,
  ERROR_NI: -4,
  ERROR_INVAL: -6,
  ERROR_DOMAIN_NOTFOUND: -21,
} as const

/** A failure with xl's message and exit status, already worded for the operator. */
export class XlExit extends Error {
  override readonly name = 'XlExit'
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message)
  }
}

/** Bad usage: an unknown option, a missing or extra argument, a bad option value. Exit status 2. */
export class UsageError extends XlExit {
  constructor(message: string) {
    super(message, EXIT_USAGE)
  }
}

/** The libxl error code of a hypervisor port error: the one it carries, else one for its code. */
export function libxlRc(err: HypervisorError): number {
  if (err.rc !== undefined) return err.rc
  const rc: Record<HypervisorErrorCode, number> = {
    'no-such-domain': LIBXL.ERROR_DOMAIN_NOTFOUND,
    'name-in-use': LIBXL.ERROR_INVAL,
    'bad-state': LIBXL.ERROR_FAIL,
    'not-supported': LIBXL.ERROR_NI,
    'backend-failure': LIBXL.ERROR_FAIL,
    'bad-request': LIBXL.ERROR_INVAL,
  }
  return rc[err.code]
}

/** Config errors xlu_cfg_readdata reports: xl then says "Failed to parse config: Invalid argument". */
const PARSE_CODES = new Set<ConfigError['code']>(['lexical', 'syntax', 'unterminated', 'bad-escape', 'bad-append'])

export interface RenderedError {
  /** The line for stderr, without its newline; empty when there is nothing to say (an explicit exit). */
  line: string
  exitCode: number
  /** Set for errors nobody expected: the stack trace, printed only with XL_TS_DEBUG=1. */
  stack?: string
}

export interface RenderContext {
  /** The command as typed, e.g. `create` or `sim checksum`. */
  command: string
  /** Exit status of a failure that has no better one (create returns -ERROR_FAIL = 3, as xl does). */
  failureExit?: number
}

/** Makes any text a single line. */
export function oneLine(text: string): string {
  return text
    .split('\n')
    .map(s => s.trim())
    .filter(s => s.length > 0)
    .join(' ')
}

export function renderError(err: unknown, ctx: RenderContext): RenderedError {
  const prefix = `xl-ts: ${ctx.command}:`
  const failureExit = ctx.failureExit ?? EXIT_FAILURE
  if (err instanceof XlExit) return {line: oneLine(err.message), exitCode: err.exitCode}
  if (err instanceof ConfigError) {
    const line = PARSE_CODES.has(err.code) ? `${err.message} (Failed to parse config: Invalid argument)` : err.message
    return {line: oneLine(line), exitCode: EXIT_FAILURE}
  }
  if (err instanceof HypervisorError) return {line: oneLine(`${prefix} ${err.message}`), exitCode: failureExit}
  if (err instanceof StreamError) return {line: oneLine(`${prefix} ${err.message}`), exitCode: EXIT_FAILURE}
  if (err instanceof Errors.ExitError) return {line: '', exitCode: err.oclif.exit ?? EXIT_FAILURE}
  if (err instanceof Errors.CLIError) {
    // oclif's own errors: parse errors are turned into UsageErrors before they get here.
    return {line: oneLine(`${prefix} ${stripOclif(err.message)}`), exitCode: err.oclif.exit ?? EXIT_FAILURE}
  }
  const why = err instanceof Error ? err.message || err.name : String(err)
  return {
    line: `${prefix} ${oneLine(why)} (run with XL_TS_DEBUG=1 for a stack trace)`,
    exitCode: EXIT_FAILURE,
    stack: err instanceof Error ? err.stack ?? String(err) : String(err),
  }
}

/** oclif's messages end with "See more help with --help"; one line does not need it. */
export function stripOclif(message: string): string {
  return oneLine(message.replace(/\n?See more help with --help\s*$/, ''))
}

/** True when XL_TS_DEBUG asks for stack traces. */
export function debugEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.XL_TS_DEBUG
  return v !== undefined && v !== '' && v !== '0'
}

/** Prints a rendered error: the line, and with XL_TS_DEBUG=1 the stack of an unexpected error. */
export function printError(r: RenderedError): void {
  if (r.line) process.stderr.write(`${r.line}\n`)
  if (r.stack !== undefined && debugEnabled()) process.stderr.write(`${r.stack}\n`)
}
