/**
 * The host network port: what the toolstack needs of dom0's network to read a guest's output. On
 * Xen a guest's frames are not the hypervisor's: netback hands them to dom0 as frames arriving on
 * a network interface (the vif, `vif<domid>.<devid>` or the name its backend's `vifname` key
 * gives), and whoever wants them captures them there. The toolstack finds the interface's name in
 * the store (../libxl/vif.ts) and captures it through this port.
 *
 * Back ends: the simulated host's (sim/host-network.ts: the sim's netback serves each vif's frames
 * on a socket named as the interface). Xen's belongs to the xen back end and is not written yet:
 * there it is an AF_PACKET socket bound to the interface's index, taking the frames that come in
 * on it (PACKET_HOST/PACKET_OTHERHOST: the guest's transmissions), which drops frames when its
 * receive buffer is full, as the sim's reader does.
 */

/** Why a capture ended: `closed` by its reader, or the interface is `gone` (its domain went away). */
export type CaptureEnd = 'closed' | 'gone'

/** A running capture of one interface. */
export interface FrameCapture {
  /** The interface captured. */
  readonly ifname: string
  /** Settles (never rejects) when the capture ends; no frame is handed over after that. */
  readonly ended: Promise<CaptureEnd>
  /** Stops the capture (resolves `ended` with `closed` unless it ended before). */
  close(): Promise<void>
}

export type HostNetworkErrorCode =
  | 'no-such-interface' // no dom0 interface of that name (the domain, or its vif, is not there)
  | 'bad-request' // not an interface name
  | 'failure' // the capture could not be opened or broke

export class HostNetworkError extends Error {
  override readonly name = 'HostNetworkError'
  constructor(
    readonly code: HostNetworkErrorCode,
    message: string,
  ) {
    super(message)
  }
}

/** Linux's IFNAMSIZ is 16 bytes with the terminating NUL. */
export const IFNAME_MAX = 15

/** Is `name` a network interface name Linux accepts (dev_valid_name), in the characters xenstore allows? */
export function isInterfaceName(name: string): boolean {
  return typeof name === 'string' && name.length <= IFNAME_MAX && /^[A-Za-z0-9_.-]+$/.test(name) && name !== '.' && name !== '..'
}

export interface HostNetwork {
  /**
   * Captures the frames that come in on dom0's interface `ifname` (a vif: the guest's output), in
   * the order they arrive, each handed whole to `onFrame`, until closed or the interface goes away.
   * Several captures of one interface may run at once, each gets every frame. A capture that does
   * not keep up loses frames (the guest is never held up by it). Throws HostNetworkError
   * `no-such-interface` when there is no such interface.
   */
  capture(ifname: string, onFrame: (frame: Buffer) => void): Promise<FrameCapture>
}
