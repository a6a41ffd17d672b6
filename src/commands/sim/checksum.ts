import {Args, Flags} from '@oclif/core'

import {XlCommand} from '../../cli/index.js'
import {XlExit} from '../../cli/index.js'

export default class SimChecksum extends XlCommand {
  static override summary = "Print the checksum of a simulated domain's memory and vCPU state."

  static override description = `Prints the sha256 (hex) of the guest memory of a domain on the simulated host, followed by its vCPU context, taken while the guest is held still. Two domains with the same checksum hold the same memory and state: this is how a migration, Remus or COLO checkpoint is checked. A paused domain's checksum does not change.

--verify also checks every page (its header, body and tail agree with its pfn and the step that wrote it) and fails naming the first bad pfns.

Only the sim back end has this: on another back end it fails with a clear message.

Exit status: 0; 1 when the domain does not exist, a page is bad (--verify), or the back end is not the sim; 2 on bad usage.`

  static override examples = [
    {description: 'The checksum of vm1:', command: '<%= config.bin %> <%= command.id %> vm1'},
    {
      description: 'Compare a migrated guest on two simulated hosts:',
      command: 'test "$(<%= config.bin %> --root ./host-a <%= command.id %> vm1)" = "$(<%= config.bin %> --root ./host-b <%= command.id %> vm1)"',
    },
    {description: 'Also check every page:', command: '<%= config.bin %> <%= command.id %> --verify vm1'},
  ]

  static override args = {
    domain: Args.string({description: 'domain name or id', required: true, ignoreStdin: true}),
  }

  static override flags = {
    verify: Flags.boolean({summary: 'Also check the integrity of every page; exit 1 naming the first bad pfns.'}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parseXl(SimChecksum)
    const hv = await this.hypervisor()
    const sim = hv.simulation
    if (!sim) throw new XlExit(`xl-ts: sim checksum: not supported by the ${hv.backend} back end: only simulated domains (--backend sim) have a memory checksum`)
    const dom = await this.findDomain(args.domain)
    if (dom.domid === 0) throw new XlExit(`xl-ts: sim checksum: Domain-0 (domain 0) has no simulated memory`)
    if (flags.verify) {
      const report = await sim.verifyIntegrity(dom.domid)
      if (!report.ok) {
        const first = report.bad.map(p => `0x${p.pfn.toString(16)} (${p.reason})`).join(', ')
        throw new XlExit(`xl-ts: sim checksum: domain ${dom.domid} (${dom.name}): ${report.badCount} of ${report.pages} pages are bad; first: ${first}`)
      }
      this.logger.detail(`domain ${dom.domid}: all ${report.pages} pages consistent (max generation ${report.maxGeneration})`)
    }
    this.out(`${await sim.checksum(dom.domid)}\n`)
  }
}
