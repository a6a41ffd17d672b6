import * as path from 'node:path'

import {Args, Flags} from '@oclif/core'

import {XlCommand, globalFlags} from '../cli/index.js'
import {XlExit} from '../cli/index.js'
import {libxlJson} from '../cli/index.js'
import {onOperatorSignals} from '../cli/index.js'
import type {LogLevel} from '../cli/index.js'
import {streamEventPrinter} from '../cli/index.js'
import {NO_TIE_BREAKER_WARNING, RuneError, TieBreakerError, buildColoRune, buildRemusRune, checkTieBreaker, newSession, type TieBreakerSpec} from '../toolstack/xl/index.js'
import {probePlugQdisc} from '../toolstack/replication/index.js'
import {ColoSetupError, QdiskError, chooseColoProxy, coloDisksOf, openPrimaryColoDevices, type ColoDisk, type PrimaryColoDevices} from '../toolstack/colo/index.js'
import type {LibxlDiskJson} from '../toolstack/config/index.js'
import type {SimulationExtras} from '../toolstack/hypervisor/index.js'
import {type RemusEvent} from '../toolstack/replication/index.js'
import {runRemusPrimary} from '../toolstack/xl/index.js'
import {storedConfig} from '../toolstack/libxl/index.js'
import {hostNetworkOf} from '../toolstack/backends/index.js'

/** xl's default checkpoint interval (main_remus: "def. 200ms"). */
const DEFAULT_INTERVAL_MS = 200
/** libxl's COLO_PROXY_CHECKPOINT_TIMEOUT: at most this long between two COLO checkpoints. */
const COLO_MAX_INTERVAL_MS = 5000
/** xl's exit(-1). */
const EXIT_MINUS_ONE = 255

export default class Remus extends XlCommand {
  static override summary = 'Enable Remus HA for a domain: checkpoint it to a backup host.'

  static override description = `As "xl remus": keeps a backup of a running domain on HOST that is never more than one interval old. The backup is started with "ssh HOST xl-ts migrate-receive -r" (-s replaces ssh; -s "" runs HOST itself as the command). After a live first round, the domain is checkpointed every interval (-i, default 200 ms): suspended, its dirty memory and CPU state sent, resumed. Its network output is held until the backup has acknowledged the checkpoint that produced it (-n turns that off), so no client sees state that a failover would lose.

If this host (or the stream) dies, the backup takes over with the last whole checkpoint ("migration target: Remus Failover for domain N") and runs the domain. If the backup dies, the domain runs on here, unprotected: "Remus: Backup failed? resuming domain at primary." (exit 1). Destroying the domain here forces a failover: "Remus: Primary domain has been destroyed." (exit 0). An interrupt (Ctrl-C) stops replication cleanly after the next checkpoint: the domain runs on here and the backup discards its copy (exit 0).

-b (replicate to /dev/null, no backup), -n and -d are unsafe and need -F, as in xl.

-c (COLO, "xl-ts migrate --colo" is the same): both copies run; at each checkpoint the backup (migrate-receive --colo) sends back the pages it dirtied and the primary sends those and its own, so the backup becomes an exact copy again. A checkpoint is taken when QEMU's colo-compare asks for one (the outputs diverged) or at the latest every --max-interval MS (5 s, as libxl). -c conflicts with -i, -b, -n and -d; -p (userspace proxy) needs -c, as in xl. The proxy is QEMU's colo-compare, xl's userspace proxy (-p). Without -p xl uses the kernel proxy (netlink 28, xt_PMYCOLO), which is not part of Linux: where it is missing xl-ts uses the userspace proxy instead and says so in one line ("COLO: the kernel COLO proxy is not available on this kernel (xt_PMYCOLO); using the userspace proxy (QEMU colo-compare)"); where it is loaded xl-ts refuses, as it does not drive it: give -p.

COLO disks (disk spec keys colo, colo-host, colo-port, colo-export, active-disk, hidden-disk) are replicated by the domain's device model (QEMU block replication over NBD); every disk must be one, the domain must be paused when COLO starts (create -p; its images the same on both hosts), and it runs from the first checkpoint on.

SPLIT BRAIN. A broken link and a dead peer look the same from either end: when the link between the hosts breaks (or the transport or one side's helper dies), the primary resumes and the backup fails over, and two copies of the guest run, writing one disk and answering on one address. xl does the same, and so does xl-ts without a tie-breaker (it says so in one warning at the start). With --witness DIR (a folder both hosts reach, such as a shared filesystem) each side claims it before it runs the guest alone: the first claim of the session wins, the other side keeps its copy paused and names it <name>--stale, so that list shows which copy is the live one. With --fence CMD each side runs CMD (with XL_TS_FENCE_SIDE, XL_TS_FENCE_DOMAIN, XL_TS_FENCE_CHECKPOINT set) before it runs the guest alone, and goes live only if it exits 0 within --fence-timeout MS (default 30000); with both, only the side that won the witness runs its fence. Both are passed to the backup.

Exit status: 0 when the domain was destroyed here or replication was stopped on request; 1 when replication failed (see the lines before for where the domain runs); 2 on bad usage; 255 for xl's option conflicts.`

  static override examples = [
    {description: 'Protect vm1 with a backup on host2, checkpointing every 100 ms:', command: '<%= config.bin %> <%= command.id %> -i 100 vm1 host2'},
    {description: 'Try it without a backup (checkpoints go to /dev/null):', command: '<%= config.bin %> <%= command.id %> -F -b vm1 dummy'},
    {
      description: 'To a second simulated host on this machine (the host string is the command):',
      command: `<%= config.bin %> --root ./host-a <%= command.id %> -s '' vm1 'XL_TS_ROOT=./host-b <%= config.bin %> migrate-receive -r'`,
    },
    {description: 'COLO (QEMU colo-compare as the proxy), at most 2 s between checkpoints:', command: '<%= config.bin %> <%= command.id %> -c --max-interval 2000 vm1 host2'},
  ]

  static override args = {
    domain: Args.string({description: 'domain name or id', required: true, ignoreStdin: true}),
    host: Args.string({description: 'the backup host (with -s "": the command to run; required even with -b, as xl)', required: true, ignoreStdin: true}),
  }

  // -N is remus's netbuf script here, not the global dry run (xl -N remus ... still is).
  static override baseFlags = globalFlags(['N'])

  static override flags = {
    interval: Flags.string({char: 'i', summary: 'Checkpoint every MS milliseconds (default 200).', helpValue: 'MS'}),
    'no-compression': Flags.boolean({char: 'u', summary: 'Disable memory checkpoint compression (it has no effect, as in xl).'}),
    'ssh-command': Flags.string({char: 's', summary: 'Use this command instead of ssh; "" runs <host> as the whole command.', helpValue: 'SSHCMD'}),
    'no-daemonize': Flags.boolean({char: 'e', summary: 'The backup does not wait in the background for the death of the domain (passes -e).'}),
    'netbuf-script': Flags.string({char: 'N', summary: 'The network buffering script (real hosts; default scripts/remus-netbuf-setup).', helpValue: 'NETBUFSCRIPT'}),
    unsafe: Flags.boolean({char: 'F', summary: 'Allow unsafe modes (-b, -n, -d).'}),
    blackhole: Flags.boolean({char: 'b', summary: 'Replicate to /dev/null (no backup); unsafe.'}),
    'no-netbuf': Flags.boolean({char: 'n', summary: 'Do not buffer network output; unsafe.'}),
    'no-diskbuf': Flags.boolean({char: 'd', summary: 'Do not replicate disks; unsafe.'}),
    colo: Flags.boolean({char: 'c', summary: 'COLO mode: the backup runs too, checkpoints when the outputs differ.'}),
    'max-interval': Flags.integer({summary: 'COLO: at most MS between two checkpoints (default 5000, as libxl).', helpValue: 'MS', min: 1}),
    'heartbeat-timeout': Flags.integer({
      summary: 'COLO: the secondary fails over when no checkpoint request came for MS (passed to it); longer than --max-interval.',
      helpValue: 'MS',
      min: 1,
    }),
    'userspace-colo-proxy': Flags.boolean({char: 'p', summary: 'COLO userspace proxy, QEMU colo-compare (with -c; used without -p too where the kernel proxy is missing).'}),
    json: Flags.boolean({summary: 'NDJSON events on stdout: checkpoints, acknowledgements, released output, result (schema v1).'}),
    witness: Flags.string({summary: 'A folder both hosts reach: the first side to claim it after losing the other goes live, the other never does (split-brain guard).', helpValue: 'DIR'}),
    fence: Flags.string({summary: 'A command each side runs before it goes live alone (power the peer off, take a cluster lock); live only if it exits 0. Passed to the backup.', helpValue: 'CMD'}),
    'fence-timeout': Flags.integer({summary: 'How long --fence may take (default 30000).', helpValue: 'MS', min: 1, max: 3_600_000}),
  }

  async run(): Promise<void> {
    process.stderr.on('error', () => {})
    const {args, flags} = await this.parseXl(Remus)

    // main_remus's checks, in its order and words.
    if (flags['userspace-colo-proxy'] && !flags.colo) {
      process.stderr.write('Option -p must be used in conjunction with -c')
      throw new XlExit('', EXIT_MINUS_ONE)
    }
    if (flags.colo) {
      if (flags.interval !== undefined || flags.blackhole || flags['no-netbuf'] || flags['no-diskbuf']) {
        throw new XlExit('option -c is conflict with -i, -d, -n or -b: Success', EXIT_MINUS_ONE)
      }
      // xl: perror() after the compression default; COLO never compresses.
      if (!flags['no-compression']) process.stderr.write("COLO can't be used with memory compression. Disable memory checkpoint compression now...: Success\n")
    }
    if (flags['max-interval'] !== undefined && !flags.colo) throw new XlExit('xl-ts: remus: --max-interval is for COLO (-c); Remus checkpoints every -i MS', 2)
    const heartbeat = flags['heartbeat-timeout']
    if (heartbeat !== undefined) {
      if (!flags.colo) throw new XlExit('xl-ts: remus: --heartbeat-timeout is for COLO (-c)', 2)
      const maxInterval = flags['max-interval'] ?? COLO_MAX_INTERVAL_MS
      if (heartbeat <= maxInterval) throw new XlExit(`xl-ts: remus: --heartbeat-timeout (${heartbeat} ms) must be longer than the longest time between checkpoints (--max-interval, ${maxInterval} ms)`, 2)
    }
    const intervalMs = interval(flags.interval)

    const dom = await this.findDomain(args.domain)
    const hv = await this.hypervisor()
    const backupFailed = (lines: string[]): never => {
      for (const l of lines) this.logger.log('error', l)
      this.logger.plain(`${flags.colo ? 'COLO' : 'Remus'}: Backup failed? resuming domain at primary.`)
      throw new XlExit('', 1)
    }
    // libxl_domain_remus_start's check (xl has sent its preamble by then; we check first).
    if (!flags.unsafe && (flags.blackhole || flags['no-netbuf'] || flags['no-diskbuf'])) {
      backupFailed([`Domain ${dom.domid}:Unsafe mode must be enabled to replicate to /dev/null,disable network buffering and disk replication`])
    }

    const stored = await storedConfig(hv, dom.domid)
    if (!stored && !flags.blackhole) throw new XlExit('No config file stored for running domain and none supplied - cannot start remus.')
    const configJson = stored ? libxlJson(stored) : ''
    // With disk replication on, every disk must be one the checkpoint devices handle: COLO qdisks
    // (QEMU's block replication) with -c; DRBD disks with Xen's Remus, which this host has none of.
    const disks = Array.isArray(stored?.disks) ? stored.disks.length : 0
    let coloDisks: ColoDisk[] = []
    if (flags.colo && disks > 0) {
      try {
        coloDisks = coloDisksOf(stored!.disks as LibxlDiskJson[], (p) => p)
      } catch (err) {
        if (!(err instanceof QdiskError)) throw err
        backupFailed([`Domain ${dom.domid}:${err.message}`, `Domain ${dom.domid}:COLO: failed to setup device for guest with domid ${dom.domid}, rc -18`])
      }
      // QEMU replicates the writes made after replication starts (the first checkpoint): until then
      // the guest must not write, and its disks must be the same on both hosts (libxl assumes so).
      if (!dom.state.paused) {
        throw new XlExit(
          `xl-ts: remus: domain ${dom.domid} has COLO disks and is running: its disk writes would be replicated only from the first checkpoint on. ` +
            `Pause it (xl-ts pause ${dom.domid}, or create it with -p), make its disks the same on the secondary, then start COLO: it runs again after the first checkpoint.`,
        )
      }
    } else if (!flags['no-diskbuf'] && disks > 0) {
      backupFailed([`Domain ${dom.domid}:device not handled by checkpoint (disk replication needs DRBD disks; use -d with -F to run without it)`, `Domain ${dom.domid}:Remus: failed to setup device, rc -19`])
    }
    // COLO's proxy: QEMU's colo-compare with -p, and without it where libxl's kernel proxy
    // (out-of-tree modules) is missing, as on every mainline kernel: one line says so, and the run is
    // the -p run, the secondary told so too. Where the kernel proxy is loaded: refused (not driven).
    // The sim host has a device model; real hosts are not wired.
    let userspaceProxy = false
    if (flags.colo) {
      const choice = chooseColoProxy(flags['userspace-colo-proxy'])
      if (choice.proxy === 'none') backupFailed([`Domain ${dom.domid}:COLO: ${choice.reason}`])
      else if (choice.notice) this.logger.plain(choice.notice)
      userspaceProxy = true
    }
    if (flags.colo && hv.backend !== 'sim') {
      backupFailed([`Domain ${dom.domid}:COLO: the userspace proxy (QEMU colo-compare) is not wired to real hosts yet`])
    }
    if (!flags.colo && !flags['no-netbuf'] && hv.backend !== 'sim') {
      const probe = await probePlugQdisc()
      const why = probe.ok ? 'network buffering through the netbuf script is not wired to real hosts yet' : probe.reason
      backupFailed([`Domain ${dom.domid}:Remus: No support for network buffering: ${why}`])
    }

    // The split-brain guard: who decides, when the other side is lost, which copy goes live.
    let tieBreaker: TieBreakerSpec | undefined
    if (flags.witness !== undefined || flags.fence !== undefined) {
      try {
        tieBreaker = checkTieBreaker({
          session: newSession(),
          ...(flags.witness !== undefined ? {witness: path.resolve(flags.witness)} : {}),
          ...(flags.fence !== undefined ? {fence: flags.fence} : {}),
          ...(flags['fence-timeout'] !== undefined ? {fenceTimeoutMs: flags['fence-timeout']} : {}),
        })
      } catch (err) {
        if (err instanceof TieBreakerError) throw new XlExit(`xl-ts: remus: ${err.message}`, 2)
        throw err
      }
    } else if (flags['fence-timeout'] !== undefined) {
      throw new XlExit('xl-ts: remus: --fence-timeout is for --fence', 2)
    } else if (!flags.blackhole) {
      this.logger.log('warning', NO_TIE_BREAKER_WARNING)
    }

    let rune = ''
    if (!flags.blackhole) {
      const target = {sshCommand: flags['ssh-command'] ?? 'ssh', host: args.host, noDaemonize: flags['no-daemonize'], ...(tieBreaker ? {tieBreaker} : {})}
      try {
        rune = flags.colo
          ? buildColoRune({
              ...target,
              userspaceProxy,
              ...(flags['netbuf-script'] ? {coloftScript: flags['netbuf-script']} : {}),
              ...(heartbeat !== undefined ? {heartbeatTimeoutMs: heartbeat} : {}),
            })
          : buildRemusRune(target)
      } catch (err) {
        if (err instanceof RuneError) throw new XlExit(`xl-ts: remus: ${err.message}`)
        throw err
      }
      this.logger.debug(`rune: ${rune}`)
    }

    const json = flags.json
    const printLine = (level: LogLevel | 'plain', text: string): void => {
      if (level === 'plain') this.logger.plain(text)
      else if (this.logger.enabled(level)) this.logger.log(level, text)
    }
    const onEvent = (e: RemusEvent): void => {
      if (e.kind === 'line') return printLine('plain', e.text)
      if (e.kind === 'log') return printLine(e.level, e.text)
      if (json) process.stdout.write(`${JSON.stringify({v: 1, event: e.kind, ...withoutKind(e)})}\n`)
      if (e.kind === 'checkpoint') {
        const sets = e.primaryDirty !== undefined ? ` (A ${e.primaryDirty}, B ${e.secondaryDirty ?? 0})` : ''
        printLine('detail', `${flags.colo ? 'COLO' : 'Remus'}: checkpoint ${e.number}${e.reason ? ` (${e.reason})` : ''}: ${e.pages} pages${sets}, paused ${e.pausedMs.toFixed(1)} ms`)
      } else if (e.kind === 'ack') {
        printLine('debug', `Remus: checkpoint ${e.number} acknowledged by the backup`)
      }
    }
    const onStreamEvent = streamEventPrinter({enabled: (l) => this.logger.enabled(l), print: printLine, helperProgress: 'hide'})

    /** Events count their times from here (atMs). */
    const started = performance.now()
    let colo: PrimaryColoDevices = {}
    if (flags.colo) {
      try {
        colo = await openPrimaryColoDevices({
          hypervisor: hv,
          network: hostNetworkOf(hv),
          domid: dom.domid,
          config: stored,
          disks: coloDisks,
          onRelease: (frame, atMs, via) => {
            if (json) process.stdout.write(`${JSON.stringify({v: 1, event: 'release', atMs: atMs - started, via, ...frameFields(frame, hv.simulation)})}\n`)
          },
          onLog: (level, text) => printLine(level, text),
        })
      } catch (err) {
        if (err instanceof ColoSetupError) backupFailed([...err.lines])
        throw err
      }
      if (colo.secondaryIn) this.logger.log('detail', `COLO: colo-compare in the device model compares the guests' output; the secondary's frames go to ${colo.secondaryIn.host}:${colo.secondaryIn.port}`)
      else this.logger.log('info', `COLO: no colo_sock_compare_sec_in_ip/port on the first vif: checkpoints every ${flags['max-interval'] ?? COLO_MAX_INTERVAL_MS} ms by the timer only`)
    }

    const interrupt = new AbortController()
    const stopListening = onOperatorSignals(() => interrupt.abort())
    let result
    try {
      result = await runRemusPrimary({
        hypervisor: hv,
        ...(tieBreaker ? {tieBreaker} : {}),
        domid: dom.domid,
        name: dom.name,
        configJson,
        rune,
        blackhole: flags.blackhole,
        intervalMs,
        // Checked above: without -n the host has network buffering (the sim's: capturing the vif).
        netbuf: !flags.colo && !flags['no-netbuf'] && hostNetworkOf(hv),
        // A checkpoint when the outputs diverge, at the latest every --max-interval (libxl: 5 s).
        ...(flags.colo
          ? {
              colo: {
                maxIntervalMs: flags['max-interval'] ?? COLO_MAX_INTERVAL_MS,
                ...(colo.trigger ? {trigger: colo.trigger} : {}),
                ...(colo.devices ? {devices: colo.devices} : {}),
                ...(heartbeat !== undefined ? {heartbeatTimeoutMs: heartbeat} : {}),
              },
            }
          : {}),
        signal: interrupt.signal,
        startedAt: started,
        onEvent,
        onStreamEvent,
      })
    } finally {
      stopListening()
      setTimeout(() => process.exit(), 3000).unref()
    }
    if (result.exitCode !== 0) throw new XlExit('', result.exitCode)
  }
}

/** -i MS as xl's atoi: 0 (or none) means the default. */
function interval(text: string | undefined): number {
  if (text === undefined) return DEFAULT_INTERVAL_MS
  if (!/^\s*\d+\s*$/.test(text)) throw new XlExit(`xl-ts: remus: -i takes milliseconds, not "${text}"`, 2)
  const n = Number(text)
  return n === 0 ? DEFAULT_INTERVAL_MS : n
}

/** What a released frame shows in --json: the sim guest's step and sequence number (sim), and its length. */
function frameFields(frame: Buffer, sim: SimulationExtras | undefined): Record<string, number> {
  const f = sim?.frameInfo(frame)
  if (!f) return {bytes: frame.length}
  return {step: f.step, seq: f.seq, bytes: frame.length}
}

function withoutKind<T extends {kind: string}>(e: T): Omit<T, 'kind'> {
  const {kind: _kind, ...rest} = e
  return rest
}
