/**
 * A checkpoint probe for Remus and COLO tests: the tests' implementation of CheckpointProbe
 * (hooks.ts), so that a test can check that each checkpoint's memory on the backup equals
 * the primary's at that suspend. Only a test entry program makes one
 * (test/support/install-test-hooks.mjs); the toolstack itself never does.
 *
 *   dir     each side appends {checkpoint, checksum, atMs} lines to DIR/primary.ndjson or
 *           DIR/secondary.ndjson
 *   every   only every K-th checkpoint (default 1); failovers always
 *
 * The checksum is sha256 of the guest's memory file alone for Remus (the backup's vCPU state is
 * applied only at failover), of memory and vCPU context for COLO. The primary takes it while the guest is suspended; the backup while its domain
 * holds exactly that checkpoint (see `checkpointHeldAt`). Sim hosts only: elsewhere there is none.
 *
 * A guest with a device-model disk (COLO disks) adds `disk`, sha256 of its disk image at the same
 * moment; the COLO secondary also checks, once its disk took the checkpoint (`recordView`), that the
 * guest's view of the disk through QEMU holds what the image held when the checkpoint arrived
 * (`{checkpoint, view: {blocks, mismatches}}` lines): its own writes since the last checkpoint gone.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import * as crypto from 'node:crypto'

import {type Hypervisor} from '../hypervisor/index.js'
import type {CheckpointProbe, ProbeRecordOptions} from '../test-hooks.js'

export interface ProbeRecord {
  readonly checkpoint: number
  readonly checksum: string
  readonly failover?: boolean
  /** sha256 of the guest's disk image. */
  readonly disk?: string
}

export interface ProbeViewRecord {
  readonly checkpoint: number
  readonly view: {readonly blocks: number; readonly mismatches: number}
}

/**
 * The backup applies a checkpoint only after answering the checkpoint callback for it, so while it
 * handles the callback of checkpoint k its memory holds checkpoint k-1 (the first checkpoint's
 * memory is applied as it comes: at callback 1 it holds checkpoint 1).
 */
export function checkpointHeldAt(callback: number): number {
  return callback === 1 ? 1 : callback - 1
}

export interface RemusProbeOptions {
  readonly dir: string
  readonly every?: number
}

export class RemusProbe implements CheckpointProbe {
  /** Per checkpoint: each disk block's byte (256: not one byte all over), for recordView. */
  readonly #patterns = new Map<number, number[]>()

  private constructor(
    private readonly hv: Hypervisor,
    private readonly domid: number,
    private readonly file: string,
    private readonly every: number,
  ) {}

  /** A probe writing into `opts.dir`; undefined off a sim host. */
  static open(hv: Hypervisor, domid: number, side: 'primary' | 'secondary', opts: RemusProbeOptions): RemusProbe | undefined {
    if (!hv.simulation) return undefined
    const every = Math.max(1, Math.floor(opts.every ?? 1) || 1)
    return new RemusProbe(hv, domid, path.join(opts.dir, `${side}.ndjson`), every)
  }

  /**
   * Records the memory's checksum as checkpoint `checkpoint` (every K-th, or `force`); with
   * `context`, of the memory and the vCPU context (COLO: the secondary's is applied every time).
   */
  async record(checkpoint: number, opts: ProbeRecordOptions = {}): Promise<void> {
    if (!opts.force && checkpoint % this.every !== 0) return
    const sim = this.hv.simulation!
    const checksum = opts.context ? await sim.checksum(this.domid) : await sim.memoryChecksum(this.domid)
    const image = await sim.diskImage(this.domid)
    const disk = image ? readImage(image, sim.diskBlockBytes) : undefined
    if (disk) this.#patterns.set(checkpoint, disk.patterns)
    const rec: ProbeRecord = {checkpoint, checksum, ...(opts.failover ? {failover: true} : {}), ...(disk ? {disk: disk.sha256} : {})}
    fs.appendFileSync(this.file, `${JSON.stringify(rec)}\n`)
  }

  /** The guest's disk view against the image as `record` saw it for this checkpoint (if it did). */
  async recordView(checkpoint: number): Promise<void> {
    const patterns = this.#patterns.get(checkpoint)
    if (!patterns) return
    this.#patterns.clear()
    const {blocks, mismatches} = await this.hv.simulation!.verifyDiskView(this.domid, patterns)
    const rec: ProbeViewRecord = {checkpoint, view: {blocks, mismatches: mismatches.length}}
    fs.appendFileSync(this.file, `${JSON.stringify(rec)}\n`)
  }
}

/** sha256 of a disk image and the byte each block is filled with (256: not one byte). */
function readImage(file: string, blockBytes: number): {sha256: string; patterns: number[]} {
  const data = fs.readFileSync(file)
  const patterns: number[] = []
  for (let off = 0; off + blockBytes <= data.length; off += blockBytes) {
    const block = data.subarray(off, off + blockBytes)
    const b = block[0]!
    patterns.push(block.every((x) => x === b) ? b : 256)
  }
  return {sha256: crypto.createHash('sha256').update(data).digest('hex'), patterns}
}
