/**
 * COLO's proxy on the simulated host: what QEMU's colo-compare does for a real guest (XEN-FACTS
 * §9.2), for the sim guests' frames, inside the toolstack.
 *
 * The primary's side (`SimColoCompare`) takes the PVM's frames from its own host and the SVM's
 * from the secondary, which forwards them (`forwardSecondaryFrames`) over TCP to the address of the
 * first vif's `colo_sock_compare_sec_in_ip` / `_port` keys (where colo-compare's secondary_in
 * listens), each frame as QEMU's socket netdev frames it: a u32 length in network byte order, then
 * the bytes. Frames are compared in order: the n-th PVM frame since the last checkpoint against the
 * n-th SVM frame. The first pair that differs, or a PVM frame left unmatched for `timeoutMs`, asks
 * for a checkpoint (colo-compare's DO_CHECKPOINT). At each checkpoint both guests start again from
 * the same state: `reset(step)`, called when the secondary reports SVM_READY (it has the checkpoint
 * and runs next; the PVM, suspended at `step`, resumes after), drops both queues and any PVM frame
 * from at or before `step` still on its way. The secondary stops forwarding before it suspends and
 * starts again just before it resumes, so frames of its abandoned run never reach the comparison.
 */
import * as net from 'node:net'

import {frameGuestStep, type Hypervisor, type Subscription} from '../hypervisor/index.js'
import type {CheckpointTrigger} from './remus-primary.js'

/** Frames larger than this are not the sim guest's: the connection is dropped. */
const FRAME_MAX = 64 * 1024

export interface CompareAddress {
  readonly host: string
  readonly port: number
}

/** The first vif's colo_sock_compare_sec_in address of a libxl domain config, if it has one. */
export function compareAddressOf(config: Record<string, unknown> | undefined): CompareAddress | undefined {
  const nics = Array.isArray(config?.nics) ? (config.nics as Record<string, unknown>[]) : []
  const nic = nics[0]
  const host = nic?.colo_sock_compare_sec_in_ip
  const port = Number(nic?.colo_sock_compare_sec_in_port)
  if (typeof host !== 'string' || !host || !Number.isInteger(port) || port <= 0 || port > 65535) return undefined
  return {host, port}
}

/** Splits a byte stream of u32-BE-length-prefixed frames. */
class FrameSplitter {
  #pending: Buffer = Buffer.alloc(0)
  constructor(private readonly onFrame: (frame: Buffer) => void) {}

  /** False when the stream carries something that is not a frame. */
  push(chunk: Buffer): boolean {
    this.#pending = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk
    while (this.#pending.length >= 4) {
      const len = this.#pending.readUInt32BE(0)
      if (len === 0 || len > FRAME_MAX) return false
      if (this.#pending.length < 4 + len) break
      this.onFrame(Buffer.from(this.#pending.subarray(4, 4 + len)))
      this.#pending = this.#pending.subarray(4 + len)
    }
    return true
  }
}

/** A frame that carries no step is never taken for one from before the last checkpoint. */
function stepOf(frame: Buffer): number {
  return frameGuestStep(frame) ?? Number.MAX_SAFE_INTEGER
}

export interface CompareStats {
  /** Frame pairs found equal. */
  matched: number
  /** Checkpoints asked for. */
  divergences: number
  /** SVM frames received. */
  secondaryFrames: number
}

export class SimColoCompare implements CheckpointTrigger {
  readonly stats: CompareStats = {matched: 0, divergences: 0, secondaryFrames: 0}
  #primary: {frame: Buffer; at: number}[] = []
  #secondary: Buffer[] = []
  /** Frames from at or before this step are from before the last checkpoint. */
  #floor = -1
  #waiters: (() => void)[] = []
  #diverged = false
  #timer: NodeJS.Timeout | undefined
  #subscription: Subscription | undefined
  #server: net.Server | undefined
  #sockets = new Set<net.Socket>()

  private constructor(
    private readonly timeoutMs: number,
    private readonly onLog: (text: string) => void,
  ) {}

  /** Listens on `address` for the secondary's frames and takes the PVM's from `hv`. */
  static async start(hv: Hypervisor, domid: number, address: CompareAddress, opts: {timeoutMs?: number; onLog?: (text: string) => void} = {}): Promise<SimColoCompare> {
    const c = new SimColoCompare(opts.timeoutMs ?? 100, opts.onLog ?? (() => {}))
    const server = net.createServer((socket) => c.#accept(socket))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(address.port, address.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    c.#server = server
    c.#subscription = await hv.subscribeFrames(domid, (frame) => c.#primaryFrame(frame))
    c.#timer = setInterval(() => c.#checkTimeouts(), Math.max(5, Math.floor(c.timeoutMs / 4)))
    return c
  }

  #accept(socket: net.Socket): void {
    this.#sockets.add(socket)
    const splitter = new FrameSplitter((frame) => this.#secondaryFrame(frame))
    socket.on('data', (chunk: Buffer) => {
      if (!splitter.push(chunk)) {
        this.onLog('colo-compare: the secondary sent something that is not a frame; connection dropped')
        socket.destroy()
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => this.#sockets.delete(socket))
  }

  #primaryFrame(frame: Buffer): void {
    if (stepOf(frame) <= this.#floor) return
    this.#primary.push({frame, at: performance.now()})
    this.#match()
  }

  #secondaryFrame(frame: Buffer): void {
    this.stats.secondaryFrames++
    if (stepOf(frame) <= this.#floor) return
    this.#secondary.push(frame)
    this.#match()
  }

  #match(): void {
    while (this.#primary.length && this.#secondary.length) {
      const p = this.#primary.shift()!
      const s = this.#secondary.shift()!
      if (p.frame.equals(s)) {
        this.stats.matched++
        continue
      }
      return this.#diverge()
    }
  }

  #checkTimeouts(): void {
    const oldest = this.#primary[0]
    if (oldest && performance.now() - oldest.at > this.timeoutMs) this.#diverge()
  }

  #diverge(): void {
    if (this.#diverged) return
    this.#diverged = true
    this.stats.divergences++
    for (const w of this.#waiters.splice(0)) w()
  }

  /** CheckpointTrigger: resolves once the outputs diverged (since the last reset). */
  next(): Promise<'divergence'> {
    if (this.#diverged) return Promise.resolve('divergence')
    return new Promise((resolve) => this.#waiters.push(() => resolve('divergence')))
  }

  /** A checkpoint was taken with the PVM suspended at `step`: both start again from there. */
  reset(step: number | undefined): void {
    if (step !== undefined) this.#floor = step
    this.#primary = []
    this.#secondary = []
    this.#diverged = false
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer)
    await this.#subscription?.close().catch(() => undefined)
    for (const s of this.#sockets) s.destroy()
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()))
    for (const w of this.#waiters.splice(0)) w()
  }
}

/**
 * The secondary's side: sends the SVM's frames to the primary's colo-compare. Returns a stop
 * function. A connection that fails is reported once and not retried: the primary's timer still
 * takes checkpoints.
 */
export interface SecondaryForwarder {
  /** Before the SVM suspends for a checkpoint: what it sends from now on is dropped. */
  pause(): void
  /** Just before the SVM resumes from a checkpoint. */
  resume(): void
  stop(): Promise<void>
}

export async function forwardSecondaryFrames(hv: Hypervisor, domid: number, address: CompareAddress, onLog: (text: string) => void): Promise<SecondaryForwarder> {
  const socket = net.connect(address.port, address.host)
  let failed = false
  socket.on('error', (err) => {
    if (!failed) onLog(`cannot send the secondary's frames to colo-compare at ${address.host}:${address.port}: ${err.message}`)
    failed = true
  })
  socket.setNoDelay(true)
  let paused = false
  const subscription = await hv.subscribeFrames(domid, (frame) => {
    if (paused || failed || socket.destroyed) return
    const len = Buffer.alloc(4)
    len.writeUInt32BE(frame.length, 0)
    socket.write(Buffer.concat([len, frame]))
  })
  return {
    pause: () => {
      paused = true
    },
    resume: () => {
      paused = false
    },
    stop: async () => {
      await subscription.close().catch(() => undefined)
      socket.destroy()
    },
  }
}
