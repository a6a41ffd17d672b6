import {Args} from '@oclif/core'

import {XlCommand} from '../cli/index.js'

export default class Unpause extends XlCommand {
  static override summary = 'Unpause a paused domain.'

  static override description = `As "xl unpause": a domain paused by "pause" or created with "create -p" runs again.

Exit status: 0 when done; 1 when the domain does not exist or the hypervisor refuses (xl itself ignores that failure and exits 0); 2 on bad usage.`

  static override examples = [
    {description: 'By name:', command: '<%= config.bin %> <%= command.id %> vm1'},
    {description: 'By domain id:', command: '<%= config.bin %> <%= command.id %> 7'},
    {description: 'On the simulated host in ./host-a:', command: '<%= config.bin %> --root ./host-a <%= command.id %> vm1'},
  ]

  static override dryRun = 'honour' as const

  static override args = {
    domain: Args.string({description: 'domain name or id', required: true, ignoreStdin: true}),
  }

  async run(): Promise<void> {
    const {args} = await this.parseXl(Unpause)
    const dom = await this.findDomain(args.domain)
    if (this.dryRun(`unpause domain ${dom.domid} (${dom.name})`)) return
    const hv = await this.hypervisor()
    await hv.unpause(dom.domid)
    this.logger.detail(`unpaused domain ${dom.domid} (${dom.name})`)
  }
}
