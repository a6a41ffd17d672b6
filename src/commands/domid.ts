import {Args} from '@oclif/core'

import {XlCommand} from '../cli/index.js'
import {XlExit} from '../cli/index.js'
import {listDomains} from '../toolstack/libxl/index.js'

export default class Domid extends XlCommand {
  static override summary = 'Convert a domain name to a domain id.'

  static override description = `As "xl domid": prints the id of the domain with that name. The name is taken as a name even when it is all digits.

Exit status: 0; 1 when no domain has that name; 2 on bad usage.`

  static override examples = [
    {description: 'The id of vm1:', command: '<%= config.bin %> <%= command.id %> vm1'},
    {description: 'In a script:', command: 'id=$(<%= config.bin %> <%= command.id %> vm1) || exit 1'},
  ]

  static override args = {
    name: Args.string({description: 'domain name', required: true, ignoreStdin: true}),
  }

  async run(): Promise<void> {
    const {args} = await this.parseXl(Domid)
    const hv = await this.hypervisor()
    // libxl_name_to_domid: a search of the domain list by name.
    const dom = (await listDomains(hv)).find(d => d.name === args.name)
    if (!dom) {
      // main_domid (xl_info.c)
      throw new XlExit(`Can't get domid of domain name '${args.name}', maybe this domain does not exist.`)
    }
    this.out(`${dom.domid}\n`)
  }
}
