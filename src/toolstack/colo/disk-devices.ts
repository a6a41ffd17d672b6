/**
 * The COLO disks as checkpoint devices: libxl_colo_qdisk.c's part of each COLO cycle, on either
 * side, over the toolstack's QMP monitor of the domain's device model (XEN-FACTS §7.2, §7.3, §8).
 *
 * Primary: after each suspend but the first, the replication status (an error stops COLO); at the
 * first preresume the NBD child is attached and replication starts, at every later one the
 * checkpoint; when COLO ends, replication is stopped and the child detached, so the guest's writes
 * go on to its own image alone.
 * Secondary: at the first resume the NBD server and exports and replication start; at every later
 * resume the checkpoint (the guest's own writes since the last one are dropped); after each suspend
 * the status; at failover the active disk is committed into the image and the NBD server stopped.
 */
import type {Hypervisor} from '../hypervisor/index.js'
import type {QmpClient} from '../qmp/index.js'
import {openDeviceModelQmp} from '../libxl/index.js'
import type {LibxlDiskJson} from '../config/index.js'
import type {CheckpointDevices} from '../replication/index.js'
import {coloDisksOf, hasColoDisks, type ColoDisk} from './qdisk-config.js'
import {PrimaryReplication, SecondaryReplication, type FailoverResult, type TeardownReport} from './qdisk-replication.js'

/** The COLO disks of a stored domain config (libxl JSON); none when it has no COLO disk. */
export function coloDisksOfConfig(config: Record<string, unknown> | undefined): ColoDisk[] {
  const disks = (Array.isArray(config?.disks) ? config.disks : []) as LibxlDiskJson[]
  // The toolstack never opens the images: their paths stay as the config has them.
  return hasColoDisks(disks) ? coloDisksOf(disks, (p) => p) : []
}

/** The toolstack's QMP connection to the domain's device model (shared with the device-state saves). */
async function connect(hv: Hypervisor, domid: number): Promise<{qmp: QmpClient; release(): Promise<void>}> {
  try {
    return await openDeviceModelQmp(hv, domid)
  } catch (err) {
    throw new Error(`domain ${domid} has COLO disks but its device model cannot be reached: ${(err as Error).message}`, {cause: err})
  }
}

export class PrimaryColoDisks implements CheckpointDevices {
  #started = false

  private constructor(
    private readonly qmp: QmpClient,
    private readonly release: () => Promise<void>,
    private readonly replication: PrimaryReplication,
    private readonly onLog: (level: 'error' | 'info', text: string) => void,
  ) {}

  static async open(hv: Hypervisor, domid: number, disks: readonly ColoDisk[], onLog: (level: 'error' | 'info', text: string) => void): Promise<PrimaryColoDisks> {
    const {qmp, release} = await connect(hv, domid)
    return new PrimaryColoDisks(qmp, release, new PrimaryReplication(qmp, disks), onLog)
  }

  async postsuspend(n: number): Promise<void> {
    if (n > 1 && this.#started) await this.replication.check()
  }

  /** The first time (the secondary holds checkpoint 1) replication starts; later, a checkpoint. */
  async preresume(): Promise<void> {
    if (this.#started) return this.replication.checkpoint()
    await this.replication.start()
    this.#started = true
  }

  /** Stops replicating (if it started) and closes the monitor; says what failed. */
  async teardown(): Promise<void> {
    let report: TeardownReport | undefined
    try {
      if (this.#started && this.qmp.isOpen) report = await this.replication.teardown()
    } finally {
      this.#started = false
      await this.release()
    }
    if (!report) return
    for (const f of report.failures) this.onLog('error', `COLO: disk teardown: ${f.command} (${f.target}): ${f.message ?? 'failed'}`)
    if (report.ok) this.onLog('info', 'COLO: disk replication stopped; the guest writes its own disks alone')
  }
}

export class SecondaryColoDisks {
  #started = false

  private constructor(
    private readonly release: () => Promise<void>,
    private readonly replication: SecondaryReplication,
  ) {}

  static async open(hv: Hypervisor, domid: number, disks: readonly ColoDisk[]): Promise<SecondaryColoDisks> {
    const {qmp, release} = await connect(hv, domid)
    return new SecondaryColoDisks(release, new SecondaryReplication(qmp, disks))
  }

  async setup(): Promise<void> {
    await this.replication.start()
    this.#started = true
  }

  async preresume(): Promise<void> {
    await this.replication.checkpoint()
  }

  async postsuspend(): Promise<void> {
    await this.replication.check()
  }

  /** The primary is gone: the guest's disk becomes the last checkpoint plus its own writes since. */
  async failover(): Promise<FailoverResult | undefined> {
    if (!this.#started) return undefined
    this.#started = false
    return this.replication.failover()
  }

  async close(): Promise<void> {
    await this.release()
  }
}
