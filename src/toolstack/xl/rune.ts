/**
 * The command the sender runs to reach the receiver (XEN-FACTS §1.6): xl's "rune", run by `sh -c`.
 *
 *     exec <ssh> <host> xl-ts[ -t][ -T][ -v...] migrate-receive[ -e][ -d][ -p]
 *
 * `<ssh>` is the `-s` value as it is (a shell command by design: `ssh -p 2222 -i key`). Unlike xl,
 * everything else that goes in is single-quoted, so that a host name can never become shell:
 * `exec ssh 'host$(x)' ...` hands ssh the literal name. ssh joins the remote words with spaces and
 * the remote shell parses them again, so the remote words are quoted twice: once for our `sh -c`
 * and once for the remote shell (they are fixed option words today; the quoting keeps it safe if a
 * value ever goes along). A host that starts with `-` would be read by ssh as an option
 * (`-oProxyCommand=...`): it is refused. The domain name never goes into the rune.
 *
 * With `-s ''` the rune is `<host>` itself, run by `sh -c` (xl's way to reach a receiver without
 * ssh; tests use it to run `migrate-receive` on a second simulated host or in a network namespace):
 * there the host string is a shell command by the operator's choice and is not quoted.
 */
import {hasTieBreaker, type TieBreakerSpec} from './tie-breaker.js'

/** The receiving program's name on the remote host (xl uses `xl`). */
export const RECEIVER_PROGRAM = 'xl-ts'

/** xl's minmsglevel_default is XTL_PROGRESS (4): at most four -v mean anything. */
const MAX_VERBOSITY = 4

export class RuneError extends Error {
  override readonly name = 'RuneError'
}

/** POSIX shell single-quoting: `it's` -> `'it'\''s'`. Safe for any string, including empty. */
export function shellQuote(word: string): string {
  if (word.includes('\0')) throw new RuneError('a NUL byte cannot be passed through a shell')
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word
  return `'${word.replaceAll("'", `'\\''`)}'`
}

export interface MigrateRuneOptions {
  /** The `-s` value: `ssh` by default; empty runs `host` as the whole command. */
  readonly sshCommand: string
  readonly host: string
  /** `-t` is passed when progress uses CR (xl -t) or stderr is a terminal. */
  readonly progressCr: boolean
  /** xl -T */
  readonly timestamps: boolean
  /** Number of global -v. */
  readonly verbosity: number
  /** ` -e` when the receiver must not daemonize (sender given -e or -F). */
  readonly noDaemonize: boolean
  /** ` -d` (--debug) */
  readonly debug: boolean
  /** ` -p`: leave the domain paused at the target. */
  readonly paused: boolean
  /** The remote program (default `xl-ts`). */
  readonly program?: string
}

/** The receiver's argv as the remote shell should see it: `xl-ts -t migrate-receive -e`. */
export function receiverWords(o: Omit<MigrateRuneOptions, 'sshCommand' | 'host'>): string[] {
  const words = [o.program ?? RECEIVER_PROGRAM]
  if (o.progressCr) words.push('-t')
  if (o.timestamps) words.push('-T')
  const v = Math.min(MAX_VERBOSITY, Math.max(0, Math.floor(o.verbosity)))
  if (v > 0) words.push(`-${'v'.repeat(v)}`)
  words.push('migrate-receive')
  if (o.noDaemonize) words.push('-e')
  if (o.debug) words.push('-d')
  if (o.paused) words.push('-p')
  return words
}

/** The rune for `sh -c`. Throws RuneError for a host ssh would take as an option. */
export function buildMigrateRune(o: MigrateRuneOptions): string {
  return sshRune(o.sshCommand, o.host, receiverWords(o))
}

/** `exec <ssh> <host> <words>`, or the host itself with `-s ''`. */
function sshRune(sshCommand: string, host: string, words: readonly string[]): string {
  if (sshCommand === '') {
    if (host.trim() === '') throw new RuneError('with -s "" the host is the command to run, and it is empty')
    return host
  }
  if (host === '') throw new RuneError('the host is empty')
  if (host.startsWith('-')) throw new RuneError(`host "${host}" starts with "-": ssh would take it as an option`)
  // Quoted for the remote shell, then the whole word quoted again for ours.
  return ['exec', sshCommand, shellQuote(host), ...words.map((w) => shellQuote(shellQuote(w)))].join(' ')
}

export interface RemusRuneOptions {
  /** The `-s` value: `ssh` by default; empty runs `host` as the whole command. */
  readonly sshCommand: string
  readonly host: string
  /** ` -e`: the receiver must not daemonize. */
  readonly noDaemonize: boolean
  /** The remote program (default `xl-ts`). */
  readonly program?: string
  /** xl-ts only, given only when the operator asks for one: the session's tie-breaker. */
  readonly tieBreaker?: TieBreakerSpec
}

/** `--replication-session S [--witness DIR] [--fence CMD] [--fence-timeout MS]` for the receiver. */
function tieBreakerWords(spec: TieBreakerSpec | undefined): string[] {
  if (!hasTieBreaker(spec)) return []
  const words = ['--replication-session', spec.session]
  if (spec.witness !== undefined) words.push('--witness', spec.witness)
  if (spec.fence !== undefined) words.push('--fence', spec.fence)
  if (spec.fenceTimeoutMs !== undefined) words.push('--fence-timeout', String(spec.fenceTimeoutMs))
  return words
}

/**
 * The rune of `remus` (xl: "exec %s %s xl migrate-receive %s %s"): `exec <ssh> <host> xl-ts
 * migrate-receive -r [-e]`, quoted as the migrate rune is; no -t/-T/-v are forwarded (as xl).
 */
export function buildRemusRune(o: RemusRuneOptions): string {
  return sshRune(o.sshCommand, o.host, [o.program ?? RECEIVER_PROGRAM, 'migrate-receive', '-r', ...tieBreakerWords(o.tieBreaker), ...(o.noDaemonize ? ['-e'] : [])])
}

export interface ColoRuneOptions extends RemusRuneOptions {
  /** --coloft-script SCRIPT for the secondary (xl passes its colo-proxy-setup path). */
  readonly coloftScript?: string
  /** --userspace-colo-proxy */
  readonly userspaceProxy: boolean
  /** --heartbeat-timeout MS (xl-ts only: given only when the operator asks for it). */
  readonly heartbeatTimeoutMs?: number
}

/**
 * The COLO rune (xl: "exec %s %s xl migrate-receive %s %s %s %s %s"): `exec <ssh> <host> xl-ts
 * migrate-receive --colo [--coloft-script S] [--userspace-colo-proxy] [-e]`.
 */
export function buildColoRune(o: ColoRuneOptions): string {
  const words = [o.program ?? RECEIVER_PROGRAM, 'migrate-receive', '--colo']
  if (o.coloftScript) words.push('--coloft-script', o.coloftScript)
  if (o.userspaceProxy) words.push('--userspace-colo-proxy')
  if (o.heartbeatTimeoutMs !== undefined) words.push('--heartbeat-timeout', String(o.heartbeatTimeoutMs))
  words.push(...tieBreakerWords(o.tieBreaker))
  if (o.noDaemonize) words.push('-e')
  return sshRune(o.sshCommand, o.host, words)
}
