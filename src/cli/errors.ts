/**
 * The one place where an error becomes output: one line on stderr and xl's exit status. Commands
 * throw; they never print an error themselves. xl's own message is used where xl has one (the
 * command raises an XlExit with it); everything else reads `xl-ts: <command>: <why>`.
 *
 * Where there is something useful to do about a failure, a second line says it:
 * `xl-ts: hint: <what to do>` (the hint table, HINTS, below). The first line stays exactly what it
 * is, xl's words included, so a script matching xl's messages still finds them on the first line.
 */
import {Errors} from '@oclif/core'

import {ConfigError} from '../toolstack/config/index.js'
import {QEMU_ENV} from '../toolstack/device-model/index.js'
import {DeviceModelError} from '../toolstack/device-model/index.js'
import {HypervisorError, type HypervisorErrorCode} from '../toolstack/hypervisor/index.js'
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
  /** What to do about it (printed as `xl-ts: hint: ...` after the line); absent when there is nothing useful to say. */
  hint?: string
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
  const r = renderLine(err, ctx)
  if (!r.line || r.stack !== undefined) return r
  const kind = hintKind(err, r.exitCode)
  return kind ? {...r, hint: HINTS[kind]({command: ctx.command, err})} : r
}

function renderLine(err: unknown, ctx: RenderContext): RenderedError {
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

// ---- hints ------------------------------------------------------------------------------------

/** The failures a hint is given for. Nothing else gets one: a hint that says nothing new is noise. */
export type HintKind =
  /** Bad usage (exit status 2): an unknown option, a missing or extra argument, a bad value. */
  | 'usage'
  /** A domain that is not on this host (by name or id). */
  | 'unknown-domain'
  /** The simulated host's state folder cannot be used: too long for its sockets, not a folder, not ours. */
  | 'host-folder'
  /** The xen back end was chosen (or is the default: /dev/xen/privcmd exists) and is not there. */
  | 'no-xen'
  /** A config file or key=value setting xl.cfg's parser rejects (file:line:column in the line). */
  | 'config-syntax'
  /** A device model was needed and there is no QEMU to start. */
  | 'no-qemu'

export interface HintContext {
  /** The command as typed (`create`, `sim checksum`), or `xl-ts` before one was known. */
  readonly command: string
  readonly err: unknown
}

/** The hint table: what to do, per kind. Printed as `xl-ts: hint: <text>` after the error line. */
export const HINTS: {readonly [K in HintKind]: (ctx: HintContext) => string} = {
  usage: ({command}) => `see '${command === 'xl-ts' ? 'xl-ts' : `xl-ts ${command}`} --help'`,
  'unknown-domain': () => "'xl-ts list' shows the domains on this host",
  'host-folder': () => 'pick another state folder for the simulated host, short and writable: --root DIR or XL_TS_ROOT=DIR (e.g. /tmp/xl-ts-a; one folder is one host)',
  'no-xen': () => 'XL_TS_BACKEND=sim (or --backend sim) runs on a simulated host; without either, xl-ts picks it wherever /dev/xen/privcmd is missing',
  'config-syntax': ({err}) => configHint(err as ConfigError),
  'no-qemu': () => `install qemu-system-x86 (bash scripts/setup), or set ${QEMU_ENV} to a qemu-system-x86_64`,
}

function configHint(err: ConfigError): string {
  const syntax = 'strings in quotes (name="vm1"), lists in [ ... ]'
  if (err.file === 'command line') return `key=value setting ${err.line}, column ${err.column}: each is an xl.cfg line: ${syntax}`
  return `fix ${err.file} at line ${err.line}, column ${err.column}: xl.cfg is KEY = VALUE, one a line (or ;), ${syntax}`
}

/** Kinds given by the code that knows what failed (a domain lookup, choosing the host). */
const givenKinds = new WeakMap<object, HintKind>()

/** Marks an error as one of a kind, for its hint; returns it (`throw withHint(err, 'unknown-domain')`). */
export function withHint<E>(err: E, kind: HintKind): E {
  if (typeof err === 'object' && err !== null) givenKinds.set(err, kind)
  return err
}

/**
 * Marks an error from choosing the host (createHypervisor): the xen back end that is not there, or
 * else the simulated host's state folder.
 */
export function hostError<E>(err: E): E {
  if (err instanceof HypervisorError && err.code === 'not-supported') return withHint(err, 'no-xen')
  if (err instanceof HypervisorError) return withHint(err, 'host-folder')
  return err
}

/**
 * xl's own words for an unknown domain where a command says so itself (domid, domname), rather
 * than through XlCommand.findDomain (which marks its errors).
 */
const UNKNOWN_DOMAIN_WORDS = [
  /^Can't get domid of domain name '.*', maybe this domain does not exist\.$/,
  /^Can't get domain name of domain id '.*', maybe this domain does not exist\.$/,
  // domname given a name: it takes ids, which list shows.
  /^Invalid domain id\.$/,
]

/** A device model's start failure as the sim domain process reports it (as text: the class stays behind). */
const NO_QEMU_WORDS = [new RegExp(`cannot start the device model: .* not found \\(PATH or ${QEMU_ENV}\\)`), /cannot start the device model: cannot start .*ENOENT/]

/** Which hint, if any, a failure gets. */
export function hintKind(err: unknown, exitCode: number): HintKind | undefined {
  if (typeof err === 'object' && err !== null) {
    const given = givenKinds.get(err)
    if (given) return given
  }
  if (exitCode === EXIT_USAGE) return 'usage'
  if (err instanceof ConfigError) return PARSE_CODES.has(err.code) && err.line > 0 ? 'config-syntax' : undefined
  if (err instanceof DeviceModelError) {
    const enoent = (err.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
    return err.code === 'not-found' || (err.code === 'spawn' && enoent) ? 'no-qemu' : undefined
  }
  if (err instanceof HypervisorError) {
    if (err.code === 'no-such-domain') return 'unknown-domain'
    if (NO_QEMU_WORDS.some(re => re.test(err.message))) return 'no-qemu'
    return undefined
  }
  if (err instanceof XlExit && UNKNOWN_DOMAIN_WORDS.some(re => re.test(err.message))) return 'unknown-domain'
  return undefined
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

/** Prints a rendered error: the line, its hint, and with XL_TS_DEBUG=1 the stack of an unexpected error. */
export function printError(r: RenderedError): void {
  if (r.line) process.stderr.write(r.hint === undefined ? `${r.line}\n` : `${r.line}\nxl-ts: hint: ${r.hint}\n`)
  if (r.stack !== undefined && debugEnabled()) process.stderr.write(`${r.stack}\n`)
}
