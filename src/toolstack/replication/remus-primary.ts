/**
 * The Remus primary's checkpoint cycle (XEN-FACTS §10.2), one function: suspend, the helper sends
 * the dirty pages and CHECKPOINT, resume, EMULATOR_CONTEXT + CHECKPOINT_END, commit, the interval.
 * Network output is held per epoch (sim-netbuf.ts) and let out when the backup acknowledges the
 * checkpoint on the way back (one CHECKPOINT_END record each; with -b, at commit, as xl does).
 *
 * Beyond xl: checkpoints start every `intervalMs` counted from the previous suspend (xl waits the
 * interval after each checkpoint, so its period is the interval plus the checkpoint); an operator's
 * interrupt stops replication cleanly: after the next whole checkpoint the stream ends with libxc
 * END and libxl END, which an xl-ts backup takes as "discard your copy" rather than a failover.
 */
import {FdError, readExact} from '../fd/index.js'
import type {HostNetwork} from '../hypervisor/index.js'
import {type OwedCallback} from '../helper/index.js'
import {LIBXL, encodeLibxcRecord, encodeLibxlRecord} from '../stream/index.js'
import {SimNetBuffer} from './sim-netbuf.js'
import {checkpointFailure, type CycleEnd, type CycleStep, type PrimaryIo, type PrimaryMode} from './cycle.js'
import type {RemusEvent} from './events.js'

export interface RemusModeOptions {
  /** -i: ms between checkpoints (suspend to suspend). */
  readonly intervalMs: number
  /** -b: no backup, no acknowledgements: an epoch goes out at commit. */
  readonly blackhole: boolean
  /** Network output buffering: the host network the guest's output is captured on, or false (-n: none). */
  readonly netbuf: HostNetwork | false
  readonly onEvent: (e: RemusEvent) => void
  /** performance.now() of the session's start (events count from it). */
  readonly startedAt: number
}

export class RemusPrimary implements PrimaryMode {
  readonly name = 'Remus'
  readonly streamType = 'remus'
  readonly #o: RemusModeOptions
  #io!: PrimaryIo
  #netbuf: SimNetBuffer | undefined
  #acked = 0
  #ackLoop: Promise<void> | undefined
  /** Why the way back ended (the backup is gone), once it has. */
  #ackEnded: string | undefined
  /** When the next checkpoint is due: every interval from the first, or at once when behind. */
  #due = 0

  constructor(o: RemusModeOptions) {
    this.#o = o
  }

  get acked(): number {
    return this.#acked
  }

  async open(io: PrimaryIo, wayBack: number | undefined): Promise<{backChannel?: number}> {
    this.#io = io
    if (wayBack !== undefined) this.#ackLoop = this.#readAcks(wayBack)
    if (this.#o.netbuf) this.#netbuf = await SimNetBuffer.start(io.hypervisor, this.#o.netbuf, io.domid, (frames, epoch) => this.#released(frames, epoch))
    return {}
  }

  /** Checkpoint n, XEN-FACTS §10.2 step by step. */
  async checkpoint(n: number): Promise<CycleEnd> {
    const io = this.#io
    const {helper, writer} = io.stream
    let owed: OwedCallback | undefined
    let step: CycleStep = 'suspend'
    try {
      // 1. suspend: libxl__domain_suspend, then the devices' postsuspend (a new network epoch).
      owed = await helper.next('suspend')
      const {atMs, deviceState} = await io.suspend()
      this.#netbuf?.boundary(n)
      await io.probe?.record(n)
      owed.reply(1)

      // 2. libxc sends the dirty pages, the CPU state and CHECKPOINT.
      // 3. postcopy: the devices' preresume (no DRBD here), then the guest resumes (suspend_cancel).
      step = 'resume'
      owed = await helper.next('postcopy')
      await io.resume()
      await io.resumed(n, atMs)
      owed.reply(1)

      // 4. checkpoint: the device model's state and CHECKPOINT_END, the devices' commit (with no
      // acknowledgement to wait for, the epoch goes out now), then the interval.
      step = 'checkpoint'
      owed = await helper.next('checkpoint')
      await io.writeCheckpointEnd(n, deviceState)
      if (this.#o.blackhole) this.#netbuf?.release(n)
      step = 'wait'
      if (!io.stopRequested()) await this.#waitUntil(this.#dueAfter(n, atMs))
      if (io.stopRequested()) {
        // A clean stop: the backup's helper reads libxc END, then its toolstack libxl END.
        await writer.raw([...encodeLibxcRecord({kind: 'END'}), ...encodeLibxlRecord({kind: 'END'})], 'the end of the Remus stream')
        owed.reply(0)
        return 'stop'
      }
      if (this.#ackEnded !== undefined) throw new Error(this.#ackEnded)
      owed.reply(1)
      return 'next'
    } catch (err) {
      owed?.reply(0)
      throw checkpointFailure(n, step, err)
    }
  }

  async close(): Promise<void> {
    // Whatever is held goes out, later output at once (also once the guest resumes here).
    this.#netbuf?.releaseAll()
  }

  async settled(): Promise<void> {
    await this.#netbuf?.close().catch(() => undefined)
    await this.#ackLoop
  }

  secondaryMayRun(): boolean {
    return false
  }

  #dueAfter(n: number, suspendedAtMs: number): number {
    this.#due = n === 1 ? suspendedAtMs + this.#o.intervalMs : Math.max(this.#due + this.#o.intervalMs, performance.now())
    return this.#due
  }

  /** Sleeps until `due` (performance.now() time), waking early for a stop request or a dead backup. */
  async #waitUntil(due: number): Promise<void> {
    while (!this.#io.stopRequested() && this.#ackEnded === undefined) {
      const left = due - performance.now()
      if (left <= 0) return
      // Timers fire a little late: sleep short of the mark, then in 1 ms steps.
      await new Promise((r) => setTimeout(r, left > 3 ? Math.min(left - 2, 50) : 1))
    }
  }

  /** The way back: one CHECKPOINT_END record per checkpoint the backup has whole. */
  async #readAcks(fd: number): Promise<void> {
    try {
      for (;;) {
        const header = await readExact(fd, 8, {what: 'the Remus acknowledgement'})
        if (header.length < 8) {
          this.#ackEnded = 'the backup closed the way back'
          break
        }
        const type = header.readUInt32LE(0)
        const length = header.readUInt32LE(4)
        if (type !== LIBXL.CHECKPOINT_END || length !== 0) {
          this.#ackEnded = `the way back carried a record of type ${type} (length ${length}) instead of an acknowledgement`
          break
        }
        this.#acked++
        if (this.#acked === 1) await this.#io.guardian?.acknowledged()
        this.#o.onEvent({kind: 'ack', number: this.#acked, atMs: performance.now() - this.#o.startedAt})
        this.#netbuf?.release(this.#acked)
      }
    } catch (err) {
      this.#ackEnded = `cannot read the way back: ${err instanceof FdError ? err.detail : (err as Error).message}`
    }
    this.#io.log('detail', `Remus: ${this.#ackEnded}`)
  }

  #released(frames: readonly Buffer[], epoch: number | null): void {
    let maxStep = 0
    // (A frame that is not a sim guest's carries no step: it is released all the same.)
    const sim = this.#io.hypervisor.simulation
    for (const f of frames) maxStep = Math.max(maxStep, sim?.frameInfo(f)?.step ?? 0)
    this.#o.onEvent({kind: 'netbuf-release', epoch, frames: frames.length, maxStep, atMs: performance.now() - this.#o.startedAt})
  }
}
