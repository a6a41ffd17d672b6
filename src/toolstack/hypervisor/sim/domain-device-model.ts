/**
 * A simulated domain's device model: the QEMU that Xen's toolstack starts for an HVM guest, here
 * only for a guest that needs one for COLO (XEN-FACTS §8.3, §9.2): COLO disks (the primary's quorum
 * drive, or the secondary's replication layout when restored as a COLO secondary) and the userspace
 * proxy (colo-compare, when the first vif names where the secondary's frames come in; only for a
 * domain created, not restored, as libxl).
 *
 * It is started by the domain process before the domain is ready and ends with it (the device
 * model's parent-death signal covers a domain process that is killed). Two QMP monitors: the
 * domain's own (qmp.sock, held by the device-model manager: the guest's disk requests go there as
 * HMP `qemu-io`) and the toolstack's (qmp-libxl.sock, where xl-ts drives replication).
 *
 * Disk paths: on the simulated host a relative disk path is relative to the host's state folder,
 * so two simulated hosts on one machine keep apart what two real hosts would.
 */
import * as path from 'node:path'

import {proxyArgs, proxyEndpointsOf} from '../../colo/index.js'
import {coloDisksOf, hasColoDisks, type ColoDisk} from '../../colo/index.js'
import {guestDrive, qdiskArgs, type QdiskMode} from '../../colo/index.js'
import {prepareSecondaryImages} from '../../colo/index.js'
import {QemuIo} from '../../colo/index.js'
import {startDeviceModel, type DeviceModel} from '../../device-model/index.js'
import type {LibxlDiskJson} from '../../config/index.js'
import {GuestDiskQueue} from './guest-disk.js'
import type {LaunchSpec} from './layout.js'

export interface DomainDeviceModel {
  readonly dm: DeviceModel
  readonly mode: QdiskMode | undefined
  /** The guest's first COLO disk, where its disk writes go. */
  readonly disk?: {readonly queue: GuestDiskQueue; readonly bytes: number; readonly drive: string; readonly io: QemuIo}
}

/** A disk path as the simulated host resolves it. */
export function simDiskPath(root: string, p: string): string {
  return path.isAbsolute(p) ? p : path.join(root, p)
}

/** The image the guest's disk writes land in on this host (its first COLO disk's target), if any. */
export function guestDiskImage(launch: Pick<LaunchSpec, 'config' | 'root'>): string | undefined {
  const allDisks = (Array.isArray(launch.config.disks) ? launch.config.disks : []) as LibxlDiskJson[]
  if (!hasColoDisks(allDisks)) return undefined
  return coloDisksOf(allDisks, (p) => simDiskPath(launch.root, p))[0]?.target
}

/**
 * Starts the device model a domain needs (undefined: none). `onDiskProgress` is called whenever a
 * guest disk request completes.
 */
export async function startDomainDeviceModel(
  launch: LaunchSpec,
  folder: string,
  log: (text: string) => void,
  onDiskProgress: () => void,
): Promise<DomainDeviceModel | undefined> {
  const config = launch.config
  const allDisks = (Array.isArray(config.disks) ? config.disks : []) as LibxlDiskJson[]
  const disks: ColoDisk[] = hasColoDisks(allDisks) ? coloDisksOf(allDisks, (p) => simDiskPath(launch.root, p)) : []
  const mode: QdiskMode | undefined = disks.length === 0 ? undefined : launch.coloSecondary ? 'secondary' : 'primary'
  // libxl gives colo-compare only to a domain it creates, not to one it restores (an incoming
  // migration, a COLO secondary): a restored copy would also clash with its source's listening port.
  const proxy = launch.forRestore ? undefined : proxyEndpointsOf(config, folder)
  if (!mode && !proxy) return undefined

  if (mode === 'secondary') {
    for (const made of await prepareSecondaryImages(disks)) {
      log(`device model: ${made.disk.vdev}: active disk ${made.active.path} ${made.active.action}, hidden disk ${made.hidden.path} ${made.hidden.action}`)
    }
  }
  const extraArgs = [...(mode ? qdiskArgs(disks, mode) : []), ...(proxy ? proxyArgs(proxy) : [])]
  const t0 = performance.now()
  const dm = await startDeviceModel({folder, name: String((launch.config.c_info as {name?: unknown} | undefined)?.name ?? `domain-${launch.domid}`), extraArgs, toolstackMonitor: true})
  log(`device model: QEMU ${dm.pid} up in ${(performance.now() - t0).toFixed(0)} ms (${[mode ? `${disks.length} COLO disk(s), ${mode}` : '', proxy ? 'colo-compare' : ''].filter(Boolean).join(', ')})`)
  // QEMU's stderr goes to the domain log as it comes (its stdout carries qemu-io's reports).
  dm.onOutput((line) => {
    if (line.stream === 'stderr') log(`device model: ${line.text}`)
  })
  dm.exited.then((e) => log(`device model: QEMU ${dm.pid} ended (${e.signal ?? `exit ${e.code}`})`)).catch(() => undefined)

  if (!mode) return {dm, mode}
  const first = disks[0]!
  const drive = guestDrive(first, mode)
  const bytes = await driveBytes(dm, drive)
  const io = new QemuIo(dm.qmp, (listener) => dm.onOutput(listener))
  const queue = new GuestDiskQueue((offset, length, pattern) => io.write(drive, pattern, offset, length), 16, onDiskProgress)
  return {dm, mode, disk: {queue, bytes, drive, io}}
}

/** The virtual size of a drive, from QEMU (query-block). */
async function driveBytes(dm: DeviceModel, drive: string): Promise<number> {
  const blocks = await dm.qmp.execute<{device: string; qdev?: string; inserted?: {image?: {'virtual-size'?: number}}}[]>('query-block')
  const size = blocks.find((b) => b.device === drive)?.inserted?.image?.['virtual-size']
  if (typeof size !== 'number') throw new Error(`device model: no drive ${drive} in query-block`)
  return size
}
