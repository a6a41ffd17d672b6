import {readFile} from 'node:fs/promises'

import {Args, Flags} from '@oclif/core'

import {XlCommand, globalFlags, notSupported} from '../cli/index.js'
import {strerror} from '../cli/index.js'
import {LIBXL, UsageError, XlExit, hintKind, withHint} from '../cli/index.js'
import {libxlJson} from '../cli/index.js'
import {
  domainSpec,
  formatWarning,
  parseOverrides,
  parseXlConfig,
  toDomainConfig,
  type ConfigWarning,
} from '../toolstack/config/index.js'
import {HypervisorError} from '../toolstack/hypervisor/index.js'
import {createDomainBuilt, destroyDomain} from '../toolstack/libxl/index.js'
import {startDomainDeviceModel} from '../toolstack/colo/index.js'

/** How often -F looks whether the domain is still there. */
const MONITOR_POLL_MS = 200

export default class Create extends XlCommand {
  static override summary = 'Create a domain from a config file.'

  static override description = `As "xl create": reads the xl.cfg file (or -f FILE), applies the key=value settings given after it as if they were appended to the file, builds the domain and starts it (unless -p). "Parsing config from FILE" goes to stderr unless -q.

-n (or the global -N) prints the domain config JSON as libxl would and creates nothing; -d prints it on stderr and creates the domain. -F stays in the foreground until the domain is gone; -e returns at once (this is what the sim back end always does otherwise: it has no monitor daemon).

Exit status: 0 when the domain was created; 1 for a config file xl cannot parse; 3 (libxl's ERROR_FAIL) when the file cannot be read or the domain cannot be built, for instance because the name is taken; 6 (ERROR_INVAL) when no config file is given; 2 on bad usage.`

  static override examples = [
    {description: 'Create a guest from its config file:', command: '<%= config.bin %> <%= command.id %> /etc/xen/vm1.cfg'},
    {description: 'Create it paused, under another name and with more memory:', command: '<%= config.bin %> <%= command.id %> -p /etc/xen/vm1.cfg name=\\"vm1-test\\" memory=512'},
    {description: 'Show the domain config libxl would get, and create nothing:', command: '<%= config.bin %> <%= command.id %> -n /etc/xen/vm1.cfg'},
    {
      description: 'A simulated 256 MiB guest on a simulated host in ./host-a, quietly:',
      command: '<%= config.bin %> --root ./host-a <%= command.id %> -q vm1.cfg memory=256 sim_dirty_rate=2000',
    },
  ]

  static override strict = false

  // -f is create's own (--defconfig); xl's global -f still works before the command.
  static override baseFlags = globalFlags(['f'])

  static override dryRun = 'honour' as const
  /** xl's main_create returns -rc: libxl's ERROR_FAIL (-3) gives exit status 3. */
  static override failureExit = -LIBXL.ERROR_FAIL

  static override args = {
    config: Args.string({description: 'the xl.cfg file; /dev/null for none (all settings given as key=value)', ignoreStdin: true}),
    settings: Args.string({description: 'key=value settings applied after the file, as xl.cfg lines', ignoreStdin: true}),
  }

  static override flags = {
    defconfig: Flags.string({char: 'f', summary: 'Use the given configuration file.', helpValue: 'FILE'}),
    dryrun: Flags.boolean({char: 'n', summary: 'Dry run: print the resulting configuration and create nothing.'}),
    paused: Flags.boolean({char: 'p', summary: 'Leave the domain paused after it is created.'}),
    quiet: Flags.boolean({char: 'q', summary: 'Quiet: no "Parsing config from" line.'}),
    debug: Flags.boolean({char: 'd', summary: 'Print the domain config JSON on stderr, then create the domain.'}),
    foreground: Flags.boolean({char: 'F', summary: 'Run in the foreground until the domain is gone.'}),
    'no-monitor': Flags.boolean({char: 'e', summary: 'Do not wait in the background for the death of the domain.'}),
    'ignore-global-affinity-masks': Flags.boolean({char: 'i', summary: 'Ignore global affinity masks (there are none here).'}),
  }

  async run(): Promise<void> {
    const {flags, argv, nonExistentFlags} = await this.parseXl(Create)
    const unknown = nonExistentFlags?.[0] ?? (argv as string[]).find(a => a.startsWith('-') && a !== '-')
    if (unknown !== undefined) throw new UsageError(notSupported(unknown))

    // main_create: argv[1], when it is no option and no key=value, is the config file; -f overrides
    // it. After that, key=value arguments are extra config and one more file name is bad usage.
    const positionals = argv as string[]
    const overrides: string[] = []
    let configFile = flags.defconfig
    let firstTaken = false
    const first = firstUserArg(this.argv)
    if (first !== undefined && !first.startsWith('-') && !first.includes('=')) {
      firstTaken = true
      configFile ??= first
    }
    for (const [i, arg] of positionals.entries()) {
      if (i === 0 && firstTaken && arg === first) continue
      if (arg.includes('=')) overrides.push(arg)
      else if (configFile === undefined) configFile = arg
      else throw new UsageError(`xl-ts: create: unexpected argument '${arg}' (one config file only; settings are key=value)`)
    }

    if (configFile === undefined) {
      // create_domain: no config file and not restoring -> ERROR_INVAL, main_create returns 6.
      throw new XlExit('Config file not specified and none in save file', -LIBXL.ERROR_INVAL)
    }
    let text = ''
    if (configFile !== '/dev/null') {
      try {
        text = await readFile(configFile, 'utf8')
      } catch (err) {
        throw new XlExit(`Failed to read config file: ${configFile}: ${strerror(err)}`, -LIBXL.ERROR_FAIL)
      }
    }
    if (!flags.quiet) process.stderr.write(`Parsing config from ${configFile}\n`)

    const warnings: ConfigWarning[] = []
    const parsed = parseXlConfig(text, {file: configFile})
    const config = toDomainConfig(parsed, overrides.length > 0 ? parseOverrides(overrides) : [], {warnings})
    for (const w of warnings) process.stderr.write(`${formatWarning(w)}\n`)

    const dryRun = flags.dryrun || this.globals.dryRun
    if (flags.debug || dryRun) {
      const json = libxlJson(config)
      if (dryRun) {
        this.out(json)
        return
      }
      process.stderr.write(json)
    }

    const hv = await this.hypervisor()
    let domid: number
    try {
      // libxl: the domain is built, its device model started, then it is unpaused.
      domid = await createDomainBuilt(hv, domainSpec(config, hv.backend), {paused: true})
    } catch (err) {
      if (err instanceof HypervisorError && err.code === 'name-in-use') {
        // libxl__domain_rename (libxl_domain.c) logs it; libxl__domain_make fails, and
        // initiate_domain_create turns that into ERROR_FAIL: main_create returns 3.
        throw new XlExit(`Domain with name "${config.c_info.name}" already exists.`, -LIBXL.ERROR_FAIL)
      }
      throw err
    }
    try {
      await startDomainDeviceModel(hv, domid, config as unknown as Record<string, unknown>, {log: (text) => this.logger.detail(text)})
      if (!flags.paused) await hv.unpause(domid)
    } catch (err) {
      // libxl's domcreate_complete: a domain that could not be set up is destroyed.
      await destroyDomain(hv, domid).catch(() => undefined)
      const exit = new XlExit(`xl-ts: error: domain ${config.c_info.name} (domid ${domid}): cannot start the device model: ${(err as Error).message}`, -LIBXL.ERROR_FAIL)
      // The hint the device model's failure has (no QEMU: how to get one) goes with it.
      const kind = hintKind(err, -LIBXL.ERROR_FAIL)
      throw kind ? withHint(exit, kind) : exit
    }
    this.logger.detail(`created domain ${config.c_info.name} (domid ${domid})${flags.paused ? ', paused' : ''}`)

    if (flags.foreground && !flags['no-monitor']) await this.monitor(config.c_info.name, domid)
  }

  /** xl create -F: stays until the domain is gone, with xl's log lines (create_domain). */
  private async monitor(name: string, domid: number): Promise<void> {
    const hv = await this.hypervisor()
    this.logger.plain(`Waiting for domain ${name} (domid ${domid}) to die [pid ${process.pid}]`)
    let shutdownSeen = false
    for (;;) {
      let gone = false
      try {
        const info = await hv.info(domid)
        if (info.state.shutdown && !shutdownSeen) {
          shutdownSeen = true
          const reason = info.state.shutdownReason ?? 0
          this.logger.plain(`Domain ${domid} has shut down, reason code ${reason} 0x${reason.toString(16)}`)
        }
      } catch (err) {
        if (!(err instanceof HypervisorError && err.code === 'no-such-domain')) throw err
        gone = true
      }
      if (gone) {
        this.logger.plain(`Domain ${domid} has been destroyed.`)
        return
      }
      await new Promise(resolve => setTimeout(resolve, MONITOR_POLL_MS))
    }
  }
}

/** The first argument the user gave after `create`, past the global options moved there. */
function firstUserArg(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string
    if (a === '--root' || a === '--backend') i++
    else if (!/^--(root|backend)=|^--global-/.test(a)) return a
  }
  return undefined
}
