/**
 * Where things are in the store (Xen's docs/misc/xenstore-paths), shared by the toolstack and
 * the back ends that write or read them. The xenstore keys of a domain's device model. libxl's: the QEMU pid (libxl_dm.c writes
 * `<dom path>/image/device-model-pid`) and the device model's own folder
 * (libxl__device_model_xs_path: `/local/domain/<dm domid>/device-model/<domid>`, dm domid 0 here).
 *
 * And, under the latter, `sim-guest-disk/`: the simulated guest's stand-in for Xen's ioreq path.
 * On Xen the guest's emulated disk I/O reaches QEMU through the hypervisor (an ioreq server QEMU
 * registers); the simulated host has none, so libxl tells the sim guest where its device model
 * takes that I/O: a QMP monitor for HMP qemu-io (`monitor`), the FIFO QEMU's stdout (qemu-io's
 * reports) goes to (`output`), the drive the guest writes (`drive`), and the image behind it
 * (`image`, what a test compares). Written only for a simulated guest with a COLO disk.
 */
export function deviceModelPidKey(domid: number): string {
  return `/local/domain/${domid}/image/device-model-pid`
}

export function deviceModelXsPath(domid: number): string {
  return `/local/domain/0/device-model/${domid}`
}

export function simGuestDiskKeys(domid: number): {readonly dir: string; readonly monitor: string; readonly output: string; readonly drive: string; readonly image: string} {
  const dir = `${deviceModelXsPath(domid)}/sim-guest-disk`
  return {dir, monitor: `${dir}/monitor`, output: `${dir}/output`, drive: `${dir}/drive`, image: `${dir}/image`}
}
