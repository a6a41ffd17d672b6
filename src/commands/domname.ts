import {Args} from '@oclif/core'

import {XlCommand} from '../cli/index.js'
import {XlExit} from '../cli/index.js'
import {HypervisorError} from '../toolstack/hypervisor/index.js'
import {domainInfo} from '../toolstack/libxl/index.js'

/** strtol(s, &end, 10) stored in a uint32_t, as main_domname reads the id; undefined when no digits. */
function domidOf(text: string): number | undefined {
  const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)/.exec(text)
  if (!m) return undefined
  let v = BigInt(m[2] as string)
  const LONG_MAX = (1n << 63n) - 1n
  if (v > LONG_MAX) v = m[1] === '-' ? LONG_MAX + 1n : LONG_MAX // strtol saturates
  if (m[1] === '-') v = -v
  return Number(BigInt.asUintN(32, v))
}

export default class Domname extends XlCommand {
  static override summary = 'Convert a domain id to a domain name.'

  static override description = `As "xl domname": prints the name of the domain with that id.

Exit status: 0; 1 when the id is no number or no domain has it; 2 on bad usage.`

  static override examples = [
    {description: 'The name of domain 7:', command: '<%= config.bin %> <%= command.id %> 7'},
    {description: 'In a script:', command: 'name=$(<%= config.bin %> <%= command.id %> "$domid") || exit 1'},
  ]

  static override args = {
    domid: Args.string({description: 'domain id', required: true, ignoreStdin: true}),
  }

  async run(): Promise<void> {
    const {args} = await this.parseXl(Domname)
    const domid = domidOf(args.domid)
    // main_domname (xl_info.c)
    if (domid === undefined) throw new XlExit('Invalid domain id.')
    const hv = await this.hypervisor()
    let name: string
    try {
      name = (await domainInfo(hv, domid)).name
    } catch (err) {
      if (err instanceof HypervisorError && err.code === 'no-such-domain') {
        throw new XlExit(`Can't get domain name of domain id '${domid}', maybe this domain does not exist.`)
      }
      throw err
    }
    this.out(`${name}\n`)
  }
}
