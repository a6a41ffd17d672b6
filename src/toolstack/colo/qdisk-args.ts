/**
 * QEMU's `-drive` arguments for COLO disks, primary or secondary. Pure.
 *
 * Follows libxl_dm.c (XEN-FACTS §8.3), with `if=none` everywhere: our device model runs `-machine
 * none`, which has no IDE or SCSI bus, and the guest's I/O is addressed to a drive by id.
 *
 * Primary: one quorum drive per disk, id = colo-export, child 0 = the target; vote-threshold=1 and
 * read-pattern=fifo, so it reads and writes the target alone until replication hot-adds child 1
 * (the replication node over the NBD client, qdisk-replication.ts). The guest writes to the quorum.
 *
 * Secondary: the target as a drive of its own (id = colo-export: the NBD server exports it and the
 * primary's writes land in it), then a `replication` drive, mode=secondary, over the active qcow2
 * image, whose backing is the hidden qcow2 image, whose backing is the export:
 *     top-<export> (replication) -> active (qcow2) -> hidden (qcow2) -> <export> (target)
 * The replication drive is itself the top (`top-id` = its own id), as libxl does. Measured on QEMU
 * 7.2.22: this layout replicates, discards the secondary guest's writes at each checkpoint and
 * commits them on failover exactly like QEMU's documented layout (a quorum drive as top over the
 * replication node), so the extra quorum is left out. libxl calls every top drive `top-colo`,
 * which two disks cannot share in one QEMU (duplicate id); here it is `top-<export>`.
 * The active and hidden images get node names (`active-<export>`, `hidden-<export>`) so that the
 * end of failover's commit can be seen: they leave the graph when it is done.
 *
 * Paths go in `file.filename=` (not libxl's legacy `file=`, which would take `a:b` as protocol
 * `a`), with commas doubled (qemuOptValue).
 */
import {qemuOptValue} from '../device-model/index.js'
import {qdiskIds, type ColoDisk} from './qdisk-config.js'

export type QdiskMode = 'primary' | 'secondary'

/** The `-drive` option string(s) of one disk. */
export function coloDriveOptions(disk: ColoDisk, mode: QdiskMode): string[] {
  const ids = qdiskIds(disk)
  const ro = disk.readonly ? ',readonly=on' : ''
  const v = qemuOptValue
  if (mode === 'primary') {
    return [
      `if=none,id=${ids.exportId},cache=writeback${ro},driver=quorum,read-pattern=fifo,vote-threshold=1,` +
        `children.0.driver=${disk.format},children.0.file.filename=${v(disk.target)}`,
    ]
  }
  return [
    `if=none,id=${ids.exportId},cache=writeback${ro},driver=${disk.format},file.filename=${v(disk.target)}`,
    `if=none,id=${ids.topId},cache=writeback${ro},driver=replication,mode=secondary,top-id=${ids.topId},` +
      `file.driver=qcow2,file.node-name=${ids.activeNode},file.file.filename=${v(disk.activeDisk)},` +
      `file.backing.driver=qcow2,file.backing.node-name=${ids.hiddenNode},file.backing.file.filename=${v(disk.hiddenDisk)},` +
      `file.backing.backing=${ids.exportId}`,
  ]
}

/** QEMU arguments (`-drive ...` pairs) for all COLO disks of a domain. */
export function qdiskArgs(disks: readonly ColoDisk[], mode: QdiskMode): string[] {
  return disks.flatMap((disk) => coloDriveOptions(disk, mode).flatMap((opts) => ['-drive', opts]))
}

/** The drive the guest's I/O goes to: the quorum on the primary, the top replication drive on the secondary. */
export function guestDrive(disk: ColoDisk, mode: QdiskMode): string {
  const ids = qdiskIds(disk)
  return mode === 'primary' ? ids.exportId : ids.topId
}
