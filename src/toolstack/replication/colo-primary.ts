/**
 * The COLO primary's checkpoint cycle (XEN-FACTS §7.2), one function: suspend (with the
 * secondary's SVM_SUSPENDED), the helper merges the secondary's dirty pages (B) into ours (A) and
 * sends A ∪ B and CHECKPOINT, EMULATOR_CONTEXT + CHECKPOINT_END, resume between the secondary's
 * SVM_READY and SVM_RESUMED, then wait until the proxy asks for the next checkpoint (the guests'
 * outputs diverged) or `maxIntervalMs` has passed, and send CHECKPOINT_STATE NEW.
 *
 * The back channel carries the secondary's CHECKPOINT_STATE records, read here, and its dirty pfn
 * lists, read by the save helper between them. There is no network buffering and no
 * acknowledgement: SVM_READY says the secondary holds the checkpoint.
 */
import {type OwedCallback} from '../helper/index.js'
import {readCheckpointState} from '../libxl/index.js'
import {encodeLibxlRecord} from '../stream/index.js'
import {checkpointFailure, type CycleEnd, type CycleStep, type PrimaryIo, type PrimaryMode} from './cycle.js'
import type {ColoOptions} from './options.js'


export class ColoPrimary implements PrimaryMode {
  readonly name = 'COLO'
  readonly streamType = 'colo'
  readonly acked = 0
  readonly #o: ColoOptions
  #io!: PrimaryIo
  #back = -1
  /** COLO starts with the primary paused (libxl assumes it); it runs from the first resume on. */
  #unpauseAfterFirst = false
  /** The secondary runs from a checkpoint (a failover would start it). */
  #secondaryRuns = false
  /** When both guests last resumed, and when the last checkpoint request (NEW) went out. */
  #resumedAt = 0
  #requestAt = 0
  /** Why the next checkpoint is taken, and when the proxy asked for it (if it did). */
  #reason: 'timer' | 'divergence' = 'timer'
  #requestedAt: number | undefined

  constructor(o: ColoOptions) {
    this.#o = o
  }

  async open(io: PrimaryIo, wayBack: number | undefined): Promise<{backChannel?: number}> {
    this.#io = io
    if (wayBack === undefined) throw new Error('COLO needs the way back from the secondary')
    this.#back = wayBack
    // With COLO disks nothing the guest writes before the first checkpoint would be replicated.
    this.#unpauseAfterFirst = (await io.hypervisor.info(io.domid)).state.paused
    return {backChannel: wayBack}
  }

  /** Checkpoint n, XEN-FACTS §7.2 step by step. */
  async checkpoint(n: number): Promise<CycleEnd> {
    const io = this.#io
    const {helper, writer} = io.stream
    const {trigger, devices} = this.#o
    let owed: OwedCallback | undefined
    let step: CycleStep = 'suspend'
    try {
      // 1. suspend: the guest and its device model's state, the devices' postsuspend, and the
      // secondary's SVM_SUSPENDED (it suspends at our NEW as we do here; read meanwhile).
      owed = await helper.next('suspend')
      const svmSuspended = this.#secondaryRuns ? readCheckpointState(this.#back, 'SVM_SUSPENDED') : undefined
      svmSuspended?.catch(() => undefined)
      const {atMs, deviceState} = await io.suspend()
      const guest = trigger?.reset ? await io.guestCounters() : undefined
      await io.probe?.record(n, {context: true})
      await devices?.postsuspend(n)
      await svmSuspended
      owed.reply(1)

      // 2. libxc: the secondary's dirty pfn list merged into ours, the pages of A ∪ B, the CPU state, CHECKPOINT.
      // 3. checkpoint: the device model's state and CHECKPOINT_END.
      step = 'checkpoint'
      owed = await helper.next('checkpoint')
      await io.writeCheckpointEnd(n, deviceState)
      owed.reply(1)

      // 4. postcopy: the secondary holds the checkpoint (SVM_READY); the proxy's and the disks'
      // preresume; our guest resumes (unpaused after the first); the secondary runs (SVM_RESUMED).
      step = 'resume'
      owed = await helper.next('postcopy')
      await readCheckpointState(this.#back, 'SVM_READY')
      await trigger?.reset?.(guest?.step, guest?.frames)
      await devices?.preresume(n)
      await io.resume()
      await readCheckpointState(this.#back, 'SVM_RESUMED')
      if (n === 1 && this.#unpauseAfterFirst) {
        await io.hypervisor.unpause(io.domid)
        io.log('detail', `COLO: domain ${io.domid} unpaused after the first checkpoint`)
      }
      // The secondary holds a checkpoint and runs: if we die now, it takes over.
      if (!this.#secondaryRuns) await io.guardian?.acknowledged()
      this.#secondaryRuns = true
      this.#resumedAt = performance.now()
      await io.resumed(n, atMs, {
        reason: n === 1 ? 'first' : this.#reason,
        ...(n > 1 && this.#reason === 'divergence' && this.#requestedAt !== undefined ? {requestedAtMs: this.#requestedAt} : {}),
      })
      owed.reply(1)

      // 5. wait_checkpoint: until the proxy asks or the longest interval has passed, then NEW.
      step = 'wait'
      owed = await helper.next('wait_checkpoint')
      if (!(await this.#waitForRequest())) {
        // A clean stop: the secondary waits for NEW and finds libxl END instead.
        await writer.raw(encodeLibxlRecord({kind: 'END'}), 'the end of the COLO stream')
        owed.reply(0)
        return 'stop'
      }
      this.#requestAt = performance.now()
      await writer.record({kind: 'CHECKPOINT_STATE', state: 'NEW'})
      owed.reply(1)
      return 'next'
    } catch (err) {
      owed?.reply(0)
      throw checkpointFailure(n, step, err)
    }
  }

  async close(): Promise<void> {
    await this.#o.trigger?.close().catch(() => undefined)
    await this.#o.devices?.teardown().catch((err: unknown) => this.#io.log('error', `COLO: cannot tear down the disks' replication: ${(err as Error).message}`))
  }

  async settled(): Promise<void> {}

  /**
   * With a heartbeat: did the secondary wait longer than its timeout for our request? Then it may
   * have failed over and run the guest (beyond xl, whose split-brain check is a TODO).
   */
  secondaryMayRun(): boolean {
    const h = this.#o.heartbeatTimeoutMs
    if (h === undefined || !this.#secondaryRuns) return false
    const answered = this.#requestAt >= this.#resumedAt ? this.#requestAt : performance.now()
    return answered - this.#resumedAt > h
  }

  /**
   * Until the trigger asks (the outputs diverged) or the longest interval has passed since both
   * guests resumed; false on a stop request.
   */
  async #waitForRequest(): Promise<boolean> {
    const {trigger, maxIntervalMs} = this.#o
    const since = this.#resumedAt || performance.now()
    const due = since + maxIntervalMs
    let diverged = false
    let wake: () => void = () => undefined
    const request = trigger?.next(since).then(() => {
      diverged = true
      wake()
    })
    request?.catch(() => undefined)
    // Woken at once by the request; otherwise every 20 ms to see a stop request or the timer.
    while (!this.#io.stopRequested() && !diverged && performance.now() < due) {
      const left = due - performance.now()
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, Math.min(left, 20)))
        wake = () => {
          clearTimeout(t)
          r()
        }
      })
    }
    if (this.#io.stopRequested()) return false
    this.#reason = diverged ? 'divergence' : 'timer'
    this.#requestedAt = diverged ? trigger?.lastRequest?.atMs : undefined
    return true
  }
}
