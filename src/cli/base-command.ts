/**
 * The base of every xl-ts command: xl's global options, the hypervisor (created on first use, for
 * the back end and host the options name), domain lookup as xl's find_domain does it, and the one
 * place where errors become output (src/cli/errors.ts): one line on stderr and xl's exit status,
 * never a stack trace unless XL_TS_DEBUG=1 asks for one.
 */
import {Command, Flags, type Interfaces} from '@oclif/core'

import {createHypervisor} from '../toolstack/backends/index.js'
import type {Hypervisor} from '../toolstack/hypervisor/index.js'
import {HypervisorError} from '../toolstack/hypervisor/index.js'
// Deep on purpose: every command loads this file, and libxl's index would load its stream code too.
import {domainInfo, resolveDomain, type NamedDomainInfo} from '../toolstack/libxl/domains.js'
import {GLOBAL_FLAG_NAMES} from './argv.js'
import {EXIT_FAILURE, LIBXL, UsageError, XlExit, hostError, printError, renderError, stripOclif, withHint} from './errors.js'
import {Log} from './log.js'

/** oclif's FlagOutput and ArgOutput (not exported by @oclif/core). */
// biome-ignore lint/suspicious/noExplicitAny: oclif's own definition
type FlagOutput = {[name: string]: any}
// biome-ignore lint/suspicious/noExplicitAny: oclif's own definition
type ArgOutput = {[name: string]: any}

/** The one-letter global options of xl that a command may also give after its name. */
export type GlobalChar = 'v' | 'N' | 'f' | 't' | 'T'

/**
 * The global flags. A command whose own options use one of xl's global letters (`list -v`,
 * `destroy -f`, `create -f FILE`) leaves that letter out; the global option still reaches it when
 * given before the command (`xl-ts -v list`), under its `--global-*` name.
 */
export function globalFlags(omit: readonly GlobalChar[] = []) {
  const has = (c: GlobalChar) => !omit.includes(c)
  return {
    root: Flags.string({
      summary: "The host's state folder (sim back end); two folders are two hosts.",
      env: 'XL_TS_ROOT',
      helpValue: 'DIR',
      helpGroup: 'GLOBAL',
    }),
    backend: Flags.string({
      summary: 'The hypervisor back end (default: xen where /dev/xen/privcmd exists, else sim).',
      env: 'XL_TS_BACKEND',
      options: ['sim', 'xen'],
      helpGroup: 'GLOBAL',
    }),
    ...(has('v') ? {verbose: Flags.boolean({char: 'v', summary: 'Log more on stderr (xl -v).', helpGroup: 'GLOBAL'})} : {}),
    ...(has('N')
      ? {'dry-run': Flags.boolean({char: 'N', summary: 'Dry run: say what would be done and do nothing (xl -N).', helpGroup: 'GLOBAL'})}
      : {}),
    ...(has('f') ? {force: Flags.boolean({char: 'f', summary: 'Force execution (xl -f).', helpGroup: 'GLOBAL'})} : {}),
    ...(has('t') ? {'progress-cr': Flags.boolean({char: 't', summary: 'Show progress with CR (xl -t).', helpGroup: 'GLOBAL'})} : {}),
    ...(has('T') ? {timestamps: Flags.boolean({char: 'T', summary: 'Show timestamps and pid in log lines (xl -T).', helpGroup: 'GLOBAL'})} : {}),
    // xl's commands all take -h for their help (def_getopt).
    help: Flags.help({char: 'h', description: "Show this command's help (xl <command> -h)."}),
    [GLOBAL_FLAG_NAMES.verbose]: Flags.integer({hidden: true, min: 0}),
    [GLOBAL_FLAG_NAMES.dryRun]: Flags.boolean({hidden: true}),
    [GLOBAL_FLAG_NAMES.force]: Flags.boolean({hidden: true}),
    [GLOBAL_FLAG_NAMES.progressCr]: Flags.boolean({hidden: true}),
    [GLOBAL_FLAG_NAMES.timestamps]: Flags.boolean({hidden: true}),
  }
}

export interface GlobalOptions {
  root?: string
  backend?: 'sim' | 'xen'
  /** Number of -v. */
  verbosity: number
  dryRun: boolean
  force: boolean
  progressCr: boolean
  timestamps: boolean
}

/** How a command treats xl's global -N. */
export type DryRunSupport =
  /** The command prints what it would do and does nothing. */
  | 'honour'
  /** xl: "command does not implement -N (dryrun) option", exit 1 (xl.c main, cspec->can_dryrun). */
  | 'refuse'

export abstract class XlCommand extends Command {
  static override baseFlags = globalFlags()

  /** How -N is treated. */
  static dryRun: DryRunSupport = 'refuse'
  /** Exit status of a failure xl has no particular status for. */
  static failureExit = EXIT_FAILURE

  protected globals: GlobalOptions = {verbosity: 0, dryRun: false, force: false, progressCr: false, timestamps: false}
  protected logger: Log = new Log({verbosity: 0, timestamps: false})
  #hypervisor?: Hypervisor

  /** The command as typed: `create`, `sim checksum`. */
  protected get commandName(): string {
    return (this.id ?? this.ctor.id ?? 'xl-ts').replaceAll(':', ' ')
  }

  private get xlCtor(): typeof XlCommand {
    return this.constructor as typeof XlCommand
  }

  /**
   * Parses argv (this.parse), turning oclif's parse errors into xl's usage errors (exit 2), and
   * takes in the global options.
   */
  protected async parseXl<F extends FlagOutput, B extends FlagOutput, A extends ArgOutput>(
    options: Interfaces.Input<F, B, A>,
    argv: string[] = this.argv,
  ): Promise<Interfaces.ParserOutput<F, B, A>> {
    let out: Interfaces.ParserOutput<F, B, A>
    try {
      out = await this.parse(options, argv)
    } catch (err) {
      // The arguments were looked at (oclif warns about commands that never parse theirs).
      this.parsed = true
      throw this.usageError(err, options)
    }
    this.takeGlobals(out.flags as Record<string, unknown>)
    return out
  }

  private takeGlobals(flags: Record<string, unknown>): void {
    const num = (v: unknown) => (typeof v === 'number' ? v : 0)
    const bool = (...names: string[]) => names.some(n => flags[n] === true)
    this.globals = {
      root: typeof flags.root === 'string' ? flags.root : undefined,
      backend: flags.backend === 'sim' || flags.backend === 'xen' ? flags.backend : undefined,
      verbosity: num(flags[GLOBAL_FLAG_NAMES.verbose]) + (this.commandOwnsChar('v') ? 0 : flags.verbose === true ? 1 : 0),
      dryRun: bool(GLOBAL_FLAG_NAMES.dryRun) || (!this.commandOwnsChar('N') && flags['dry-run'] === true),
      force: bool(GLOBAL_FLAG_NAMES.force) || (!this.commandOwnsChar('f') && flags.force === true),
      progressCr: bool(GLOBAL_FLAG_NAMES.progressCr) || (!this.commandOwnsChar('t') && flags['progress-cr'] === true),
      timestamps: bool(GLOBAL_FLAG_NAMES.timestamps) || (!this.commandOwnsChar('T') && flags.timestamps === true),
    }
    this.logger = new Log({verbosity: this.globals.verbosity, timestamps: this.globals.timestamps})
    if (this.globals.dryRun && this.xlCtor.dryRun === 'refuse') {
      throw new XlExit('command does not implement -N (dryrun) option', EXIT_FAILURE)
    }
    this.logger.debug(`argv: ${JSON.stringify(this.argv)}`)
  }

  /** True when the command's own flags use this letter (then `-x` after the command is the command's). */
  private commandOwnsChar(c: GlobalChar): boolean {
    const base = this.xlCtor.baseFlags as Record<string, {char?: string}>
    return !Object.values(base).some(f => f.char === c)
  }

  /** oclif's parse errors, worded as xl's def_getopt words them (xl_utils.c), exit status 2. */
  // biome-ignore lint/suspicious/noExplicitAny: any command's input, as oclif types it
  private usageError(err: unknown, options: Interfaces.Input<any, any, any>): Error {
    if (!(err instanceof Error)) return err as Error
    // -h / --help printed the help and asks to exit 0: not a usage error.
    if (/EEXIT: 0/.test(err.message) || (err as {oclif?: {exit?: number}}).oclif?.exit === 0) return new XlExit('', 0)
    const kind = err.constructor.name
    if (kind === 'NonExistentFlagsError') {
      const flag = ((err as unknown as {flags?: string[]}).flags ?? [])[0] ?? ''
      return new UsageError(notSupported(flag))
    }
    if (kind === 'RequiredArgsError') {
      const required = Object.values(options.args ?? {}).filter(a => (a as {required?: boolean}).required).length
      return new UsageError(requiresArguments(this.commandName, Math.max(1, required)))
    }
    if (kind === 'UnexpectedArgsError') {
      const args = (err as unknown as {args?: string[]}).args ?? []
      return new UsageError(`xl-ts: ${this.commandName}: unexpected argument${args.length === 1 ? '' : 's'}: ${args.join(' ')}`)
    }
    if (err instanceof XlExit) return err
    return new UsageError(`xl-ts: ${this.commandName}: ${stripOclif(err.message)}`)
  }

  /** The hypervisor of the host the global options name, created on first use. */
  protected async hypervisor(): Promise<Hypervisor> {
    if (!this.#hypervisor) {
      this.logger.debug(`hypervisor: backend ${this.globals.backend ?? '(default)'}, root ${this.globals.root ?? '(default)'}`)
      try {
        this.#hypervisor = await createHypervisor({
          ...(this.globals.backend ? {backend: this.globals.backend} : {}),
          ...(this.globals.root ? {root: this.globals.root} : {}),
        })
      } catch (err) {
        // Choosing the host failed (the back end, the state folder): errors.ts hints at the options.
        throw hostError(err)
      }
    }
    return this.#hypervisor
  }

  /**
   * xl's find_domain (xl_utils.c): a domain qualifier is a domid when it is all digits, else a
   * name. An unknown name fails as xl fails: "<q> is an invalid domain identifier (rc=-6)", exit 1
   * (libxl_name_to_domid returns ERROR_INVAL). xl takes a number as it is and lets the operation
   * fail later; we look it up at once and fail the same way with libxl's ERROR_DOMAIN_NOTFOUND,
   * unless the command words it as xl does for that case (`missingId`).
   */
  protected async findDomain(qualifier: string, missingId?: (q: string) => XlExit): Promise<NamedDomainInfo> {
    const hv = await this.hypervisor()
    const numeric = /^[0-9]+$/.test(qualifier)
    try {
      const domid = numeric ? Number(qualifier) : await resolveDomain(hv, qualifier)
      const info = await domainInfo(hv, domid)
      this.logger.debug(`domain ${qualifier}: domid ${info.domid}, name ${info.name}`)
      return info
    } catch (err) {
      if (err instanceof HypervisorError && err.code === 'no-such-domain') {
        if (numeric && missingId) throw withHint(missingId(qualifier), 'unknown-domain')
        throw withHint(invalidDomain(qualifier, numeric ? LIBXL.ERROR_DOMAIN_NOTFOUND : LIBXL.ERROR_INVAL), 'unknown-domain')
      }
      throw err
    }
  }

  /**
   * With -N, a modifying command says what it would do (on stdout) and does nothing: returns true.
   * xl itself implements -N only for create (xl_cmdtable.c can_dryrun); for the others this is ours.
   */
  protected dryRun(what: string): boolean {
    if (!this.globals.dryRun) return false
    this.out(`Dry run: would ${what}\n`)
    return true
  }

  /** Writes to stdout: the data a command prints (ids, names, listings, JSON). */
  protected out(text: string): void {
    process.stdout.write(text)
  }

  override async catch(err: Interfaces.CommandError | Error): Promise<void> {
    const rendered = renderError(err, {command: this.commandName, failureExit: this.xlCtor.failureExit})
    printError(rendered)
    process.exitCode = rendered.exitCode
  }

  override async finally(err: Error | undefined): Promise<void> {
    const hv = this.#hypervisor as (Hypervisor & {close?: () => Promise<void> | void}) | undefined
    this.#hypervisor = undefined
    if (hv && typeof hv.close === 'function') {
      try {
        await hv.close()
      } catch (closeErr) {
        if (!err) await this.catch(closeErr as Error)
      }
    }
    await super.finally(err)
  }
}

/** find_domain's message (xl_utils.c), exit 1. */
export function invalidDomain(qualifier: string, rc: number): XlExit {
  return new XlExit(`${qualifier} is an invalid domain identifier (rc=${rc})`, EXIT_FAILURE)
}

/** def_getopt (xl_utils.c): "option `x' not supported." for an unknown option, exit 2. */
export function notSupported(flag: string): string {
  const name = /^-[^-]/.test(flag) ? flag.slice(1, 2) : flag.replace(/=.*$/, '')
  return `option \`${name}' not supported.`
}

/** def_getopt (xl_utils.c): "'xl CMD' requires at least N argument(s).", exit 2. */
export function requiresArguments(command: string, n: number): string {
  return `'xl-ts ${command}' requires at least ${n} argument${n > 1 ? 's' : ''}.`
}

