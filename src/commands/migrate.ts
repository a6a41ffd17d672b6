import {readFile} from 'node:fs/promises'

import {Args, Flags} from '@oclif/core'

import {XlCommand} from '../cli/index.js'
import {strerror} from '../cli/index.js'
import {GLOBAL_FLAG_NAMES} from '../cli/index.js'
import {UsageError, XlExit} from '../cli/index.js'
import {libxlJson} from '../cli/index.js'
import {onOperatorSignals} from '../cli/index.js'
import type {LogLevel} from '../cli/index.js'
import {streamEventPrinter} from '../cli/index.js'
import {MigrationProgress, type ProgressMode} from '../render/index.js'
import {parseXlConfig, toDomainConfig} from '../toolstack/config/index.js'
import type {MigrationEvent} from '../toolstack/xl/index.js'
import {migrateDomain} from '../toolstack/xl/index.js'
import {RuneError, buildMigrateRune} from '../toolstack/xl/index.js'
import type {PrecopyTuning} from '../toolstack/save/index.js'
import {storedConfig} from '../toolstack/libxl/index.js'

export default class Migrate extends XlCommand {
  static override summary = 'Migrate a domain to another host.'

  static override description = `As "xl migrate": moves a running domain to HOST with a live migration. The receiving side is started with "ssh HOST xl-ts migrate-receive" (the command run by "sh -c": exec <ssh> <host> xl-ts [-t] [-T] [-v...] migrate-receive [-e] [-d] [-p]); -s replaces "ssh" with any command, and -s "" runs HOST itself as the whole command (to reach a receiver without ssh). The host is quoted: it can never become shell.

The stream is xl's: the receiver's banner, the xl header with the domain config, the libxl stream with the libxc precopy inside, then the ready/GO/report handshake. The domain is renamed <name>--migratedaway before GO and destroyed here once the target reports it running. On any failure before GO it runs here again; after GO without a report the state is undefined, as xl says, and the copy here is kept suspended as <name>--migratedaway.

Precopy: by default xl's policy (at most 5 rounds, stop below 50 dirty pages). --max-downtime predicts the stop-and-copy time from the measured bandwidth and the dirty pages and stops when it fits; --bandwidth caps the stream; --max-iters and --dirty-threshold change xl's limits; --timeout gives up (and resumes here) if GO has not been sent after that many seconds.

Progress: a bar on stderr when it is a terminal (or with -t), one line per precopy round otherwise; --json prints NDJSON on stdout (schema version 1: {"v":1,"event":"phase"|"iteration"|"result",...}, see README).

Exit status: 0 when the domain runs at the target; 1 when the migration failed (see the lines before for where the domain is); 2 on bad usage.`

  static override examples = [
    {description: 'Migrate vm1 to host2 over ssh:', command: '<%= config.bin %> <%= command.id %> vm1 host2'},
    {description: 'With a given ssh command and a downtime goal of 50 ms:', command: '<%= config.bin %> <%= command.id %> -s "ssh -p 2222" --max-downtime 50 vm1 host2'},
    {
      description: 'To a second simulated host on this machine (the host string is the command):',
      command: `<%= config.bin %> --root ./host-a <%= command.id %> -s '' vm1 'XL_TS_ROOT=./host-b <%= config.bin %> migrate-receive'`,
    },
    {description: 'NDJSON progress for a script, giving up after 60 s:', command: '<%= config.bin %> <%= command.id %> --json --timeout 60 vm1 host2 > progress.ndjson'},
    {description: 'Protect vm1 with COLO on host2 instead of moving it (as "remus -c vm1 host2"):', command: '<%= config.bin %> <%= command.id %> --colo vm1 host2'},
  ]

  static override args = {
    domain: Args.string({description: 'domain name or id', required: true, ignoreStdin: true}),
    host: Args.string({description: 'the host to migrate to (with -s "": the command to run)', required: true, ignoreStdin: true}),
  }

  static override flags = {
    'ssh-command': Flags.string({char: 's', summary: 'Use this command instead of ssh; "" runs <host> as the whole command.', helpValue: 'SSHCMD'}),
    'no-daemonize': Flags.boolean({char: 'e', summary: 'Do not wait in the background on the receiver for the death of the domain (passes -e).'}),
    config: Flags.string({char: 'C', summary: 'Send this config file instead of the one stored at creation.', helpValue: 'CONFIG'}),
    debug: Flags.boolean({summary: 'Verbose debug: the libxc stream re-sends memory for verification (passes -d).'}),
    paused: Flags.boolean({char: 'p', summary: 'Do not unpause the domain after migrating it (passes -p). With --colo: the userspace proxy (remus -p).'}),
    'preserve-domid': Flags.boolean({char: 'D', summary: 'Preserve the domain id (in the config sent).'}),
    foreground: Flags.boolean({char: 'F', summary: 'Run the receiver in the foreground (passes -e, as xl).'}),
    live: Flags.boolean({summary: 'Ignored (xm compatibility).', hidden: true}),
    'max-downtime': Flags.integer({summary: 'Stop precopy when the predicted stop-and-copy time is at most MS.', helpValue: 'MS', min: 1}),
    bandwidth: Flags.string({summary: 'Cap the migration stream at MiB/s.', helpValue: 'MiB/s'}),
    timeout: Flags.string({summary: 'Give up (and resume here) when GO has not been sent after S seconds.', helpValue: 'S'}),
    'max-iters': Flags.integer({summary: 'At most N precopy rounds (xl: 5).', helpValue: 'N', min: 1}),
    'dirty-threshold': Flags.integer({summary: 'Stop precopy below N dirty pages (xl: 50).', helpValue: 'N', min: 1}),
    json: Flags.boolean({summary: 'NDJSON progress and result on stdout (schema v1).'}),
    colo: Flags.boolean({summary: 'COLO instead of a migration: the same as "remus -c" (the proxy is QEMU colo-compare: -p asks for it, as remus -p; without -p it is used where the kernel proxy is missing, as on every mainline kernel, and a line says so).'}),
    'max-interval': Flags.integer({summary: 'With --colo: at most MS between two checkpoints.', helpValue: 'MS', min: 1}),
    witness: Flags.string({summary: 'With --colo: a folder both hosts reach, the split-brain guard (as remus --witness).', helpValue: 'DIR'}),
    fence: Flags.string({summary: 'With --colo: a command each side runs before it goes live alone (as remus --fence).', helpValue: 'CMD'}),
    'fence-timeout': Flags.integer({summary: 'With --colo: how long --fence may take (default 30000).', helpValue: 'MS', min: 1, max: 3_600_000}),
  }

  async run(): Promise<void> {
    // Whoever reads our stderr may go away (a closed terminal, `| head`): the migration must not.
    process.stderr.on('error', () => {})
    const {args, flags} = await this.parseXl(Migrate)
    if (flags.colo) return this.#colo(args, flags)
    for (const f of ['max-interval', 'witness', 'fence', 'fence-timeout'] as const) {
      if (flags[f] !== undefined) throw new UsageError(`xl-ts: migrate: --${f} is for --colo`)
    }
    const tuning = precopyTuning(flags)
    const timeoutMs = flags.timeout === undefined ? undefined : positive(flags.timeout, '--timeout') * 1000

    const dom = await this.findDomain(args.domain)
    if (dom.domid === 0) throw new XlExit('xl-ts: migrate: domain 0 cannot be migrated')
    const hv = await this.hypervisor()

    // save_domain_core_begin: the config to send.
    let configJson: string
    if (flags.config !== undefined) {
      let text: string
      try {
        text = await readFile(flags.config, 'utf8')
      } catch (err) {
        throw new XlExit(`unable to read overridden config file: ${flags.config}: ${strerror(err)}`)
      }
      configJson = libxlJson(toDomainConfig(parseXlConfig(text, {file: flags.config})))
    } else {
      const stored = await storedConfig(hv, dom.domid)
      if (!stored) throw new XlExit('No config file stored for running domain and none supplied - cannot migrate.')
      // The stored config carries the domain's current name; xl sets c_info.domid (-D or 0).
      const cInfo = typeof stored.c_info === 'object' && stored.c_info !== null ? (stored.c_info as Record<string, unknown>) : undefined
      configJson = libxlJson(cInfo ? {...stored, c_info: {...cInfo, domid: flags['preserve-domid'] ? dom.domid : 0}} : stored)
    }

    let rune: string
    try {
      rune = buildMigrateRune({
        sshCommand: flags['ssh-command'] ?? 'ssh',
        host: args.host,
        progressCr: this.globals.progressCr || process.stderr.isTTY === true,
        timestamps: this.globals.timestamps,
        verbosity: this.globals.verbosity,
        noDaemonize: flags['no-daemonize'] || flags.foreground,
        debug: flags.debug,
        paused: flags.paused,
      })
    } catch (err) {
      if (err instanceof RuneError) throw new XlExit(`xl-ts: migrate: ${err.message}`)
      throw err
    }
    this.logger.debug(`rune: ${rune}`)

    const mode: ProgressMode = flags.json ? 'json' : this.globals.progressCr || process.stderr.isTTY ? 'tty' : 'plain'
    const progress = new MigrationProgress({
      mode,
      err: (t) => process.stderr.write(t),
      out: (t) => process.stdout.write(t),
      columns: process.stderr.columns ?? 100,
    })
    const printLine = (level: LogLevel | 'plain', text: string): void => {
      if (level !== 'plain' && !this.logger.enabled(level)) return
      progress.beforeLine()
      if (level === 'plain') this.logger.plain(text)
      else this.logger.log(level, text)
    }
    const onEvent = (e: MigrationEvent): void => {
      if (e.kind === 'line') printLine('plain', e.text)
      else if (e.kind === 'log') printLine(e.level, e.text)
      else progress.handle(e)
    }
    // Our bar replaces the helper's progress lines (xl hides them during migration too).
    const onStreamEvent = streamEventPrinter({enabled: (l) => this.logger.enabled(l), print: printLine, helperProgress: 'hide'})

    // An interrupt before GO aborts and resumes here; after GO the handshake is finished first.
    const interrupt = new AbortController()
    const onSignal = (signal: NodeJS.Signals): void => {
      if (!interrupt.signal.aborted) {
        progress.beforeLine()
        this.logger.plain(`migration sender: ${signal}: aborting the migration unless GO has been sent`)
      }
      interrupt.abort()
    }
    const stopListening = onOperatorSignals(onSignal)
    let result
    try {
      result = await migrateDomain({
        hypervisor: hv,
        domid: dom.domid,
        name: dom.name,
        configJson,
        rune,
        debug: flags.debug,
        tuning,
        ...(timeoutMs !== undefined ? {timeoutMs} : {}),
        signal: interrupt.signal,
        onEvent,
        onStreamEvent,
      })
    } finally {
      stopListening()
      progress.finish()
      exitSoon()
    }
    if (result.exitCode !== 0) throw new XlExit('', result.exitCode)
  }

  /**
   * migrate --colo: the design's name for "remus -c". The remus command runs it, with our global
   * options and the flags both share; migration-only flags make no sense there and are refused.
   */
  async #colo(args: {domain: string; host: string}, flags: Record<string, unknown>): Promise<void> {
    const onlyMigrate = ['config', 'debug', 'preserve-domid', 'max-downtime', 'bandwidth', 'timeout', 'max-iters', 'dirty-threshold']
    const given = onlyMigrate.filter((f) => flags[f] !== undefined && flags[f] !== false)
    if (given.length) throw new UsageError(`xl-ts: migrate: --colo does not take ${given.map((f) => `--${f}`).join(', ')}`)
    const g = this.globals
    const argv = [
      ...(g.root ? ['--root', g.root] : []),
      ...(g.backend ? ['--backend', g.backend] : []),
      ...(g.verbosity ? [`--${GLOBAL_FLAG_NAMES.verbose}`, String(g.verbosity)] : []),
      ...(g.timestamps ? [`--${GLOBAL_FLAG_NAMES.timestamps}`] : []),
      '-c',
      ...(flags.paused ? ['-p'] : []),
      ...(flags['ssh-command'] !== undefined ? ['-s', String(flags['ssh-command'])] : []),
      ...(flags['no-daemonize'] || flags.foreground ? ['-e'] : []),
      ...(flags.json ? ['--json'] : []),
      ...(flags['max-interval'] !== undefined ? ['--max-interval', String(flags['max-interval'])] : []),
      ...(flags.witness !== undefined ? ['--witness', String(flags.witness)] : []),
      ...(flags.fence !== undefined ? ['--fence', String(flags.fence)] : []),
      ...(flags['fence-timeout'] !== undefined ? ['--fence-timeout', String(flags['fence-timeout'])] : []),
      args.domain,
      args.host,
    ]
    await this.config.runCommand('remus', argv)
  }
}

function positive(text: string, flag: string): number {
  const n = Number(text)
  if (!/^\s*[0-9.eE+]+\s*$/.test(text) || !Number.isFinite(n) || n <= 0) throw new UsageError(`xl-ts: migrate: ${flag} must be a positive number, not "${text}"`)
  return n
}

function precopyTuning(flags: {'max-downtime'?: number; bandwidth?: string; 'max-iters'?: number; 'dirty-threshold'?: number}): PrecopyTuning {
  const t: PrecopyTuning = {}
  if (flags['max-downtime'] !== undefined) t.maxDowntimeMs = flags['max-downtime']
  if (flags.bandwidth !== undefined) t.bandwidthMiBps = positive(flags.bandwidth, '--bandwidth')
  if (flags['max-iters'] !== undefined) t.maxIterations = flags['max-iters']
  if (flags['dirty-threshold'] !== undefined) t.dirtyThreshold = flags['dirty-threshold']
  return t
}


/**
 * A read that can never finish (a transport that left a grandchild holding its pipe) must not keep
 * the process alive once the work is done: an unref'd timer only fires if something else does.
 */
function exitSoon(ms = 3000): void {
  setTimeout(() => process.exit(), ms).unref()
}
