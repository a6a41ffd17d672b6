/**
 * The secondary's active and hidden qcow2 images of COLO disks: made when missing, checked when
 * there. With qemu-img (Debian's qemu-utils), argv only, through node's execFile, not execa (the
 * card's package): this runs inside the bundled sim domain process, which loads no execa. Loading
 * it there costs 67-77 ms (cold, 7 runs) against 4.6 ms for a `qemu-img info` (median of 7), and
 * bundling it slows every domain start by ~12 ms (device-model/device-model.ts, spawnQemu).
 *
 * Facts followed (QEMU-REPLICATION.md, Task 3): the target, the active and the hidden image must
 * have the same virtual size, else QEMU refuses only when replication starts (`xen-set-replication`:
 * "Active disk, hidden disk, secondary disk's length are not the same"), long after the device
 * model came up. So the size is read from the target (`qemu-img info --output=json -U`: -U reads
 * an image another QEMU has open) and an existing image of another size, or one that is not qcow2,
 * is refused here. New images are plain qcow2 (`qemu-img create -f qcow2 <path> <bytes>`), without
 * a backing file: QEMU's command line gives the chain (qdisk-args.ts).
 *
 * A relative path is given to qemu-img as `./path`, so a colon in it is not read as a protocol.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {execFile} from 'node:child_process'

import {QdiskError, type ColoDisk} from './qdisk-config.js'

/** Per qemu-img run. */
const QEMU_IMG_TIMEOUT_MS = 10_000

/** What prepareSecondaryImages did with one image. */
export interface PreparedImage {
  readonly path: string
  readonly role: 'active' | 'hidden'
  /** `created`: it was missing; `kept`: it was there, qcow2, of the right size. */
  readonly action: 'created' | 'kept'
  /** Its virtual size, bytes (= the target's). */
  readonly size: number
}

export interface PreparedDisk {
  readonly disk: ColoDisk
  readonly active: PreparedImage
  readonly hidden: PreparedImage
}

/** A path qemu-img will not take for `protocol:rest`. */
function imgPath(p: string): string {
  return path.isAbsolute(p) || p.startsWith('./') || p.startsWith('../') ? p : `./${p}`
}

export interface ImageOptions {
  /** The folder relative paths are relative to (default: ours); give the device model's folder. */
  readonly cwd?: string
}

async function qemuImg(args: string[], vdev: string, what: string, cwd: string | undefined): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const child = execFile('qemu-img', args, {timeout: QEMU_IMG_TIMEOUT_MS, maxBuffer: 1 << 20, ...(cwd === undefined ? {} : {cwd})}, (err, stdout, stderr) => {
      if (!err) return resolve(stdout)
      const said = (stderr || err.message).trim()
      reject(new QdiskError('image', `COLO disk ${vdev}: ${what}: ${said}`, {vdev}))
    })
    child.stdin?.end()
  })
}

/** The virtual size of an image, read with `qemu-img info` (also while a QEMU has it open). */
export async function imageVirtualSize(file: string, format: 'raw' | 'qcow2', options: ImageOptions & {readonly vdev?: string} = {}): Promise<number> {
  const vdev = options.vdev ?? file
  const out = await qemuImg(['info', '--output=json', '-U', '-f', format, imgPath(file)], vdev, `cannot read ${format} image ${file}`, options.cwd)
  let size: unknown
  try {
    size = (JSON.parse(out) as {'virtual-size'?: unknown})['virtual-size']
  } catch (err) {
    throw new QdiskError('image', `COLO disk ${vdev}: qemu-img info ${file}: not JSON`, {vdev, cause: err})
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new QdiskError('image', `COLO disk ${vdev}: qemu-img info ${file}: no virtual-size`, {vdev})
  }
  return size
}

function exists(file: string, cwd: string | undefined): boolean {
  try {
    fs.statSync(cwd === undefined ? file : path.resolve(cwd, file))
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}

async function prepareImage(disk: ColoDisk, role: 'active' | 'hidden', size: number, cwd: string | undefined): Promise<PreparedImage> {
  const file = role === 'active' ? disk.activeDisk : disk.hiddenDisk
  const key = `${role}-disk`
  if (!exists(file, cwd)) {
    await qemuImg(['create', '-q', '-f', 'qcow2', imgPath(file), String(size)], disk.vdev, `cannot create ${key} ${file}`, cwd)
    return {path: file, role, action: 'created', size}
  }
  const have = await imageVirtualSize(file, 'qcow2', {vdev: disk.vdev, ...(cwd === undefined ? {} : {cwd})})
  if (have !== size) {
    throw new QdiskError(
      'image-size',
      `COLO disk ${disk.vdev}: ${key} ${file} is ${have} bytes, its target ${disk.target} is ${size} bytes: ` +
        `they must be the same (QEMU: "Active disk, hidden disk, secondary disk's length are not the same"); remove it to have it made again`,
      {vdev: disk.vdev},
    )
  }
  return {path: file, role, action: 'kept', size}
}

/**
 * Makes sure each disk's active and hidden qcow2 images exist with its target's virtual size:
 * creates the missing ones, keeps the right ones, refuses (QdiskError `image-size`) one of another
 * size and (`image`) one qemu-img cannot read as qcow2, a missing target, a failed create.
 * Disks are done one after the other; on a refusal, images made before it stay.
 */
export async function prepareSecondaryImages(disks: readonly ColoDisk[], options: ImageOptions = {}): Promise<PreparedDisk[]> {
  const done: PreparedDisk[] = []
  const cwd = options.cwd
  for (const disk of disks) {
    // QEMU's size of the target: whole 512-byte sectors (a 1000-byte raw file is 1024), as qcow2's.
    const size = await imageVirtualSize(disk.target, disk.format, {vdev: disk.vdev, ...(cwd === undefined ? {} : {cwd})})
    const active = await prepareImage(disk, 'active', size, cwd)
    const hidden = await prepareImage(disk, 'hidden', size, cwd)
    done.push({disk, active, hidden})
  }
  return done
}
