/**
 * Network output buffering for a Remus primary on the simulated host (what the netbuf device and
 * its plug qdisc do on a real one, XEN-FACTS §10.3): the guest's frames, captured on its vif
 * (../libxl/vif.ts), are held in epochs and let out only when the checkpoint that covers them is
 * safe at the backup. (A capture only copies what leaves the vif: on a real host the frames
 * themselves must be held, which is the plug qdisc's job, plug-qdisc.ts.)
 *
 * Epoch n holds the frames the guest sent before the suspend of checkpoint n (so checkpoint n's
 * state produced them); `boundary(n)` closes it at that suspend. `release(n)` lets out every epoch
 * up to n, in order. A frame that reaches us late (sent before the suspend, delivered after it)
 * lands in the next epoch: released later, never earlier. `releaseAll` ends buffering: everything
 * held goes out and later frames pass straight through (the primary runs unprotected).
 */
import type {FrameCapture, HostNetwork, Hypervisor} from '../hypervisor/index.js'
import {captureGuestOutput} from '../libxl/index.js'

/** Where released frames go, with the epoch they were held in (null: passed through unbuffered). */
export type FrameRelease = (frames: readonly Buffer[], epoch: number | null) => void

export class SimNetBuffer {
  readonly #held = new Map<number, Buffer[]>()
  #current: Buffer[] = []
  #passThrough = false
  #capture: FrameCapture | undefined

  private constructor(private readonly deliver: FrameRelease) {}

  static async start(hv: Hypervisor, network: HostNetwork, domid: number, deliver: FrameRelease): Promise<SimNetBuffer> {
    const buffer = new SimNetBuffer(deliver)
    buffer.#capture = await captureGuestOutput(hv, network, domid, (frame) => buffer.#frame(frame))
    return buffer
  }

  #frame(frame: Buffer): void {
    if (this.#passThrough) this.deliver([frame], null)
    else this.#current.push(frame)
  }

  /** Frames held now (all epochs). */
  get held(): number {
    let n = this.#current.length
    for (const frames of this.#held.values()) n += frames.length
    return n
  }

  /** The suspend of checkpoint n: the frames so far make epoch n. */
  boundary(n: number): void {
    if (this.#passThrough) return
    this.#held.set(n, this.#current)
    this.#current = []
  }

  /** Checkpoint n is safe at the backup: epochs up to n go out. */
  release(n: number): void {
    for (const epoch of [...this.#held.keys()].sort((a, b) => a - b)) {
      if (epoch > n) break
      const frames = this.#held.get(epoch)!
      this.#held.delete(epoch)
      this.deliver(frames, epoch)
    }
  }

  /** No more buffering: all that is held goes out now, later frames at once. */
  releaseAll(): void {
    if (this.#passThrough) return
    this.release(Number.MAX_SAFE_INTEGER)
    const rest = this.#current
    this.#current = []
    this.#passThrough = true
    if (rest.length) this.deliver(rest, null)
  }

  async close(): Promise<void> {
    this.releaseAll()
    await this.#capture?.close()
    this.#capture = undefined
  }
}
