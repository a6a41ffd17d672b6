import {Args, Flags} from '@oclif/core'

import {XlCommand} from '../cli/index.js'
import {XlExit, libxlRc} from '../cli/index.js'
import {HypervisorError} from '../toolstack/hypervisor/index.js'
import {domainInfo, listDomains, type NamedDomainInfo as DomainInfo} from '../toolstack/libxl/index.js'

/** How often -w looks at the domains it waits for. */
const WAIT_POLL_MS = 100

export default class Shutdown extends XlCommand {
  static override summary = 'Ask a domain to shut down.'

  static override description = `As "xl shutdown": asks the guest to shut down cleanly; it goes away once it has. -a asks every guest (not domain 0). -w waits until each one has shut down (or is gone); -ww waits until each one is gone. -F falls back to the ACPI power button for HVM guests without PV drivers (the simulated guests always listen).

The progress lines ("Shutting down domain N", "Waiting for N domains", "Domain N has been shut down, reason code R", "Domain N has been destroyed") go to stderr, as xl writes them.

Exit status: 0 when the request was made (and with -w, waited out); 1 when a domain does not exist or cannot be asked; 2 on bad usage.`

  static override examples = [
    {description: 'Shut down vm1 and return at once:', command: '<%= config.bin %> <%= command.id %> vm1'},
    {description: 'Shut down vm1 and wait until it has:', command: '<%= config.bin %> <%= command.id %> -w vm1'},
    {description: 'Shut down every guest and wait until all are gone:', command: '<%= config.bin %> <%= command.id %> -a -ww'},
  ]

  static override dryRun = 'honour' as const

  static override args = {
    domain: Args.string({description: 'domain name or id (or -a for all guests)', ignoreStdin: true}),
  }

  static override flags = {
    all: Flags.boolean({char: 'a', summary: 'Shut down all guest domains.'}),
    wait: Flags.boolean({char: 'w', summary: 'Wait for the guest(s) to shut down; -ww waits until they are gone.'}),
    'acpi-fallback': Flags.boolean({char: 'F', summary: 'Fall back to the ACPI power event for HVM guests without PV drivers.'}),
  }

  async run(): Promise<void> {
    // xl counts -w (wait_for_it++): -w waits for shutdown or death, -ww for death. oclif flags
    // cannot repeat, so the count is taken here and one -w is left for the parser.
    const {argv, waits} = countWaits(this.argv)
    const {args, flags} = await this.parseXl(Shutdown, argv)
    const wait = flags.wait ? Math.max(1, waits) : 0

    if (args.domain === undefined && !flags.all) {
      // main_shutdown_or_reboot (xl_vmcontrol.c)
      throw new XlExit('You must specify -a or a domain id.')
    }
    const hv = await this.hypervisor()
    let targets: DomainInfo[]
    if (flags.all) {
      try {
        targets = (await listDomains(hv)).filter(d => d.domid !== 0).sort((a, b) => a.domid - b.domid)
      } catch (err) {
        if (err instanceof HypervisorError) throw new XlExit('libxl_list_domain failed.')
        throw err
      }
    } else {
      targets = [await this.findDomain(args.domain as string)]
    }

    if (this.globals.dryRun) {
      for (const d of targets) this.dryRun(`shut down domain ${d.domid} (${d.name})`)
      return
    }

    for (const d of targets) {
      // shutdown_domain (xl_vmcontrol.c)
      this.logger.plain(`Shutting down domain ${d.domid}`)
      try {
        await hv.shutdown(d.domid)
      } catch (err) {
        if (err instanceof HypervisorError) throw new XlExit(`shutdown failed (rc=${libxlRc(err)})`)
        throw err
      }
    }
    if (wait > 0) await this.waitForDeaths(targets.map(d => d.domid), wait === 1)
  }

  /** wait_for_domain_deaths (xl_vmcontrol.c), by looking at the domains until each has gone. */
  private async waitForDeaths(domids: number[], shutdownIsEnough: boolean): Promise<void> {
    const hv = await this.hypervisor()
    this.logger.plain(`Waiting for ${domids.length} domains`)
    const pending = new Set(domids)
    const shutdownSeen = new Set<number>()
    while (pending.size > 0) {
      for (const domid of [...pending]) {
        let info: DomainInfo | undefined
        try {
          info = await domainInfo(hv, domid)
        } catch (err) {
          if (!(err instanceof HypervisorError && err.code === 'no-such-domain')) throw err
        }
        if (info === undefined) {
          this.logger.plain(`Domain ${domid} has been destroyed`)
          pending.delete(domid)
        } else if (info.state.shutdown && !shutdownSeen.has(domid)) {
          shutdownSeen.add(domid)
          this.logger.plain(`Domain ${domid} has been shut down, reason code ${info.state.shutdownReason ?? 0}`)
          if (shutdownIsEnough) pending.delete(domid)
          else this.logger.plain(`Domain ${domid} continue waiting for death`)
        }
      }
      if (pending.size > 0) await new Promise(resolve => setTimeout(resolve, WAIT_POLL_MS))
    }
  }
}

/** Counts -w (also in groups such as -ww or -aw, and --wait) and leaves a single -w. */
function countWaits(argv: readonly string[]): {argv: string[]; waits: number} {
  let waits = 0
  const out: string[] = []
  for (const [i, a] of argv.entries()) {
    if (a === '--') {
      out.push(...argv.slice(i))
      break
    }
    if (a === '--wait') {
      waits++
      if (waits === 1) out.push(a)
      continue
    }
    if (/^-[awF]+$/.test(a)) {
      const letters = [...a.slice(1)]
      const w = letters.filter(c => c === 'w').length
      if (w > 0 && waits === 0) out.push('-w')
      waits += w
      for (const c of new Set(letters.filter(c => c !== 'w'))) out.push(`-${c}`)
      continue
    }
    out.push(a)
  }
  return {argv: out, waits}
}
