import {Args, Flags} from '@oclif/core'

import {XlCommand, globalFlags, notSupported} from '../cli/index.js'
import {UsageError, XlExit} from '../cli/index.js'
import {libxlJson} from '../cli/index.js'
import type {DomainState} from '../toolstack/hypervisor/index.js'
import {listDomains, storedConfig, type NamedDomainInfo as DomainInfo} from '../toolstack/libxl/index.js'

/** list_domains (xl_info.c): letters for libxl_shutdown_reason 0..5. */
const SHUTDOWN_REASON_LETTERS = '-rscwS'

/** The header line of `xl list` (xl_info.c list_domains). */
export const LIST_HEADER = 'Name                                        ID   Mem VCPUs\tState\tTime(s)'

/** The six state letters: running, blocked, paused, shutdown, shutdown reason, dying. */
export function stateLetters(s: DomainState): string {
  const reason = s.shutdown ? (s.shutdownReason ?? 0) : 0
  const reasonLetter = reason >= 0 && reason < SHUTDOWN_REASON_LETTERS.length ? SHUTDOWN_REASON_LETTERS[reason] : '?'
  return [s.running ? 'r' : '-', s.blocked ? 'b' : '-', s.paused ? 'p' : '-', s.shutdown ? 's' : '-', reasonLetter, s.dying ? 'd' : '-'].join('')
}

/** Memory in MiB as xl shows it: (current_memkb + outstanding_memkb) / 1024, rounded down. */
function memMiB(d: DomainInfo): number {
  return Math.floor(d.currentMemKb / 1024)
}

/** CPU time in seconds as xl computes it: ((float)cpu_time / 1e9). */
function cpuSeconds(d: DomainInfo): number {
  return Math.fround(d.cpuTimeNs) / 1e9
}

/** One row: printf("%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f", ...). */
export function listRow(d: DomainInfo): string {
  const n = (v: number, w: number) => String(v).padStart(w)
  return `${d.name.padEnd(40)} ${n(d.domid, 5)} ${n(memMiB(d), 5)} ${n(d.vcpus, 5)}     ${stateLetters(d.state)}  ${cpuSeconds(d).toFixed(1).padStart(8)}`
}

export default class List extends XlCommand {
  static override summary = 'List information about all or some domains.'

  static override description = `As "xl list": one line per domain with its name, id, memory (MiB), vCPUs, state and CPU time. The state letters are r(unning), b(locked), p(aused), s(hutdown), the shutdown reason (- poweroff, r reboot, s suspend, c crash, w watchdog, S soft reset) and d(ying).

-l prints the domain configs as libxl JSON, as "xl list -l" does. --json (an xl-ts addition for scripts) prints one JSON array with the same facts as the table.

Exit status: 0; 1 when a domain named on the command line does not exist; 2 on bad usage.`

  static override examples = [
    {description: 'All domains:', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'One domain, with its UUID:', command: '<%= config.bin %> <%= command.id %> -v vm1'},
    {description: 'The domain configs as libxl JSON:', command: '<%= config.bin %> <%= command.id %> -l vm1'},
    {description: 'The state of every domain, for a script:', command: "<%= config.bin %> <%= command.id %> --json | jq -r '.[] | \"\\(.name) \\(.stateLetters)\"'"},
  ]

  static override strict = false

  // -v is list's own (--verbose); xl's global -v still works before the command.
  static override baseFlags = globalFlags(['v'])

  static override args = {
    domain: Args.string({description: 'domain name or id (any number of them); all domains when none', ignoreStdin: true}),
  }

  static override flags = {
    long: Flags.boolean({char: 'l', summary: 'Print the domain configs as libxl JSON.'}),
    verbose: Flags.boolean({char: 'v', summary: 'Also print UUIDs, shutdown reason codes and security labels.'}),
    context: Flags.boolean({char: 'Z', summary: 'Also print security labels.'}),
    cpupool: Flags.boolean({char: 'c', summary: 'Also print the cpupool of each domain.'}),
    json: Flags.boolean({summary: 'Print one JSON array of the domains, for scripts.', exclusive: ['long']}),
  }

  async run(): Promise<void> {
    const {flags, argv, nonExistentFlags} = await this.parseXl(List)
    if (nonExistentFlags?.length) throw new UsageError(notSupported(nonExistentFlags[0] as string))
    const hv = await this.hypervisor()

    let domains: DomainInfo[]
    const wanted = argv as string[]
    if (wanted.length === 0) {
      domains = (await listDomains(hv)).sort((a, b) => a.domid - b.domid)
    } else {
      domains = []
      for (const q of wanted) {
        // main_list: a domid that is not there is "Error: Domain 'N' does not exist.", exit 1.
        domains.push(await this.findDomain(q, id => new XlExit(`Error: Domain '${id}' does not exist.`)))
      }
    }

    if (flags.json) {
      this.out(`${JSON.stringify(domains.map(toJson), null, 2)}\n`)
      return
    }
    if (flags.long) {
      const entries: {domid: number; config: Record<string, unknown>}[] = []
      for (const d of domains) {
        // list_domains_details skips domains whose configuration cannot be retrieved (Domain-0).
        const config = await storedConfig(hv, d.domid)
        if (config) entries.push({domid: d.domid, config})
      }
      // yajl's buffer, then puts(): the array, yajl's final newline, and puts' own.
      this.out(`${libxlJson(entries)}\n`)
      return
    }

    const verbose = flags.verbose
    const context = flags.context
    let header = LIST_HEADER
    if (verbose) header += '   UUID                            Reason-Code\tSecurity Label'
    if (context && !verbose) header += '   Security Label'
    if (flags.cpupool) header += '         Cpupool'
    const lines = [header]
    for (const d of domains) {
      let line = listRow(d)
      if (verbose) {
        line += ` ${d.uuid}`
        line += d.state.shutdown ? ` ${(d.state.shutdownReason ?? 0).toString(16).padStart(8)}` : ` ${'-'.padStart(8)}`
      }
      if (verbose || context) line += ` ${'-'.padStart(16)}`
      if (flags.cpupool) line += 'Pool-0'.padStart(16)
      lines.push(line)
    }
    this.out(`${lines.join('\n')}\n`)
  }
}

/** A domain as `list --json` prints it. */
function toJson(d: DomainInfo): Record<string, unknown> {
  return {
    domid: d.domid,
    name: d.name,
    uuid: d.uuid,
    memMiB: memMiB(d),
    vcpus: d.vcpus,
    state: {...d.state},
    stateLetters: stateLetters(d.state),
    cpuTimeS: d.cpuTimeNs / 1e9,
  }
}
