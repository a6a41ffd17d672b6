/**
 * The COLO primary's devices, set up before replication starts (libxl_colo_save_setup's device
 * part, XEN-FACTS §7.1): the userspace proxy when the domain's device model runs colo-compare (the
 * first vif names where the secondary's frames come in), and the COLO disks. Either may be absent:
 * without colo-compare the timer alone takes checkpoints (what libxl's userspace mode does when
 * nobody asks); without COLO disks there is no disk replication.
 */
import type {HostNetwork, Hypervisor} from '../hypervisor/index.js'
import {captureGuestOutput, deviceModelOf} from '../libxl/index.js'
import {ProxyConfigError, proxyEndpointsOf, type TcpEndpoint} from './compare-args.js'
import {QemuColoCompare, type LogLevel, type ReleaseReason} from './compare-proxy.js'
import {PrimaryColoDisks} from './disk-devices.js'
import type {ColoDisk} from './qdisk-config.js'

/** Setting up failed: xl's lines for it (libxl's "Domain N:..." log lines). */
export class ColoSetupError extends Error {
  override readonly name = 'ColoSetupError'
  constructor(readonly lines: readonly string[]) {
    super(lines.join('; '))
  }
}

export interface PrimaryColoDevicesOptions {
  readonly hypervisor: Hypervisor
  /** Where the PVM's output is captured for colo-compare (its vif). */
  readonly network: HostNetwork
  readonly domid: number
  /** The stored domain config (libxl JSON). */
  readonly config: Record<string, unknown> | undefined
  readonly disks: readonly ColoDisk[]
  /** A frame colo-compare let out (performance.now() time), and why. */
  readonly onRelease?: (frame: Buffer, atMs: number, via: ReleaseReason) => void
  readonly onLog: (level: LogLevel | 'detail', text: string) => void
}

export interface PrimaryColoDevices {
  readonly trigger?: QemuColoCompare
  readonly devices?: PrimaryColoDisks
  /** Where colo-compare takes the secondary's frames. */
  readonly secondaryIn?: TcpEndpoint
}

export async function openPrimaryColoDevices(o: PrimaryColoDevicesOptions): Promise<PrimaryColoDevices> {
  const {hypervisor: hv, domid} = o
  const endpoint = await deviceModelOf(hv, domid)
  let endpoints
  try {
    endpoints = endpoint ? proxyEndpointsOf(o.config, endpoint.folder) : undefined
  } catch (err) {
    if (err instanceof ProxyConfigError) throw new ColoSetupError([`Domain ${domid}:COLO: ${err.message}`])
    throw err
  }
  let trigger: QemuColoCompare | undefined
  if (endpoints) {
    try {
      trigger = await QemuColoCompare.start({
        endpoints,
        subscribe: (onFrame) => captureGuestOutput(hv, o.network, domid, onFrame),
        // The sim guest's frames carry their sequence number: reset() waits for the PVM's last ones.
        ...(hv.simulation ? {frameIndex: (frame: Buffer) => hv.simulation?.frameInfo(frame)?.seq} : {}),
        ...(o.onRelease ? {onRelease: o.onRelease} : {}),
        onLog: (level, text) => o.onLog(level, `COLO proxy: ${text}`),
      })
    } catch (err) {
      throw new ColoSetupError([`Domain ${domid}:COLO: cannot start the userspace proxy: ${(err as Error).message}`])
    }
  }
  let devices: PrimaryColoDisks | undefined
  if (o.disks.length > 0) {
    try {
      devices = await PrimaryColoDisks.open(hv, domid, o.disks, (level, text) => o.onLog(level, text))
    } catch (err) {
      await trigger?.close()
      throw new ColoSetupError([
        `Domain ${domid}:COLO: cannot reach the device model: ${(err as Error).message}`,
        `Domain ${domid}:COLO: failed to setup device for guest with domid ${domid}, rc -3`,
      ])
    }
  }
  return {...(trigger ? {trigger} : {}), ...(devices ? {devices} : {}), ...(endpoints ? {secondaryIn: endpoints.secondaryIn} : {})}
}
