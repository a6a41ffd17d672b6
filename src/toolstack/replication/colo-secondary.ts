/**
 * The COLO secondary's checkpoint cycle (XEN-FACTS §7.3), one function: libxc found CHECKPOINT, so
 * libxl's records up to CHECKPOINT_END are read (buffered) and the device model's state starts
 * loading while libxc puts the memory in place; the guest resumes between SVM_READY and
 * SVM_RESUMED; the primary's CHECKPOINT_STATE NEW is awaited on the main stream; the guest
 * suspends and SVM_SUSPENDED goes back, after which the helper sends our dirty pfn list (set B).
 *
 * Answers to the helper (libxc's XGR_CHECKPOINT_*): 1 carry on, 2 the channel broke (the helper
 * fails over to the last whole checkpoint), 0 error (the restore fails). The libxl stream reader
 * around it (libxl/stream-reader.ts) gives the cycle its reads (SecondaryIo).
 */
import {HelperEndedError, XGR_CHECKPOINT, type OwedCallback} from '../helper/index.js'
import {ColoStateError, writeCheckpointState} from '../libxl/index.js'
import type {ColoSecondaryEnd, SecondaryIo} from '../libxl/index.js'


/** The secondary's COLO devices (libxl's checkpoint device ops on the restore side). */
export interface SecondaryCheckpointDevices {
  /** The first resume, before SVM_READY: set the devices up and start replicating. */
  setup(): Promise<void>
  /** Every later resume, before SVM_READY (while the primary is still suspended): take the checkpoint. */
  preresume(): Promise<void>
  /** After the guest suspended, before SVM_SUSPENDED: still replicating? */
  postsuspend(): Promise<void>
}

export interface ColoSecondaryOptions {
  readonly devices?: SecondaryCheckpointDevices
  /** The secondary holds checkpoint n exactly and is about to run again (also the probe's moment). */
  readonly onApplied?: (n: number) => Promise<void> | void
  /** The guest is about to suspend for a checkpoint / to run again from one. */
  readonly onSuspending?: () => void
  readonly onResuming?: () => void
}

/** How one cycle ended: the next follows, the primary stopped on purpose, or the cycles broke. */
type SecondaryCycleEnd = 'next' | 'stopped' | 'broken'

export class ColoSecondary {
  readonly #io: SecondaryIo
  readonly #o: ColoSecondaryOptions
  #failure: string | undefined
  #stoppedByPrimary = false
  #running = false

  constructor(io: SecondaryIo, o: ColoSecondaryOptions) {
    this.#io = io
    this.#o = o
  }

  /** Cycle after cycle until the primary stops, the channel breaks or the helper ends. */
  async run(): Promise<ColoSecondaryEnd> {
    for (let n = 1; (await this.checkpoint(n)) === 'next'; n++);
    return {
      ...(this.#failure !== undefined ? {failure: this.#failure} : {}),
      stoppedByPrimary: this.#stoppedByPrimary,
      running: this.#running,
    }
  }

  /** Checkpoint n, XEN-FACTS §7.3 step by step. */
  async checkpoint(n: number): Promise<SecondaryCycleEnd> {
    const io = this.#io
    const {hypervisor: hv, domid, helper, backChannel: back} = io
    const first = n === 1
    let owed: OwedCallback | undefined
    try {
      // checkpoint: libxl's records of the checkpoint, buffered; a stream that breaks meanwhile fails over.
      owed = await helper.next('checkpoint')
      let records
      try {
        records = await io.readCheckpoint(n)
      } catch (err) {
        throw new ColoStateError(err instanceof Error ? err.message : String(err), true)
      }
      // The device model takes its state while libxc puts the memory in place.
      const load = io.loadDevices(n, records)
      io.received(n, records.length + 1)
      owed.reply(XGR_CHECKPOINT.SUCCESS)

      // libxc applies the checkpoint, then postcopy (resume): the devices set up (first time) or
      // checkpointed, SVM_READY, the guest runs (unpaused the first time), SVM_RESUMED.
      owed = await helper.next('postcopy')
      const unloaded = await load
      if (unloaded !== undefined) throw new ColoStateError(unloaded, false)
      await this.#o.onApplied?.(n)
      if (first) {
        await hv.logDirty(domid).enable()
        await this.#o.devices?.setup()
      } else {
        // libxl takes the disks' checkpoint after SVM_READY, when the primary may already run and
        // write: a write that reaches our image before its checkpoint would show in our view (the
        // checkpoint empties the hidden disk that kept the old data). Taken before SVM_READY, the
        // primary is still suspended (QEMU's own COLO orders it so too); the stream is the same.
        await this.#o.devices?.preresume()
      }
      await writeCheckpointState(back, 'SVM_READY')
      this.#o.onResuming?.()
      if (first) await hv.unpause(domid)
      else await hv.resume(domid, {cancel: false})
      this.#running = true
      await writeCheckpointState(back, 'SVM_RESUMED')
      owed.reply(XGR_CHECKPOINT.SUCCESS)

      // wait_checkpoint: the primary's CHECKPOINT_STATE NEW on the main stream.
      owed = await helper.next('wait_checkpoint')
      const {record, index} = await io.nextRecord()
      if (record.kind === 'END') {
        // The primary stopped replicating on purpose: end the helper, then do not fail over.
        this.#stoppedByPrimary = true
        owed.reply(XGR_CHECKPOINT.FAILOVER)
        return 'stopped'
      }
      if (record.kind !== 'CHECKPOINT_STATE' || record.state !== 'NEW') {
        const id = record.kind === 'CHECKPOINT_STATE' ? record.state : record.kind
        throw new ColoStateError(`invalid section: ${id} (record ${index}), expected: NEW`, false)
      }
      owed.reply(XGR_CHECKPOINT.SUCCESS)

      // suspend: the guest, the devices' postsuspend, SVM_SUSPENDED (the helper then sends B).
      owed = await helper.next('suspend')
      this.#o.onSuspending?.()
      await hv.suspend(domid)
      this.#running = false
      await this.#o.devices?.postsuspend()
      await writeCheckpointState(back, 'SVM_SUSPENDED')
      owed.reply(XGR_CHECKPOINT.SUCCESS)
      return 'next'
    } catch (err) {
      // The helper ended without asking (libxc failed over by itself, or failed): it says why.
      if (err instanceof HelperEndedError) return 'broken'
      // One place for every failure: a channel that ended fails over, anything else is an error.
      this.#failure ??= err instanceof Error ? err.message : String(err)
      owed?.reply(err instanceof ColoStateError && !err.ended ? XGR_CHECKPOINT.ERROR : XGR_CHECKPOINT.FAILOVER)
      return 'broken'
    }
  }
}
