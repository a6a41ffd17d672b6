/**
 * The COLO disks of a domain config: which of its `LibxlDiskJson`s are COLO block-replication
 * (qdisk) disks, typed, with the names QEMU will know them by. Pure.
 *
 * Facts followed (XEN-FACTS §8.1, libxl_colo_qdisk.c `colo_qdisk_setup`, libxl_device.c
 * `libxl__device_disk_dev_number`):
 * - Under COLO every disk of the domain must be a COLO qdisk: backend qdisk (an unset backend counts
 *   as qdisk: it is what libxl picks for a file image), `colo` set, `colo-host` and `colo-export`
 *   set, `colo-port` > 0, `active-disk` and `hidden-disk` set. Any other disk makes libxl fail the
 *   checkpoint device setup with "device not handled by checkpoint"; here the message also says
 *   which keys the disk lacks.
 * - All COLO disks replicate to one NBD server on the secondary, so they share host and port
 *   ("The host and port of all disks must be the same").
 * - The primary's NBD client node of a disk is `colo_node<N>`, N = libxl's device number of the
 *   vdev (xvd*, hd*, sd*, `d<N>p<M>`, or a plain number).
 *
 * Stricter than libxl, so that a bad config fails here and not in QEMU's command line: the target
 * must be set and be raw or qcow2; the vdev must be one libxl can number; exports, device numbers
 * and the names derived from them must be unique; the export name must be a valid QEMU id (it is
 * the drive id) and the host must not hold characters HMP's `drive_add` cannot take.
 */
import type {LibxlDiskJson} from '../config/index.js'

export type ColoDiskFormat = 'raw' | 'qcow2'

/** One COLO disk, as QEMU and the replication commands need it. */
export interface ColoDisk {
  /** The guest's name of the disk (`xvda`, `hda`, ...). */
  readonly vdev: string
  /** libxl's device number of the vdev (`xvda` = 51712, `hda` = 768, `sda` = 2048). */
  readonly devNumber: number
  /** The disk image (the target, resolved). */
  readonly target: string
  readonly format: ColoDiskFormat
  /** `colo-export`: the NBD export name, and the id of the drive that holds the target. */
  readonly exportName: string
  /** `colo-host` / `colo-port`: the secondary's NBD server. */
  readonly host: string
  readonly port: number
  /** `active-disk` (qcow2, secondary: the secondary guest's writes since the last checkpoint), resolved. */
  readonly activeDisk: string
  /** `hidden-disk` (qcow2, secondary: what the primary's writes overwrote since the last checkpoint), resolved. */
  readonly hiddenDisk: string
  /** True when the disk is not read-write. */
  readonly readonly: boolean
}

/** The names a COLO disk has in QEMU (ids share one namespace with node names). */
export interface QdiskIds {
  /** Primary: the quorum drive (guest I/O). Secondary: the drive of the target, exported over NBD. */
  readonly exportId: string
  /** Secondary: the replication drive, top of the chain (guest I/O). */
  readonly topId: string
  /** Secondary: the node names of the active and hidden qcow2 images (gone once failover has committed). */
  readonly activeNode: string
  readonly hiddenNode: string
  /** Primary: the replication node over the NBD client, quorum child 1. */
  readonly nbdNode: string
}

export type QdiskErrorCode =
  | 'not-handled' // a disk that is not a COLO qdisk (libxl: "device not handled by checkpoint")
  | 'host-port' // the disks name different NBD servers
  | 'bad-disk' // a COLO disk that QEMU could not take (vdev, target, format, names)
  | 'image' // qemu-img failed on an image
  | 'image-size' // an active or hidden image has another size than its target

export class QdiskError extends Error {
  override readonly name = 'QdiskError'
  /** The disk concerned, when it is one. */
  readonly vdev?: string

  constructor(
    readonly code: QdiskErrorCode,
    message: string,
    details: {readonly vdev?: string; readonly cause?: unknown} = {},
  ) {
    super(message, details.cause === undefined ? undefined : {cause: details.cause})
    if (details.vdev !== undefined) this.vdev = details.vdev
  }
}

interface DiskIndex {
  readonly disk: number
  readonly partition: number
}

/**
 * libxl's device_virtdisk_matches: `<prefix><letters>[<partition>]`, the letters a base-26 number
 * (a = 0, z = 25, aa = 26, ...), the partition decimal without a leading zero. At least one letter
 * (libxl would compute a negative disk without one).
 */
function virtdiskMatches(vdev: string, prefix: string, maxIndex: number, maxPartition: number): DiskIndex | undefined {
  if (!vdev.startsWith(prefix)) return undefined
  let index = -1
  let i = prefix.length
  for (; i < vdev.length; i++) {
    const c = vdev.charCodeAt(i) - 97
    if (c < 0 || c > 25) break
    index = (index + 1) * 26 + c
    if (index > maxIndex) return undefined
  }
  if (index < 0) return undefined
  const rest = vdev.slice(i)
  if (rest === '') return {disk: index, partition: 0}
  if (!/^[1-9]\d*$/.test(rest)) return undefined
  const partition = Number(rest)
  return partition > maxPartition ? undefined : {disk: index, partition}
}

/**
 * libxl__device_disk_dev_number(vdev): the device number (xenstore devid) of a virtual disk name, or
 * -1 when libxl cannot number it. `xvd<x>[p]` (disk < 2^20, partition < 256; 202<<8 | disk<<4 | p
 * for disk, p <= 15, else 1<<28 | disk<<8 | p), `d<disk>p<part>` (the same numbers), a plain
 * number up to INT_MAX (decimal, 0x hex, 0 octal), `hd<a-d>[p]` (p <= 63: 3 or 22 <<8 | (disk&1)<<6
 * | p), `sd<a-p>[p]` (p <= 15: 8<<8 | disk<<4 | p).
 */
export function diskDevNumber(vdev: string): number {
  const xen = (d: DiskIndex) => (d.disk <= 15 && d.partition <= 15 ? (202 << 8) | (d.disk << 4) | d.partition : (1 << 28) | (d.disk << 8) | d.partition)
  const dp = /^d(\d+)p(\d+)$/.exec(vdev)
  if (dp) {
    const disk = Number(dp[1])
    const partition = Number(dp[2])
    if (disk < 1 << 20 && partition < 256) return xen({disk, partition})
  }
  const x = virtdiskMatches(vdev, 'xvd', (1 << 20) - 1, 255)
  if (x) return xen(x)
  if (/^(0x[0-9a-f]+|0[0-7]*|[1-9]\d*)$/i.test(vdev)) {
    const n = /^0[0-7]+$/.test(vdev) ? parseInt(vdev, 8) : Number(vdev)
    if (n <= 0x7fffffff) return n
  }
  const hd = virtdiskMatches(vdev, 'hd', 3, 63)
  if (hd) return ((hd.disk < 2 ? 3 : 22) << 8) | ((hd.disk & 1) << 6) | hd.partition
  const sd = virtdiskMatches(vdev, 'sd', 15, 15)
  if (sd) return (8 << 8) | (sd.disk << 4) | sd.partition
  return -1
}

/** The QEMU names of a COLO disk. The export name is the base, so every disk's names differ. */
export function qdiskIds(disk: Pick<ColoDisk, 'exportName' | 'devNumber'>): QdiskIds {
  const e = disk.exportName
  return {
    exportId: e,
    // libxl names every secondary top drive `top-colo`: two COLO disks would clash in one QEMU.
    topId: `top-${e}`,
    activeNode: `active-${e}`,
    hiddenNode: `hidden-${e}`,
    nbdNode: `colo_node${disk.devNumber}`,
  }
}

/** QEMU's id_wellformed(): a letter, then letters, digits, `-`, `.`, `_`. */
const QEMU_ID = /^[A-Za-z][A-Za-z0-9._-]*$/

/** True when the disk asks for COLO (`colo` in its spec), whether or not it is complete. */
function coloEnabled(d: LibxlDiskJson): boolean {
  return d.colo_enable === 'True'
}

/** True when any disk of the domain has `colo` set. */
export function hasColoDisks(disks: readonly LibxlDiskJson[]): boolean {
  return disks.some(coloEnabled)
}

/** What a disk lacks to be a COLO qdisk, in xl's words; empty when nothing. libxl's order. */
function missingKeys(d: LibxlDiskJson): string[] {
  const missing: string[] = []
  if (d.backend !== undefined && d.backend !== 'qdisk') missing.push(`backendtype=qdisk (it is ${d.backend})`)
  if (!coloEnabled(d)) missing.push('colo')
  if (!d.colo_host) missing.push('colo-host')
  if (!d.colo_export) missing.push('colo-export')
  if (!(typeof d.colo_port === 'number' && d.colo_port > 0)) missing.push('colo-port')
  if (!d.active_disk) missing.push('active-disk')
  if (!d.hidden_disk) missing.push('hidden-disk')
  return missing
}

function badDisk(vdev: string, detail: string): QdiskError {
  return new QdiskError('bad-disk', `COLO disk ${vdev}: ${detail}`, {vdev})
}

/**
 * The COLO disks of a domain, in config order. `resolvePath` makes the target, active and hidden
 * paths usable (absolute, or relative to the device model's folder). Throws a QdiskError: any disk
 * that is not a COLO qdisk (`not-handled`), disks with different host or port (`host-port`), a COLO
 * disk QEMU could not take (`bad-disk`). No disks: an empty list.
 */
export function coloDisksOf(disks: readonly LibxlDiskJson[], resolvePath: (p: string) => string): ColoDisk[] {
  const out: ColoDisk[] = []
  for (const d of disks) {
    const devNumber = diskDevNumber(d.vdev)
    const missing = missingKeys(d)
    if (missing.length > 0) {
      throw new QdiskError(
        'not-handled',
        `device not handled by checkpoint (device=vbd:${d.vdev}/${devNumber}): not a COLO qdisk, missing ${missing.join(', ')}`,
        {vdev: d.vdev},
      )
    }
    if (devNumber < 0) throw badDisk(d.vdev, `Invalid or unsupported virtual disk identifier ${d.vdev}`)
    if (!d.pdev_path) throw badDisk(d.vdev, 'no target (image path)')
    if (d.format !== 'raw' && d.format !== 'qcow2') throw badDisk(d.vdev, `format ${d.format} is not supported for COLO (raw or qcow2)`)
    const exportName = d.colo_export!
    if (!QEMU_ID.test(exportName)) {
      throw badDisk(d.vdev, `colo-export ${JSON.stringify(exportName)} is not a valid QEMU id (a letter, then letters, digits, '-', '.', '_')`)
    }
    const host = d.colo_host!
    if (/[\s,"'\\]/.test(host)) throw badDisk(d.vdev, `colo-host ${JSON.stringify(host)} holds a character QEMU's drive_add cannot take`)
    const port = d.colo_port!
    if (!Number.isInteger(port) || port > 65535) throw badDisk(d.vdev, `colo-port ${port} is not a TCP port`)
    const disk: ColoDisk = {
      vdev: d.vdev,
      devNumber,
      target: resolvePath(d.pdev_path),
      format: d.format,
      exportName,
      host,
      port,
      activeDisk: resolvePath(d.active_disk!),
      hiddenDisk: resolvePath(d.hidden_disk!),
      readonly: d.readwrite !== 1,
    }
    const images = new Set([disk.target, disk.activeDisk, disk.hiddenDisk])
    if (images.size !== 3) throw badDisk(d.vdev, 'target, active-disk and hidden-disk must be three different files')
    out.push(disk)
  }
  const first = out[0]
  for (const disk of out) {
    if (first && (disk.host !== first.host || disk.port !== first.port)) {
      throw new QdiskError(
        'host-port',
        `The host and port of all disks must be the same (${first.vdev}: ${first.host}:${first.port}, ${disk.vdev}: ${disk.host}:${disk.port})`,
        {vdev: disk.vdev},
      )
    }
  }
  checkUnique(out)
  return out
}

/** Every QEMU name, device number and image once only, across the disks. */
function checkUnique(disks: readonly ColoDisk[]): void {
  const names = new Map<string, string>()
  const numbers = new Map<number, string>()
  const images = new Map<string, string>()
  for (const disk of disks) {
    const other = numbers.get(disk.devNumber)
    if (other !== undefined) throw badDisk(disk.vdev, `same device number ${disk.devNumber} as ${other}`)
    numbers.set(disk.devNumber, disk.vdev)
    for (const name of Object.values(qdiskIds(disk))) {
      const owner = names.get(name)
      if (owner !== undefined) throw badDisk(disk.vdev, `QEMU name ${name} is also used by ${owner} (colo-export must differ)`)
      names.set(name, disk.vdev)
    }
    for (const image of [disk.target, disk.activeDisk, disk.hiddenDisk]) {
      const owner = images.get(image)
      if (owner !== undefined) throw badDisk(disk.vdev, `image ${image} is also used by ${owner}`)
      images.set(image, disk.vdev)
    }
  }
}
