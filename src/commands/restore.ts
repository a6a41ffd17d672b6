import {readFile} from 'node:fs/promises'

import {Args, Flags} from '@oclif/core'

import {XlCommand, notSupported, requiresArguments} from '../cli/index.js'
import {strerror} from '../cli/index.js'
import {EXIT_FAILURE, UsageError, XlExit} from '../cli/index.js'
import {libxlJson} from '../cli/index.js'
import {
  domainConfigFromJson,
  formatWarning,
  parseXlConfig,
  toDomainConfig,
  type ConfigWarning,
  type DomainConfig,
} from '../toolstack/config/index.js'
import {HypervisorError} from '../toolstack/hypervisor/index.js'
import {MigrateError, helperEnv, openSavefile, restoreFromSavefile, type OpenSavefile} from '../toolstack/xl/index.js'
import {renderer} from './save.js'

const USAGE = 'xl-ts restore [options] [<ConfigFile>] <CheckpointFile>'
/** How often -F looks whether the domain is still there. */
const MONITOR_POLL_MS = 200

export default class Restore extends XlCommand {
  static override summary = 'Restore a domain from a saved state.'

  static override description = `As "xl restore": reads an xl savefile written by "xl-ts save" or Xen's "xl save", builds a domain from the config it carries (or from CONFIG, an xl.cfg file that replaces it; /dev/null for an empty one), fills it with the saved memory and state, and starts it (unless -p).

Lines on stderr, as xl prints them: "Loading new save file FILE (new xl fmt info 0x3/0x0/N)", " Savefile contains xl domain config in JSON format", "Parsing config from <saved>" (or CONFIG), then the restore helper's messages.

Any failure after the domain was built (a truncated or corrupt savefile, a helper that fails) destroys it: nothing is left behind. A bad stream is named in one line with its format, record and byte offset in FILE ("xxd -s OFFSET FILE" shows the bytes).

-d prints the domain config JSON on stderr first. -F stays in the foreground until the domain is gone; -e returns at once (as the sim back end always does otherwise: it has no monitor daemon). -c, -V and -A (console, VNC viewer) are accepted; the sim back end has neither.

Exit status: 0 when the domain was restored; 1 for any failure (FILE unreadable, wrong magic, no config, a config that cannot be parsed, the name taken, a bad stream); 2 on bad usage.`

  static override examples = [
    {description: 'Restore vm1 and start it:', command: '<%= config.bin %> <%= command.id %> /var/lib/xen/save/vm1.save'},
    {description: 'Restore it paused, with another config:', command: '<%= config.bin %> <%= command.id %> -p vm1-new.cfg vm1.save'},
    {description: 'Restore onto the simulated host in ./host-b:', command: '<%= config.bin %> --root ./host-b <%= command.id %> vm1.save'},
  ]

  static override strict = false

  static override args = {
    first: Args.string({description: 'CONFIG then FILE, or FILE alone', ignoreStdin: true}),
    second: Args.string({description: 'the savefile, when CONFIG is given', ignoreStdin: true}),
  }

  static override flags = {
    paused: Flags.boolean({char: 'p', summary: 'Leave the domain paused after it is restored.'}),
    'no-monitor': Flags.boolean({char: 'e', summary: 'Do not wait in the background for the death of the domain.'}),
    debug: Flags.boolean({char: 'd', summary: 'Print the domain config JSON on stderr.'}),
    foreground: Flags.boolean({char: 'F', summary: 'Run in the foreground until the domain is gone.'}),
    console: Flags.boolean({char: 'c', summary: 'Connect to the console after restore (no console on the sim back end).'}),
    vncviewer: Flags.boolean({char: 'V', summary: 'Connect to the VNC display after restore (none on the sim back end).'}),
    'vncviewer-autopass': Flags.boolean({char: 'A', summary: 'As -V, passing the VNC password (none on the sim back end).'}),
  }

  async run(): Promise<void> {
    const {flags, argv, nonExistentFlags} = await this.parseXl(Restore)
    const positionals = argv as string[]
    const unknown = nonExistentFlags?.[0] ?? positionals.find(a => a.startsWith('-') && a !== '-')
    if (unknown !== undefined) throw new UsageError(notSupported(unknown))
    // main_restore: SWITCH_FOREACH_OPT(..., "restore", 1); one argument is the file, two are
    // config and file, more is help("restore") and EXIT_FAILURE.
    if (positionals.length < 1) throw new UsageError(requiresArguments('restore', 1))
    if (positionals.length > 2) throw new XlExit(`xl-ts: restore: too many arguments; usage: ${USAGE}`, EXIT_FAILURE)
    const [configFile, file] = positionals.length === 2 ? (positionals as [string, string]) : [undefined, positionals[0] as string]

    const render = renderer(this.logger)
    let savefile: OpenSavefile
    try {
      savefile = await openSavefile(file, {onEvent: render})
    } catch (err) {
      throw this.#failure(err)
    }
    try {
      const config = await this.#config(savefile, configFile)
      if (flags.debug) process.stderr.write(libxlJson(config))
      const hv = await this.hypervisor()
      let domid: number
      try {
        domid = (await restoreFromSavefile({hypervisor: hv, savefile, config, paused: flags.paused, env: helperEnv(hv), onEvent: render})).domid
      } catch (err) {
        throw this.#failure(err, config.c_info.name)
      }
      this.logger.detail(`restored domain ${config.c_info.name} (domid ${domid}) from ${file}${flags.paused ? ', paused' : ''}`)
      if (flags.foreground && !flags['no-monitor']) {
        // create_domain closes the restore file before it waits.
        await savefile.close()
        await this.#monitor(config.c_info.name, domid)
      }
    } finally {
      await savefile.close()
    }
  }

  /** create_domain: the config from the command line, else the one in the savefile. */
  async #config(savefile: OpenSavefile, configFile: string | undefined): Promise<DomainConfig> {
    const warnings: ConfigWarning[] = []
    let config: DomainConfig
    if (configFile !== undefined) {
      let text = ''
      // /dev/null stands for "no config file" (everything from the command line).
      if (configFile !== '/dev/null') {
        try {
          text = await readFile(configFile, 'utf8')
        } catch (err) {
          throw new XlExit(`Failed to read config file: ${configFile}: ${strerror(err)}`, EXIT_FAILURE)
        }
      }
      process.stderr.write(`Parsing config from ${configFile}\n`)
      config = toDomainConfig(parseXlConfig(text, {file: configFile}), [], {warnings})
    } else {
      const saved = savefile.header.config
      if (saved === undefined) throw new XlExit('Config file not specified and none in save file', EXIT_FAILURE)
      process.stderr.write('Parsing config from <saved>\n')
      if (savefile.header.json) {
        let json: unknown
        try {
          json = JSON.parse(saved)
        } catch (err) {
          throw new XlExit(`xl-ts: restore: the domain config in ${savefile.file} is not valid JSON: ${(err as Error).message}`, EXIT_FAILURE)
        }
        config = domainConfigFromJson(json, '<saved>')
      } else {
        config = toDomainConfig(parseXlConfig(saved, {file: '<saved>'}), [], {warnings})
      }
    }
    for (const w of warnings) process.stderr.write(`${formatWarning(w)}\n`)
    return config
  }

  /** A failure as xl words it, exit 1 (main_restore returns EXIT_FAILURE for any rc < 0). */
  #failure(err: unknown, name?: string): unknown {
    if (!(err instanceof MigrateError)) return err
    if (err.code === 'open') return new XlExit(`Can't open restore file: ${strerror(err.cause)}`, EXIT_FAILURE)
    const cause = err.cause
    if (err.step === 'create' && cause instanceof HypervisorError && cause.code === 'name-in-use') {
      // libxl__domain_make fails (libxl_domain.c logs this), main_restore returns EXIT_FAILURE.
      return new XlExit(`Domain with name "${name ?? cause.domainName ?? ''}" already exists.`, EXIT_FAILURE)
    }
    if (err.code === 'stream' && err.format === 'xl' && !err.record) {
      // The savefile header: xl's own message, then where.
      const c = cause as {detail?: string; part?: string} | undefined
      return new XlExit(`${c?.detail ?? err.message} (xl ${c?.part ?? 'savefile header'} at offset ${err.offset ?? 0})`, EXIT_FAILURE)
    }
    return new XlExit(`xl-ts: restore: ${err.message}`, EXIT_FAILURE)
  }

  /** xl restore -F: stays until the domain is gone, with xl's log lines (create_domain). */
  async #monitor(name: string, domid: number): Promise<void> {
    const hv = await this.hypervisor()
    this.logger.plain(`Waiting for domain ${name} (domid ${domid}) to die [pid ${process.pid}]`)
    let shutdownSeen = false
    for (;;) {
      try {
        const info = await hv.info(domid)
        if (info.state.shutdown && !shutdownSeen) {
          shutdownSeen = true
          const reason = info.state.shutdownReason ?? 0
          this.logger.plain(`Domain ${domid} has shut down, reason code ${reason} 0x${reason.toString(16)}`)
        }
      } catch (err) {
        if (!(err instanceof HypervisorError && err.code === 'no-such-domain')) throw err
        this.logger.plain(`Domain ${domid} has been destroyed.`)
        return
      }
      await new Promise(resolve => setTimeout(resolve, MONITOR_POLL_MS))
    }
  }
}
