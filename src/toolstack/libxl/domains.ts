/**
 * Domains by qualifier, as libxl finds them (libxl_name_to_domid, xl's find_domain): all digits is
 * a domid ("" is 0, the control domain), anything else a name among the domains the hypervisor
 * lists. Not the hypervisor's to know: Xen has domids; names are the toolstack's.
 */
import {HypervisorError, LIBXL_ERROR, type Hypervisor} from '../hypervisor/index.js'

/** The domid a qualifier names; a HypervisorError `no-such-domain` (libxl's words and rc) when none. */
export async function resolveDomain(hv: Hypervisor, qualifier: string): Promise<number> {
  if (/^[0-9]*$/.test(qualifier)) {
    const domid = qualifier === '' ? 0 : Number(qualifier)
    if (domid === 0) return 0
    try {
      await hv.info(domid)
    } catch (e) {
      if (e instanceof HypervisorError && e.code === 'no-such-domain') {
        throw new HypervisorError('no-such-domain', `domain ${domid} does not exist`, domid, {rc: LIBXL_ERROR.DOMAIN_NOTFOUND, qualifier})
      }
      throw e
    }
    return domid
  }
  const found = (await hv.list()).find((d) => d.name === qualifier)
  if (found) return found.domid
  throw new HypervisorError('no-such-domain', `${qualifier} is an invalid domain identifier (rc=${LIBXL_ERROR.INVAL})`, undefined, {rc: LIBXL_ERROR.INVAL, qualifier})
}
