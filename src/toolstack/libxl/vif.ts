/**
 * A guest's network output as libxl reaches it: the guest's vif is a dom0 network interface, whose
 * name libxl reads from the vif's backend directory in the store (libxl_netbuffer.c and
 * libxl_colo_proxy.c, get_vifname): `vifname` when the config named the interface, else netback's
 * name for it (libxl__device_nic_devname: `vif<domid>.<devid>`, with `-emu` for the tap of an
 * emulated NIC, type vif_ioemu). What the guest sends is then captured on that interface through
 * the host network port. Only vifs served by dom0 (as libxl's Remus and COLO code assume).
 */
import {HostNetworkError, isInterfaceName, type FrameCapture, type HostNetwork, type Hypervisor, type Store} from '../hypervisor/index.js'

/** The first vif: the one Remus and COLO handle here. */
export const FIRST_VIF = 0

/** The vif's backend directory when dom0 serves it (libxl__domain_device_backend_path(gc, 0, domid, devid, VIF)). */
export function vifBackendPath(domid: number, devid: number): string {
  return `/local/domain/0/backend/vif/${domid}/${devid}`
}

/** The dom0 interface of the guest's vif `devid`, as get_vifname finds it. */
export async function vifInterfaceName(store: Store, domid: number, devid: number = FIRST_VIF): Promise<string> {
  const dir = vifBackendPath(domid, devid)
  const [keys, vifname, type] = await store.transaction(async (tx) => Promise.all([tx.directory(dir), tx.read(`${dir}/vifname`), tx.read(`${dir}/type`)]))
  if (keys.length === 0) throw new HostNetworkError('no-such-interface', `domain ${domid} has no vif ${devid} (nothing at ${dir} in the store)`)
  const name = vifname ?? `vif${domid}.${devid}${type === 'vif_ioemu' ? '-emu' : ''}`
  if (!isInterfaceName(name)) throw new HostNetworkError('bad-request', `domain ${domid}'s vif ${devid}: ${JSON.stringify(name)} at ${dir}/vifname is not an interface name`)
  return name
}

/**
 * Captures what the guest sends on its vif `devid` (default the first), frame by frame in order,
 * until closed or the domain goes away (`ended` says which).
 */
export async function captureGuestOutput(
  hv: Pick<Hypervisor, 'store'>,
  network: HostNetwork,
  domid: number,
  onFrame: (frame: Buffer) => void,
  devid: number = FIRST_VIF,
): Promise<FrameCapture> {
  return network.capture(await vifInterfaceName(hv.store, domid, devid), onFrame)
}
