/**
 * A test probe for Remus (inert unless the environment asks for it), so that a test can check that
 * each checkpoint's memory on the backup equals the primary's at that suspend:
 *
 *   XL_TS_TEST_REMUS_PROBE=DIR        each side appends {checkpoint, checksum, atMs} lines to
 *                                     DIR/primary.ndjson or DIR/secondary.ndjson
 *   XL_TS_TEST_REMUS_PROBE_EVERY=K    only every K-th checkpoint (default 1); failovers always
 *
 * The checksum is sha256 of the guest's memory file alone for Remus (the backup's vCPU state is
 * applied only at failover), of memory and vCPU context for COLO. The primary takes it while the guest is suspended; the backup while its domain
 * holds exactly that checkpoint (see `checkpointHeldAt`). Sim hosts only: elsewhere it does nothing.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {asSim, type Hypervisor} from '../hypervisor/index.js'

export const PROBE_ENV = 'XL_TS_TEST_REMUS_PROBE'
export const PROBE_EVERY_ENV = 'XL_TS_TEST_REMUS_PROBE_EVERY'

export interface ProbeRecord {
  readonly checkpoint: number
  readonly checksum: string
  readonly failover?: boolean
}

/**
 * The backup applies a checkpoint only after answering the checkpoint callback for it, so while it
 * handles the callback of checkpoint k its memory holds checkpoint k-1 (the first checkpoint's
 * memory is applied as it comes: at callback 1 it holds checkpoint 1).
 */
export function checkpointHeldAt(callback: number): number {
  return callback === 1 ? 1 : callback - 1
}

export class RemusProbe {
  private constructor(
    private readonly hv: Hypervisor,
    private readonly domid: number,
    private readonly file: string,
    private readonly every: number,
  ) {}

  static fromEnv(hv: Hypervisor, domid: number, side: 'primary' | 'secondary', env: NodeJS.ProcessEnv = process.env): RemusProbe | undefined {
    const dir = env[PROBE_ENV]
    if (!dir || !asSim(hv)) return undefined
    const every = Math.max(1, Math.floor(Number(env[PROBE_EVERY_ENV] ?? '1')) || 1)
    return new RemusProbe(hv, domid, path.join(dir, `${side}.ndjson`), every)
  }

  /**
   * Records the memory's checksum as checkpoint `checkpoint` (every K-th, or `force`); with
   * `context`, of the memory and the vCPU context (COLO: the secondary's is applied every time).
   */
  async record(checkpoint: number, opts: {force?: boolean; failover?: boolean; context?: boolean} = {}): Promise<void> {
    if (!opts.force && checkpoint % this.every !== 0) return
    const sim = asSim(this.hv)!
    const checksum = opts.context ? await sim.checksum(this.domid) : await sim.memoryChecksum(this.domid)
    const rec: ProbeRecord = {checkpoint, checksum, ...(opts.failover ? {failover: true} : {})}
    fs.appendFileSync(this.file, `${JSON.stringify(rec)}\n`)
  }
}
