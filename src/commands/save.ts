import {readFile} from 'node:fs/promises'

import {Args, Flags} from '@oclif/core'

import {XlCommand, notSupported, requiresArguments} from '../cli/index.js'
import {strerror} from '../cli/index.js'
import {EXIT_FAILURE, UsageError, XlExit} from '../cli/index.js'
import {libxlJson} from '../cli/index.js'
import type {Log} from '../cli/index.js'
import {formatWarning, parseXlConfig, toDomainConfig, type ConfigWarning} from '../toolstack/config/index.js'
import {
  EventLines,
  MigrateError,
  SaveFailedError,
  helperEnv,
  saveDomainToFile,
  type AfterSave,
  type MigrateEvent,
} from '../toolstack/xl/index.js'
import {storedConfig} from '../toolstack/libxl/index.js'

const USAGE = 'xl-ts save [options] <Domain> <CheckpointFile> [<ConfigFile>]'

export default class Save extends XlCommand {
  static override summary = 'Save a domain state to restore later.'

  static override description = `As "xl save": writes the domain's memory and state to FILE (an xl savefile: the xl header with the domain config as JSON, then the libxl migration stream), then destroys the domain, unless -c leaves it running or -p leaves it paused. The domain is suspended while its memory is written (not a live save).

The config in the savefile is the domain's own (the one it was created or restored with), or CONFIG when given (an xl.cfg file). Its c_info.domid is 0 unless -D.

Lines on stderr, as xl prints them: "Saving to FILE new xl format (info 0x3/0x0/N)" once the header is written, the save helper's messages ("xc: progress: Frames: ..."), and on failure the reason and "Failed to save domain, resuming domain": the domain is resumed where it was (suspend-cancel) and keeps running; the savefile is left as far as it got.

Exit status: 0 when saved; 1 when the domain does not exist, its config cannot be had (CONFIG unreadable or invalid, or "unable to retrieve domain configuration"), FILE cannot be created ("Failed to open temp file FILE for writing"), or the save failed; 2 on bad usage.`

  static override examples = [
    {description: 'Save vm1 and destroy it:', command: '<%= config.bin %> <%= command.id %> vm1 /var/lib/xen/save/vm1.save'},
    {description: 'Take a copy and leave it running:', command: '<%= config.bin %> <%= command.id %> -c vm1 vm1.save'},
    {description: 'Save with another config, leaving the domain paused:', command: '<%= config.bin %> <%= command.id %> -p vm1 vm1.save vm1-new.cfg'},
  ]

  static override strict = false

  static override args = {
    domain: Args.string({description: 'domain name or id', ignoreStdin: true}),
    file: Args.string({description: 'the savefile to write (created, or truncated)', ignoreStdin: true}),
    config: Args.string({description: 'an xl.cfg file whose config goes into the savefile instead of the domain\'s own', ignoreStdin: true}),
  }

  static override flags = {
    checkpoint: Flags.boolean({char: 'c', summary: 'Leave the domain running after saving it.'}),
    paused: Flags.boolean({char: 'p', summary: 'Leave the domain paused after saving it.'}),
    'preserve-domid': Flags.boolean({char: 'D', summary: 'Store the domain id in the config, so restore gives it the same id.'}),
  }

  async run(): Promise<void> {
    const {flags, argv, nonExistentFlags} = await this.parseXl(Save)
    const positionals = argv as string[]
    const unknown = nonExistentFlags?.[0] ?? positionals.find(a => a.startsWith('-') && a !== '-')
    if (unknown !== undefined) throw new UsageError(notSupported(unknown))
    // main_save: SWITCH_FOREACH_OPT(..., "save", 2) wants 2 arguments (exit 2); more than 3 is
    // help("save") and EXIT_FAILURE.
    if (positionals.length < 2) throw new UsageError(requiresArguments('save', 2))
    if (positionals.length > 3) throw new XlExit(`xl-ts: save: too many arguments; usage: ${USAGE}`, EXIT_FAILURE)
    const [qualifier, file, configFile] = positionals as [string, string, string | undefined]

    // find_domain: a name that is not there is "<q> is an invalid domain identifier (rc=-6)". A
    // domid that is not there fails in save_domain_core_begin: "unable to retrieve domain configuration".
    const dom = await this.findDomain(qualifier, configFile === undefined ? () => new XlExit('unable to retrieve domain configuration', EXIT_FAILURE) : undefined)
    if (dom.domid === 0) throw new XlExit('xl-ts: save: Domain-0 (domain 0) cannot be saved', EXIT_FAILURE)
    const hv = await this.hypervisor()

    // save_domain_core_begin: the config in the savefile.
    let config: Record<string, unknown>
    if (configFile !== undefined) {
      let text: string
      try {
        text = await readFile(configFile, 'utf8')
      } catch (err) {
        throw new XlExit(`unable to read overridden config file: ${configFile}: ${strerror(err)}`, EXIT_FAILURE)
      }
      const warnings: ConfigWarning[] = []
      config = toDomainConfig(parseXlConfig(text, {file: configFile}), [], {warnings}) as unknown as Record<string, unknown>
      for (const w of warnings) process.stderr.write(`${formatWarning(w)}\n`)
    } else {
      const stored = await storedConfig(hv, dom.domid)
      if (!stored) throw new XlExit('unable to retrieve domain configuration', EXIT_FAILURE)
      const cInfo = {...(stored.c_info as Record<string, unknown> | undefined)}
      // d_config.c_info.domid = preserve_domid ? domid : 0 (0 is libxl's default: not written).
      if (flags['preserve-domid']) cInfo.domid = dom.domid
      else delete cInfo.domid
      config = {...stored, c_info: cInfo}
    }

    const after: AfterSave = flags.paused ? 'paused' : flags.checkpoint ? 'running' : 'destroy'
    const render = renderer(this.logger)
    try {
      const result = await saveDomainToFile({
        hypervisor: hv,
        domid: dom.domid,
        file,
        configJson: libxlJson(config),
        after,
        env: helperEnv(hv),
        onEvent: render,
      })
      this.logger.detail(`saved domain ${dom.domid} (${dom.name}) to ${file}: ${result.bytes} bytes`)
    } catch (err) {
      if (err instanceof SaveFailedError) {
        // save_domain: libxl says why, then "Failed to save domain, resuming domain"; exit 1.
        process.stderr.write(`xl-ts: save: ${err.failure.message}\n`)
        process.stderr.write('Failed to save domain, resuming domain\n')
        if (err.resumeError !== undefined) process.stderr.write(`xl-ts: save: domain ${dom.domid} could not be resumed: ${err.resumeError}\n`)
        throw new XlExit('', EXIT_FAILURE)
      }
      if (err instanceof MigrateError) {
        if (err.code === 'open') {
          throw new XlExit(`Failed to open temp file ${file} for writing: ${strerror(err.cause)}`, EXIT_FAILURE)
        }
        throw new XlExit(`xl-ts: save: ${err.message}`, EXIT_FAILURE)
      }
      throw err
    }
  }
}

/** Prints the sender's events as xl does: its own lines always, log lines by level. */
export function renderer(logger: Log): (e: MigrateEvent) => void {
  const lines = new EventLines({enabled: level => logger.enabled(level)})
  return e => {
    for (const l of lines.lines(e)) {
      if (l.level === 'plain' || logger.enabled(l.level)) logger.plain(l.text)
    }
  }
}
