import * as fs from 'node:fs'

import {Flags} from '@oclif/core'

import {XlCommand} from '../cli/index.js'
import {blockingFd} from '../toolstack/fd/index.js'
import {XlExit} from '../cli/index.js'
import {libxlJson} from '../cli/index.js'
import type {LogLevel} from '../cli/index.js'
import {streamEventPrinter} from '../cli/index.js'
import type {DomainConfig} from '../toolstack/config/index.js'
import type {MigrationEvent} from '../toolstack/xl/index.js'
import {TieBreakerError, checkTieBreaker, receiveMigration, type TieBreakerSpec} from '../toolstack/xl/index.js'
import {takeReceiverEarly} from '../toolstack/xl/index.js'

/** xl's help text for migrate-receive (xl_cmdtable.c): it has no options of its own to show. */
const USAGE = 'Usage: xl-ts migrate-receive  - for internal use only\n\nRestore a domain from a saved state.\n'

export default class MigrateReceive extends XlCommand {
  static override summary = 'Receive a migrating domain (run by "xl-ts migrate" on the target host).'

  static override description = `As "xl migrate-receive", for internal use: the sender runs it on the target host (over ssh). Its stdin is the migration stream and its stdout the way back to the sender: both are used as raw file descriptors, and nothing else is ever written to stdout; every message goes to stderr.

It writes the banner, reads the xl header and the domain config, builds the domain as <name>--incoming (paused), reads the libxl stream while the restore helper reads the memory, says "ready", waits for GO, renames the domain to <name> and unpauses it (unless -p), and reports. On any failure before GO it destroys its copy; if the start fails after GO it destroys its copy and gives the sender permission to resume. A guardian process finishes the job if this one is killed: the copy is destroyed before GO and started after it.

With -r the stream is a Remus stream ("xl-ts remus" runs it): there is no ready/GO/report; the domain stays <name>--incoming, paused, taking each checkpoint whole (and acknowledging it on stdout), until the stream breaks: then it fails over to the last whole checkpoint ("migration target: Remus Failover for domain N"), is renamed and unpaused, exit 0. A primary that stops replication on purpose ends the stream cleanly, and the copy here is destroyed instead. With --colo the stream is a COLO stream ("xl-ts remus -c" runs it): the secondary runs from the first checkpoint on, suspends at every checkpoint, sends its dirty pages back on stdout, and takes the primary's; when the stream breaks it fails over ("migration target: COLO Failover for domain N") and keeps running, exit 0 (3 if the rename failed).

Exit status: 0 when the handshake completed (the domain runs here, or the sender was told to resume); 1 otherwise.`

  static override examples = [
    {description: 'What "xl-ts migrate vm1 host2" runs on host2 (over ssh):', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'The COLO secondary, failing over when the primary asks for no checkpoint for 10 s:', command: '<%= config.bin %> <%= command.id %> --colo --heartbeat-timeout 10000'},
    {
      description: 'Two simulated hosts on one machine: the sender runs the receiver itself (-s ""):',
      command: `<%= config.bin %> --root ./host-a migrate -s '' vm1 'XL_TS_ROOT=./host-b <%= config.bin %> <%= command.id %>'`,
    },
  ]

  static override strict = false

  static override flags = {
    foreground: Flags.boolean({char: 'F', summary: 'Do not daemonize.'}),
    'no-daemonize': Flags.boolean({char: 'e', summary: 'Do not wait in the background for the death of the domain.'}),
    debug: Flags.boolean({char: 'd', summary: 'Debug.'}),
    remus: Flags.boolean({char: 'r', summary: 'The stream is a Remus checkpoint stream.'}),
    paused: Flags.boolean({char: 'p', summary: 'Leave the domain paused after the migration.'}),
    colo: Flags.boolean({summary: 'The stream is a COLO checkpoint stream.'}),
    'coloft-script': Flags.string({summary: 'The COLO proxy script.', helpValue: 'S'}),
    'userspace-colo-proxy': Flags.boolean({summary: 'Use the userspace COLO proxy (the primary passes it with -p, or when it uses that proxy without -p).'}),
    'heartbeat-timeout': Flags.integer({summary: 'COLO: fail over when the primary sends no checkpoint request for MS (default: wait, as xl).', helpValue: 'MS', min: 1}),
    'replication-session': Flags.string({summary: 'Remus/COLO: the replication session the primary named (it passes it with --witness or --fence).', helpValue: 'ID'}),
    witness: Flags.string({summary: 'Remus/COLO: the witness folder: go live after the primary is lost only with its claim.', helpValue: 'DIR'}),
    fence: Flags.string({summary: 'Remus/COLO: the command to run before going live alone; live only if it exits 0.', helpValue: 'CMD'}),
    'fence-timeout': Flags.integer({summary: 'How long --fence may take (default 30000).', helpValue: 'MS', min: 1, max: 3_600_000}),
  }

  async run(): Promise<void> {
    // Whoever reads our stderr may go away (a closed terminal, `| head`): the migration must not.
    process.stderr.on('error', () => {})
    const {flags, argv} = await this.parseXl(MigrateReceive)
    if ((argv as string[]).length > 0) {
      // main_migrate_receive: help("migrate-receive"); return EXIT_FAILURE.
      process.stderr.write(USAGE)
      throw new XlExit('', 1)
    }
    for (const fd of [0, 1]) {
      try {
        fs.fstatSync(fd)
      } catch {
        throw new XlExit(`xl-ts: migrate-receive: fd ${fd} (${fd === 0 ? 'the stream' : 'the way back'}) is not open`)
      }
    }
    // Node (under oclif) leaves our stdin and stdout non-blocking; reading them so means polling
    // (FdByteSource backs off to 20 ms after EAGAIN), which delayed every COLO/Remus record by up to
    // 20 ms. A blocking reopen of the same pipe is read as soon as bytes arrive. A socket cannot be
    // reopened: it is used as it is.
    const stream = blockingOrAsIs(0, 'the migration stream')
    const back = blockingOrAsIs(1, 'the way back')
    const early = takeReceiverEarly()
    const hv = await this.hypervisor()
    const printLine = (level: LogLevel | 'plain', text: string): void => {
      if (level === 'plain') this.logger.plain(text)
      else this.logger.log(level, text)
    }
    const onEvent = (e: MigrationEvent): void => {
      if (e.kind === 'line') printLine('plain', e.text)
      else if (e.kind === 'log') printLine(e.level, e.text)
    }
    const onStreamEvent = streamEventPrinter({enabled: (l) => this.logger.enabled(l), print: printLine, helperProgress: 'worded'})
    let tieBreaker: TieBreakerSpec | undefined
    const session = flags['replication-session']
    if (session !== undefined || flags.witness !== undefined || flags.fence !== undefined) {
      if (!flags.remus && !flags.colo) throw new XlExit('xl-ts: migrate-receive: --replication-session, --witness and --fence are for -r and --colo', 2)
      if (session === undefined) throw new XlExit('xl-ts: migrate-receive: --witness and --fence need the --replication-session the primary named', 2)
      try {
        tieBreaker = checkTieBreaker({
          session,
          ...(flags.witness !== undefined ? {witness: flags.witness} : {}),
          ...(flags.fence !== undefined ? {fence: flags.fence} : {}),
          ...(flags['fence-timeout'] !== undefined ? {fenceTimeoutMs: flags['fence-timeout']} : {}),
        })
      } catch (err) {
        if (err instanceof TieBreakerError) throw new XlExit(`xl-ts: migrate-receive: ${err.message}`, 2)
        throw err
      }
    }
    let result
    try {
      result = await receiveMigration({
        hypervisor: hv,
        inFd: stream,
        outFd: back,
        paused: flags.paused,
        ...(flags.colo ? {checkpointed: 'colo' as const} : flags.remus ? {checkpointed: 'remus' as const} : {}),
        ...(flags['heartbeat-timeout'] !== undefined ? {heartbeatTimeoutMs: flags['heartbeat-timeout']} : {}),
        ...(tieBreaker ? {tieBreaker} : {}),
        // Our guardian and restore helper, started while the CLI loaded (src/cli/main.ts).
        ...(early ? {early} : {}),
        onEvent,
        onStreamEvent,
        // create_domain with debug: the config as libxl JSON, on stderr.
        ...(flags.debug ? {onConfig: (config: DomainConfig) => process.stderr.write(libxlJson(config))} : {}),
      })
    } finally {
      setTimeout(() => process.exit(), 3000).unref()
    }
    if (result.exitCode !== 0) throw new XlExit('', result.exitCode)
  }
}

/** A blocking reopen of `fd` when it is a non-blocking pipe or FIFO, else `fd` itself. */
function blockingOrAsIs(fd: number, what: string): number {
  try {
    return blockingFd(fd, what).fd
  } catch {
    return fd
  }
}

