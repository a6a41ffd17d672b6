import {Args} from '@oclif/core'

import {XlCommand} from '../cli/index.js'
import {XlExit} from '../cli/index.js'
import {HypervisorError} from '../toolstack/hypervisor/index.js'
import {renameDomain} from '../toolstack/libxl/index.js'

export default class Rename extends XlCommand {
  static override summary = 'Rename a domain.'

  static override description = `As "xl rename": gives the domain a new name. Names are unique on a host: a name another domain has is refused.

Exit status: 0 when renamed; 1 when the domain does not exist or the name is taken; 2 on bad usage.`

  static override examples = [
    {description: 'Rename vm1 to web1:', command: '<%= config.bin %> <%= command.id %> vm1 web1'},
    {description: 'Rename domain 7:', command: '<%= config.bin %> <%= command.id %> 7 web1-old'},
  ]

  static override dryRun = 'honour' as const

  static override args = {
    domain: Args.string({description: 'domain name or id', required: true, ignoreStdin: true}),
    'new-name': Args.string({description: 'the new name', required: true, ignoreStdin: true}),
  }

  async run(): Promise<void> {
    const {args} = await this.parseXl(Rename)
    const dom = await this.findDomain(args.domain)
    const newName = args['new-name']
    if (this.dryRun(`rename domain ${dom.domid} (${dom.name}) to ${newName}`)) return
    const hv = await this.hypervisor()
    try {
      await renameDomain(hv, dom.domid, newName)
    } catch (err) {
      // main_rename (xl_misc.c): fprintf(stderr, "Can't rename domain '%s'.\n", dom); return 1.
      // libxl__domain_rename (libxl_domain.c) says why first; here both go on one line.
      if (err instanceof HypervisorError) {
        const why = err.code === 'name-in-use' ? `Domain with name "${newName}" already exists.` : err.message
        throw new XlExit(`Can't rename domain '${args.domain}': ${why}`)
      }
      throw err
    }
    this.logger.detail(`renamed domain ${dom.domid} from ${dom.name} to ${newName}`)
  }
}
