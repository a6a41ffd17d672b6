import {Args, Flags} from '@oclif/core'

import {XlCommand, globalFlags} from '../cli/index.js'
import {LIBXL, XlExit, libxlRc} from '../cli/index.js'
import {HypervisorError} from '../toolstack/hypervisor/index.js'
import {destroyDeviceModel} from '../toolstack/libxl/index.js'

export default class Destroy extends XlCommand {
  static override summary = 'Terminate a domain immediately.'

  static override description = `As "xl destroy": the domain stops at once, without a chance to shut down cleanly, and everything it had is freed. Domain 0 is refused unless -f is given.

Exit status: 0 when the domain is gone; 1 when it does not exist, is domain 0 (without -f) or cannot be destroyed; 2 on bad usage.`

  static override examples = [
    {description: 'Destroy a domain by name:', command: '<%= config.bin %> <%= command.id %> vm1'},
    {description: 'Destroy domain 7:', command: '<%= config.bin %> <%= command.id %> 7'},
    {description: 'Say what would be destroyed, and destroy nothing:', command: '<%= config.bin %> -N <%= command.id %> vm1'},
  ]

  // -f is destroy's own (permit domain 0); xl's global -f still works before the command.
  static override baseFlags = globalFlags(['f'])
  static override dryRun = 'honour' as const

  static override args = {
    domain: Args.string({description: 'domain name or id', required: true, ignoreStdin: true}),
  }

  static override flags = {
    force: Flags.boolean({char: 'f', summary: 'Permit destroying domain 0 (only a disaggregated toolstack can).'}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parseXl(Destroy)
    // A domid that is not there: libxl_domain_destroy fails with ERROR_DOMAIN_NOTFOUND.
    const notFound = () => new XlExit(`destroy failed (rc=${LIBXL.ERROR_DOMAIN_NOTFOUND})`)
    const dom = await this.findDomain(args.domain, notFound)
    if (dom.domid === 0 && !flags.force) {
      // destroy_domain (xl_vmcontrol.c)
      throw new XlExit(
        'Not destroying domain 0; use -f to force. This can only be done when using a disaggregated hardware domain and toolstack.',
      )
    }
    if (this.dryRun(`destroy domain ${dom.domid} (${dom.name})`)) return
    const hv = await this.hypervisor()
    try {
      // libxl__destroy_domid: the device model first, then the domain.
      await destroyDeviceModel(hv, dom.domid)
      await hv.destroy(dom.domid)
    } catch (err) {
      if (err instanceof HypervisorError) {
        // destroy_domain: fprintf(stderr, "destroy failed (rc=%d)\n", rc); exit(EXIT_FAILURE)
        if (err.code === 'no-such-domain') throw notFound()
        throw new XlExit(`destroy failed (rc=${libxlRc(err)}): ${err.message}`)
      }
      throw err
    }
    this.logger.detail(`destroyed domain ${dom.domid} (${dom.name})`)
  }
}
