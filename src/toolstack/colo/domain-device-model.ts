/**
 * The device model a domain's config asks for, started as libxl starts it (libxl_dm.c, XEN-FACTS
 * §8.3, §9.2): after the domain is built and before it runs. Our device model exists for COLO:
 * - COLO disks: the primary's quorum drives, or the secondary's replication layout when the domain
 *   is restored as a COLO secondary (libxl's colo_restore_enable: migrate-receive --colo);
 * - colo-compare, when the first vif names where the secondary's frames come in; only for a domain
 *   created, not restored, as libxl (a restored copy would also clash with its source's port).
 * A domain that needs neither has none (Xen would give an HVM guest its QEMU anyway; ours would
 * emulate nothing).
 *
 * When: `xl create` before unpausing; a restore (savefile, migration) once the stream is read, from
 * its device state (libxl's domcreate_launch_dm after the stream); a Remus backup at failover; a
 * COLO secondary at its first resume, from the first checkpoint's state.
 */
import type {LibxlDiskJson} from '../config/index.js'
import type {Hypervisor} from '../hypervisor/index.js'
import {deviceModelFolder, hostDiskPath, launchDeviceModel, type DeviceModelEndpoint} from '../libxl/index.js'
import {proxyArgs, proxyEndpointsOf} from './compare-args.js'
import {guestDrive, qdiskArgs, type QdiskMode} from './qdisk-args.js'
import {coloDisksOf, hasColoDisks, type ColoDisk} from './qdisk-config.js'
import {prepareSecondaryImages} from './qdisk-images.js'

export interface DomainDeviceModelOptions {
  /** The domain was restored (a savefile, a migration, a Remus or COLO backup): no colo-compare; its state from the stream. */
  readonly restored?: boolean
  /** Restored as a COLO secondary: the COLO disks get the secondary's layout. */
  readonly coloSecondary?: boolean
  readonly log?: (text: string) => void
  readonly env?: NodeJS.ProcessEnv
}

/** The domain's COLO disks, their paths as this host resolves them. */
export function hostColoDisks(hv: Hypervisor, config: Record<string, unknown>): ColoDisk[] {
  const disks = (Array.isArray(config.disks) ? config.disks : []) as LibxlDiskJson[]
  return hasColoDisks(disks) ? coloDisksOf(disks, (p) => hostDiskPath(hv, p)) : []
}

/**
 * Starts the device model `config` (libxl JSON) asks for; undefined when it asks for none. Throws
 * (QdiskError, ProxyConfigError, DeviceModelError) when it cannot be started; nothing is left then.
 */
export async function startDomainDeviceModel(hv: Hypervisor, domid: number, config: Record<string, unknown>, o: DomainDeviceModelOptions = {}): Promise<DeviceModelEndpoint | undefined> {
  const disks = hostColoDisks(hv, config)
  const mode: QdiskMode | undefined = disks.length === 0 ? undefined : o.coloSecondary ? 'secondary' : 'primary'
  const folder = deviceModelFolder(hv, domid)
  const proxy = o.restored ? undefined : proxyEndpointsOf(config, folder)
  if (!mode && !proxy) return undefined
  if (mode === 'secondary') {
    for (const made of await prepareSecondaryImages(disks)) {
      o.log?.(`device model: ${made.disk.vdev}: active disk ${made.active.path} ${made.active.action}, hidden disk ${made.hidden.path} ${made.hidden.action}`)
    }
  }
  const cInfo = (config.c_info ?? {}) as {name?: unknown}
  const name = typeof cInfo.name === 'string' ? cInfo.name : `domain-${domid}`
  const first = disks[0]
  const t0 = performance.now()
  const endpoint = await launchDeviceModel(hv, domid, {
    name,
    extraArgs: [...(mode ? qdiskArgs(disks, mode) : []), ...(proxy ? proxyArgs(proxy) : [])],
    ...(o.restored ? {restored: true} : {}),
    // Only a simulated guest sends its disk I/O to QEMU this way (Xen's guests go through Xen).
    ...(hv.simulation && mode && first ? {simGuestDisk: {drive: guestDrive(first, mode), image: first.target}} : {}),
    ...(o.env ? {env: o.env} : {}),
  })
  const what = [mode ? `${disks.length} COLO disk(s), ${mode}` : '', proxy ? 'colo-compare' : ''].filter(Boolean).join(', ')
  o.log?.(`device model of domain ${domid} up in ${(performance.now() - t0).toFixed(0)} ms (${what})`)
  return endpoint
}
