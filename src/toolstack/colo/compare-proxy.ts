/**
 * COLO's userspace proxy on the primary, around QEMU's colo-compare (XEN-FACTS §9.2,
 * QEMU-REPLICATION.md "colo-compare Xen (notify_dev) protocol"): `QemuColoCompare` is the
 * CheckpointTrigger of remus-primary.ts when the device model compares the guests' outputs.
 *
 * It connects to the sockets compare-args.ts put on QEMU's command line: it writes the PVM's frames
 * (from a frame source: the capture of its vif, ../libxl/vif.ts) to primary_in, reads the frames colo-compare
 * releases on outdev (handed to `onRelease` with their arrival time), and speaks the notify_dev
 * protocol (notify.ts). The secondary sends the SVM's frames to secondary_in itself.
 *
 * - `next(since)` resolves at the first DO_CHECKPOINT of the current epoch; `lastRequest` says when
 *   it arrived (for request -> suspend latency).
 * - `reset(step, framesAtSuspend)` is libxl's preresume for the proxy: it stops feeding, waits until
 *   every frame the PVM sent before its suspend has come from the source (when the caller says how
 *   many there were), makes sure colo-compare has read what was fed (a barrier, below), sends
 *   COLO_CHECKPOINT (colo-compare releases the PVM frames it holds and drops the SVM's), then syncs
 *   notify_dev (notify.ts `sync`): a DO_CHECKPOINT that arrives before the sync's reply was sent
 *   before the checkpoint and is dropped as stale. A second barrier collects what colo-compare
 *   released for the checkpoint. Only then is the new epoch open: no frame from before the
 *   checkpoint is compared against the SVM's frames after it, no stale request starts a checkpoint.
 *
 * Pacing. QEMU 7.2's colo-compare takes the NEWEST frame of a connection's primary queue to compare
 * (measured, test/colo-proxy.test.ts): with two PVM frames queued before the SVM's first copy
 * comes, it asks for a checkpoint although the outputs are the same, and what it releases comes
 * out last-in first-out. So colo-compare is given at most one unreleased frame per flow (IPv4
 * source, destination and protocol: never finer than colo-compare's connection key, so never two in
 * one of its queues); the next is fed when that one comes out on outdev. Frames still waiting here
 * at a checkpoint are committed output, as the ones colo-compare holds: both are delivered, in the
 * order the PVM sent them, when reset() ends. Frames that are not IPv4 are fed at once
 * (colo-compare passes them straight through, unexamined). The cost: a flow's back-to-back frames
 * wait one round trip through QEMU each (test: about 0.1 ms).
 *
 * The barrier: colo-compare passes frames that are not IPv4 straight from primary_in to outdev
 * (QEMU-REPLICATION.md: ARP passes through), in order with everything it read before them. We send
 * one of our own (EtherType 0x88b5, IEEE "local experimental", with a random token) and wait for it
 * on outdev, where it is taken out, never released. When it is back, QEMU has read and handled
 * every frame written before it.
 *
 * The same barrier makes start-up deterministic. QEMU-REPLICATION.md: frames sent before QEMU has
 * accepted a chardev connection are lost ("colo send primary packet failed": it cannot write the
 * release to an outdev it has not accepted yet). `start` connects notify_dev (INIT handshake, which
 * QEMU answers only once it has accepted that socket), outdev and primary_in, then sends barriers
 * every 5 ms until one comes back on outdev: from then on both data sockets are accepted. PVM frames
 * that arrive meanwhile wait and are fed after. `stats.readyMs` is how long that took.
 *
 * PVM frames must be IPv4 for colo-compare to compare them (UDP: from the UDP header on; the IP
 * header's id may differ); the sim guest's frames are IPv4/UDP.
 */
import * as crypto from 'node:crypto'

import type {CheckpointTrigger} from '../replication/index.js'
import type {ProxyEndpoints} from './compare-args.js'
import {FrameChannel, QEMU_FRAME_MAX, formatEndpoint, type ChannelEnd} from './frame-channel.js'
import {NotifyClient, type CheckpointRequest, type NotifyInit} from './notify.js'

/** What the frame source hands back: stops the frames. */
export interface FrameSubscription {
  close(): Promise<void> | void
}

/** The PVM's frames, as `(onFrame) => captureGuestOutput(hv, network, domid, onFrame)`. */
export type FrameSource = (onFrame: (frame: Buffer) => void) => Promise<FrameSubscription> | FrameSubscription

export type ReleaseReason = 'match' | 'checkpoint'

export type LogLevel = 'error' | 'warning' | 'info' | 'debug'

export interface QemuColoCompareOptions {
  readonly endpoints: ProxyEndpoints
  /** The PVM's network output. */
  readonly subscribe: FrameSource
  /**
   * Every frame released, with performance.now() of its release and why: `match` (colo-compare
   * found the SVM's frame the same) or `checkpoint` (a checkpoint covers it: released for
   * COLO_CHECKPOINT, or sent before a checkpoint already taken).
   */
  readonly onRelease?: (frame: Buffer, atMs: number, via: ReleaseReason) => void
  readonly onLog?: (level: LogLevel, text: string) => void
  /**
   * The position of a PVM frame in the guest's output (0, 1, 2, ...; the sim: its sequence number),
   * for reset()'s framesAtSuspend. Without it framesAtSuspend counts the frames received since start().
   */
  readonly frameIndex?: (frame: Buffer) => number | undefined
  /** For the INIT reply (default 500 ms, libxl's). */
  readonly initTimeoutMs?: number
  /** For the first barrier to come back at start (default 3 s). */
  readonly readyTimeoutMs?: number
  /** reset(): for the PVM's last frames to come (default 500 ms; then a warning, and on). */
  readonly feedTimeoutMs?: number
  /** reset(): for each barrier to come back (default 1 s; then a warning, and on). */
  readonly barrierTimeoutMs?: number
  /** reset(): for the notify sync's reply (default 1 s; then reset() rejects). */
  readonly syncTimeoutMs?: number
}

export interface ColoCompareStats {
  /** PVM frames received from the source. */
  framesReceived: number
  /** PVM frames written to primary_in. */
  framesFed: number
  /** Frames colo-compare released on outdev (barriers not counted). */
  framesReleased: number
  /** PVM frames a checkpoint committed before they were fed (they waited behind their flow's frame in colo-compare). */
  framesCommitted: number
  /** PVM frames from before the last checkpoint that came after it: released as they are, not compared. */
  framesLate: number
  /** PVM frames not fed: empty or longer than colo-compare takes. */
  framesRefused: number
  /** PVM frames fed that colo-compare never released. */
  framesLost: number
  /** DO_CHECKPOINT messages received (colo-compare repeats them while a frame stays unmatched). */
  requests: number
  /** Epochs in which colo-compare asked for a checkpoint (next() could resolve). */
  checkpointsAsked: number
  /** DO_CHECKPOINTs dropped because colo-compare sent them before it handled the last COLO_CHECKPOINT. */
  staleRequests: number
  /** COLO_CHECKPOINT messages sent (resets). */
  checkpointsSent: number
  /** Barriers sent (start-up and resets). */
  barriers: number
  /** Resets that went on without all frames received / without a barrier back. */
  feedTimeouts: number
  barrierTimeouts: number
  /** start(): from the first connect to the first barrier back (both data sockets accepted), ms. */
  readyMs: number
}

/** How long the steps of the last reset() took, ms, and what it released. */
export interface ResetTiming {
  readonly step: number | undefined
  readonly framesAtSuspend: number | undefined
  /** Waiting for the PVM's frames from before the suspend. */
  readonly feedMs: number
  /** The first barrier's round trip. */
  readonly barrierMs: number
  /** COLO_CHECKPOINT + the notify sync's round trip. */
  readonly checkpointMs: number
  /** The second barrier: until what colo-compare released for the checkpoint is all in. */
  readonly releaseMs: number
  readonly totalMs: number
  /** Frames delivered at the end: colo-compare's releases during the reset and the committed ones. */
  readonly released: number
}

/** The request that asked for the checkpoint of an epoch. */
export interface EpochRequest extends CheckpointRequest {
  /** 0 before the first reset, then 1, 2, ... */
  readonly epoch: number
}

export type ColoCompareErrorCode = 'not-ready' | 'closed'

export class ColoCompareError extends Error {
  override readonly name = 'ColoCompareError'
  constructor(
    readonly code: ColoCompareErrorCode,
    message: string,
    options?: {cause?: unknown},
  ) {
    super(message, options)
  }
}

const BARRIER_ETHERTYPE = 0x88b5
const BARRIER_MAGIC = Buffer.from('xl-ts colo-compare barrier', 'latin1')
/** dst(6) src(6) type(2) magic token(8) id(4), padded to Ethernet's 60-byte minimum. */
const BARRIER_BYTES = 60
const BARRIER_TOKEN_AT = 14 + BARRIER_MAGIC.length
const BARRIER_ID_AT = BARRIER_TOKEN_AT + 8
const READY_RESEND_MS = 5

/** Resolves with true when `p` settles in time, false after `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined
  const late = new Promise<false>((r) => (t = setTimeout(() => r(false), ms)))
  try {
    return await Promise.race([p.then(() => true as const), late])
  } finally {
    clearTimeout(t)
  }
}

/** An IPv4 frame's flow (protocol, source, destination), or undefined for anything else. */
function flowKey(frame: Buffer): string | undefined {
  if (frame.length < 34 || frame.readUInt16BE(12) !== 0x0800 || frame[14]! >> 4 !== 4) return undefined
  return frame.toString('latin1', 23, 24) + frame.toString('latin1', 26, 34)
}

/** A PVM frame on its way: `order` is its place in the PVM's output as received. */
interface Pending {
  readonly frame: Buffer
  readonly order: number
  readonly flow: Flow | undefined
}

interface Flow {
  /** Fed, not released yet. */
  inFlight: Pending | undefined
  /** Waiting for inFlight to come out. */
  queue: Pending[]
}

export class QemuColoCompare implements CheckpointTrigger {
  readonly stats: ColoCompareStats = {
    framesReceived: 0,
    framesFed: 0,
    framesReleased: 0,
    framesCommitted: 0,
    framesLate: 0,
    framesRefused: 0,
    framesLost: 0,
    requests: 0,
    checkpointsAsked: 0,
    staleRequests: 0,
    checkpointsSent: 0,
    barriers: 0,
    feedTimeouts: 0,
    barrierTimeouts: 0,
    readyMs: 0,
  }
  readonly #o: QemuColoCompareOptions
  readonly #log: (level: LogLevel, text: string) => void
  readonly #token = crypto.randomBytes(8)
  #notify!: NotifyClient
  #primary!: FrameChannel
  #outdev!: FrameChannel
  #subscription: FrameSubscription | undefined
  #ready = false
  #closed = false
  /** Nothing is fed (before start-up is done, during a reset): frames wait in their flow's queue. */
  #paused = true
  #order = 0
  #flows = new Map<string, Flow>()
  /** Frames that are not IPv4 (fed at once unless paused). */
  #passFlow: Flow = {inFlight: undefined, queue: []}
  /** Fed and not released yet, in the order fed. */
  #unreleased: Pending[] = []
  /** During a reset: what colo-compare released meanwhile, delivered in the PVM's order at its end. */
  #window: {frame: Buffer; atMs: number; order: number}[] | undefined
  /** The highest frame index received (frameIndex), -1 before any. */
  #highestIndex = -1
  /** Frames with an index below this are from before the last checkpoint. */
  #committedFrames = 0
  #feedWaiters: (() => void)[] = []
  #barrierId = 0
  #barrierWaiters: {id: number; resolve: () => void}[] = []
  /** DO_CHECKPOINTs numbered up to this were sent before the current epoch began. */
  #epochStartSeq = 0
  #epoch = 0
  #request: EpochRequest | undefined
  #requestWaiters: {resolve: (v: 'divergence') => void; reject: (e: Error) => void}[] = []
  #resetting = false
  /** DO_CHECKPOINTs that came during a reset, sorted out by its sync. */
  #duringReset: CheckpointRequest[] = []
  #resetChain: Promise<void> = Promise.resolve()
  #lastReset: ResetTiming | undefined
  #failure: Error | undefined

  private constructor(o: QemuColoCompareOptions) {
    this.#o = o
    this.#log = o.onLog ?? (() => {})
  }

  /**
   * Connects to the device model's colo-compare and starts feeding it the PVM's frames. Rejects with
   * NotifyError (`connect`, `init-timeout`, ...), ChannelError `connect`, or ColoCompareError
   * `not-ready` (no barrier back within readyTimeoutMs); nothing stays open then.
   */
  static async start(o: QemuColoCompareOptions): Promise<QemuColoCompare> {
    const c = new QemuColoCompare(o)
    try {
      await c.#start()
      return c
    } catch (err) {
      await c.close()
      throw err
    }
  }

  async #start(): Promise<void> {
    const {endpoints} = this.#o
    const folder = endpoints.folder
    const t0 = performance.now()
    this.#notify = await NotifyClient.connect(endpoints.notify, {
      folder,
      ...(this.#o.initTimeoutMs === undefined ? {} : {initTimeoutMs: this.#o.initTimeoutMs}),
      onLog: (level, text) => this.#log(level, text),
    })
    this.#notify.onRequest((r) => this.#requestArrived(r))
    this.#notify.onEnd((err) => {
      if (!this.#closed) this.#fail(err)
    })
    this.#outdev = await FrameChannel.connect(endpoints.outdev, {folder, label: `colo-compare outdev ${formatEndpoint(endpoints.outdev)}`, onFrame: (f, at) => this.#released(f, at)})
    this.#primary = await FrameChannel.connect(endpoints.primaryIn, {folder, label: `colo-compare primary_in ${formatEndpoint(endpoints.primaryIn)}`})
    for (const ch of [this.#outdev, this.#primary]) void ch.ended.then((end) => this.#channelEnded(ch, end))
    this.#subscription = await this.#o.subscribe((frame) => this.#pvmFrame(frame))

    // Barriers until one comes back: primary_in and outdev are then both accepted by QEMU.
    const readyTimeoutMs = this.#o.readyTimeoutMs ?? 3_000
    const deadline = performance.now() + readyTimeoutMs
    for (let back = false; !back; ) {
      if (this.#failure) throw this.#failure
      if (performance.now() > deadline) {
        throw new ColoCompareError('not-ready', `colo-compare: no frame came back on outdev within ${readyTimeoutMs} ms of sending it to primary_in`)
      }
      back = await within(this.#barrier(), READY_RESEND_MS)
    }
    this.stats.readyMs = performance.now() - t0
    this.#ready = true
    this.#epochStartSeq = this.#notify.stats.requests
    this.#resume()
    this.#log('debug', `colo-compare ready in ${this.stats.readyMs.toFixed(1)} ms (INIT round trip ${this.#notify.init.ms.toFixed(1)} ms, ${this.stats.barriers} barrier(s))`)
  }

  /** The INIT handshake's result (colo-compare's reply and the round trip). */
  get notifyInit(): NotifyInit {
    return this.#notify.init
  }

  /** The DO_CHECKPOINT that asked for a checkpoint in the current epoch, if one has. */
  get lastRequest(): EpochRequest | undefined {
    return this.#request
  }

  /** The steps of the last reset(). */
  get lastReset(): ResetTiming | undefined {
    return this.#lastReset
  }

  /** PVM frames received and not released yet (fed to colo-compare, or waiting to be). */
  get framesHeld(): number {
    let n = this.#unreleased.length + this.#passFlow.queue.length
    for (const f of this.#flows.values()) n += f.queue.length
    return n
  }

  // ---- frames ---------------------------------------------------------------------------------------

  #pvmFrame(frame: Buffer): void {
    if (this.#closed) return
    this.stats.framesReceived++
    const index = this.#o.frameIndex?.(frame)
    if (index !== undefined) {
      if (index < this.#committedFrames) {
        // Sent before a checkpoint already taken: committed output. Compared with the SVM's output
        // after the checkpoint it would only ask for a needless one. During a reset it waits (paused)
        // and goes out with the rest, in order; after, at once.
        this.stats.framesLate++
        if (!this.#resetting) {
          this.#deliver(frame, performance.now(), 'checkpoint')
          return
        }
      }
      if (index > this.#highestIndex) this.#highestIndex = index
    }
    for (const w of this.#feedWaiters.splice(0)) w()
    if (frame.length === 0 || frame.length > QEMU_FRAME_MAX) {
      this.stats.framesRefused++
      this.#log('warning', `colo-compare: a PVM frame of ${frame.length} bytes cannot be compared; dropped`)
      return
    }
    const key = flowKey(frame)
    let flow: Flow | undefined
    if (key !== undefined) {
      flow = this.#flows.get(key)
      if (!flow) this.#flows.set(key, (flow = {inFlight: undefined, queue: []}))
    }
    const p: Pending = {frame, order: ++this.#order, flow}
    if (this.#paused) (flow ?? this.#passFlow).queue.push(p)
    else this.#submit(p)
  }

  /** Feeds `p` now, or queues it behind its flow's frame in colo-compare. */
  #submit(p: Pending): void {
    if (p.flow?.inFlight) p.flow.queue.push(p)
    else this.#write(p)
  }

  #write(p: Pending): void {
    if (!this.#primary.isOpen) return
    this.#primary.send(p.frame)
    this.stats.framesFed++
    this.#unreleased.push(p)
    if (p.flow) p.flow.inFlight = p
  }

  /** Feeds what waited while paused, in order. */
  #resume(): void {
    this.#paused = false
    const waiting = [this.#passFlow, ...this.#flows.values()].flatMap((f) => f.queue.splice(0))
    for (const p of waiting.sort((a, b) => a.order - b.order)) this.#submit(p)
  }

  #isBarrier(frame: Buffer): boolean {
    return (
      frame.length === BARRIER_BYTES &&
      frame.readUInt16BE(12) === BARRIER_ETHERTYPE &&
      frame.subarray(14, BARRIER_TOKEN_AT).equals(BARRIER_MAGIC) &&
      frame.subarray(BARRIER_TOKEN_AT, BARRIER_ID_AT).equals(this.#token)
    )
  }

  #released(frame: Buffer, atMs: number): void {
    if (this.#isBarrier(frame)) {
      const id = frame.readUInt32BE(BARRIER_ID_AT)
      // In order: every barrier sent before this one is back or was lost.
      this.#barrierWaiters = this.#barrierWaiters.filter((w) => (w.id <= id ? (w.resolve(), false) : true))
      return
    }
    this.stats.framesReleased++
    // The fed frame with these bytes: the first one, unless colo-compare released out of order.
    const i = this.#unreleased.findIndex((u) => u.frame.equals(frame))
    const p = i < 0 ? undefined : this.#unreleased.splice(i, 1)[0]!
    if (p?.flow && p.flow.inFlight === p) {
      p.flow.inFlight = undefined
      const next = this.#paused ? undefined : p.flow.queue.shift()
      if (next) this.#write(next)
    }
    // Not one we fed (before a reconnect, say): after the rest.
    const order = p?.order ?? Number.MAX_SAFE_INTEGER
    if (this.#window) this.#window.push({frame, atMs, order})
    else this.#deliver(frame, atMs, 'match')
  }

  #deliver(frame: Buffer, atMs: number, via: ReleaseReason): void {
    try {
      this.#o.onRelease?.(frame, atMs, via)
    } catch (err) {
      this.#log('warning', `colo-compare: the release sink failed: ${(err as Error).message}`)
    }
  }

  /** Sends a barrier through primary_in; resolves when it is back on outdev. */
  #barrier(): Promise<void> {
    const id = ++this.#barrierId
    const frame = Buffer.alloc(BARRIER_BYTES)
    frame.writeUInt8(0x02, 6) // source MAC 02:00:00:00:00:00 (locally administered); destination all zero
    frame.writeUInt16BE(BARRIER_ETHERTYPE, 12)
    BARRIER_MAGIC.copy(frame, 14)
    this.#token.copy(frame, BARRIER_TOKEN_AT)
    frame.writeUInt32BE(id, BARRIER_ID_AT)
    const back = new Promise<void>((resolve) => this.#barrierWaiters.push({id, resolve}))
    this.#primary.send(frame)
    this.stats.barriers++
    return back
  }

  /**
   * The end of a checkpoint: the frames colo-compare released during it and those still waiting
   * here (committed by the checkpoint), delivered in the PVM's order; fed frames from before
   * `heldUpTo` that never came out are written off. Returns how many were delivered.
   */
  #commit(heldUpTo: number): number {
    const out = this.#window ?? []
    this.#window = undefined
    const waiting = [this.#passFlow, ...this.#flows.values()].flatMap((f) => f.queue.splice(0))
    this.stats.framesCommitted += waiting.length
    for (const p of waiting) out.push({frame: p.frame, atMs: performance.now(), order: p.order})
    const lost = this.#unreleased.filter((u) => u.order <= heldUpTo)
    if (lost.length) {
      this.stats.framesLost += lost.length
      this.#unreleased = this.#unreleased.filter((u) => u.order > heldUpTo)
      this.#log('warning', `colo-compare: ${lost.length} PVM frame(s) fed before the checkpoint never came out`)
    }
    for (const f of this.#flows.values()) if (f.inFlight && f.inFlight.order <= heldUpTo) f.inFlight = undefined
    // Flows seen once are not kept for ever: an idle one holds nothing.
    for (const [key, f] of this.#flows) if (!f.inFlight && !f.queue.length) this.#flows.delete(key)
    out.sort((a, b) => a.order - b.order)
    for (const w of out) this.#deliver(w.frame, w.atMs, 'checkpoint')
    return out.length
  }

  // ---- requests -------------------------------------------------------------------------------------

  #requestArrived(r: CheckpointRequest): void {
    this.stats.requests++
    // During a reset nothing is known yet: its sync sorts the stale from the new.
    if (this.#resetting) this.#duringReset.push(r)
    else if (this.#ready && r.seq > this.#epochStartSeq) this.#openRequest(r)
  }

  #openRequest(r: CheckpointRequest): void {
    if (this.#request) return
    this.#request = {...r, epoch: this.#epoch}
    this.stats.checkpointsAsked++
    for (const w of this.#requestWaiters.splice(0)) w.resolve('divergence')
  }

  #fail(err: Error): void {
    if (this.#failure) return
    this.#failure = err
    this.#log('error', `colo-compare: ${err.message}`)
    for (const w of this.#requestWaiters.splice(0)) w.reject(err)
    for (const w of this.#feedWaiters.splice(0)) w()
  }

  #channelEnded(ch: FrameChannel, end: ChannelEnd): void {
    if (this.#closed) return
    this.#fail(new ColoCompareError('closed', `${ch.label} ended (${end.by}${end.error ? `: ${end.error.message}` : ''})`, end.error ? {cause: end.error} : undefined))
  }

  /**
   * CheckpointTrigger: resolves when colo-compare asked for a checkpoint (DO_CHECKPOINT) in the
   * current epoch, at once if it already has. `since` is not needed: what came before the last
   * reset() is known stale. Rejects when the connection to colo-compare is lost; after close(),
   * never resolves.
   */
  next(_since?: number): Promise<'divergence'> {
    if (this.#failure) return Promise.reject(this.#failure)
    if (this.#request) return Promise.resolve('divergence')
    if (this.#closed) return new Promise(() => {})
    return new Promise((resolve, reject) => this.#requestWaiters.push({resolve, reject}))
  }

  /**
   * The preresume of a checkpoint taken with the PVM suspended at `step`, when it had sent
   * `framesAtSuspend` frames (frameIndex's count; without frameIndex, frames received since start).
   * Call it before the PVM resumes. Resolves once the next epoch is open and what the checkpoint
   * released has gone to onRelease. Rejects with NotifyError when notify_dev fails (sync-timeout,
   * closed); a missing frame or barrier only gives a warning. Calls run one after the other.
   */
  reset(step: number | undefined, framesAtSuspend?: number): Promise<void> {
    const run = this.#resetChain.then(() => this.#reset(step, framesAtSuspend))
    this.#resetChain = run.catch(() => undefined)
    return run
  }

  async #reset(step: number | undefined, framesAtSuspend: number | undefined): Promise<void> {
    if (this.#failure) throw this.#failure
    if (this.#closed) throw new ColoCompareError('closed', 'colo-compare: reset() after close()')
    const t0 = performance.now()
    this.#resetting = true
    this.#duringReset = []
    this.#paused = true
    let heldUpTo = 0
    try {
      if (framesAtSuspend !== undefined) await this.#awaitFrames(step, framesAtSuspend)
      if (this.#o.frameIndex && framesAtSuspend !== undefined) this.#committedFrames = Math.max(this.#committedFrames, framesAtSuspend)
      if (this.#failure) throw this.#failure
      const t1 = performance.now()
      const barrierTimeoutMs = this.#o.barrierTimeoutMs ?? 1_000
      if (!(await within(this.#barrier(), barrierTimeoutMs))) {
        this.stats.barrierTimeouts++
        this.#log('warning', `colo-compare: the barrier did not come back within ${barrierTimeoutMs} ms; checkpointing anyway`)
      }
      if (this.#failure) throw this.#failure
      const t2 = performance.now()
      // colo-compare has read everything fed: what it still holds, it releases for COLO_CHECKPOINT.
      heldUpTo = this.#order
      this.#window = []
      this.#notify.checkpoint()
      this.stats.checkpointsSent++
      const reply = await this.#notify.sync(this.#o.syncTimeoutMs ?? 1_000)
      const t3 = performance.now()
      // Every DO_CHECKPOINT up to reply.requests was sent before colo-compare handled COLO_CHECKPOINT.
      this.stats.staleRequests += this.#duringReset.filter((r) => r.seq <= reply.requests).length
      this.#epochStartSeq = reply.requests
      this.#epoch++
      this.#request = undefined
      // colo-compare queued its releases on outdev before it answered the sync: a barrier sent now
      // comes back after them.
      if (!(await within(this.#barrier(), barrierTimeoutMs))) {
        this.stats.barrierTimeouts++
        this.#log('warning', `colo-compare: what it released for the checkpoint did not all come within ${barrierTimeoutMs} ms`)
      }
      const t4 = performance.now()
      const released = this.#commit(heldUpTo)
      this.#lastReset = {step, framesAtSuspend, feedMs: t1 - t0, barrierMs: t2 - t1, checkpointMs: t3 - t2, releaseMs: t4 - t3, totalMs: performance.now() - t0, released}
    } finally {
      this.#resetting = false
      if (this.#window) this.#commit(heldUpTo)
      if (!this.#closed) this.#resume()
    }
    // Requests that came after the sync's reply, while this ran on, belong to the new epoch.
    const fresh = this.#duringReset.splice(0).find((r) => r.seq > this.#epochStartSeq)
    if (fresh) this.#openRequest(fresh)
  }

  /** Until the PVM's frames up to `framesAtSuspend` have come from the source, or feedTimeoutMs. */
  async #awaitFrames(step: number | undefined, framesAtSuspend: number): Promise<void> {
    const count = () => (this.#o.frameIndex ? this.#highestIndex + 1 : this.stats.framesReceived)
    const feedTimeoutMs = this.#o.feedTimeoutMs ?? 500
    const deadline = performance.now() + feedTimeoutMs
    while (count() < framesAtSuspend && !this.#failure) {
      const left = deadline - performance.now()
      if (left <= 0) {
        this.stats.feedTimeouts++
        this.#log('warning', `colo-compare: checkpoint at step ${step ?? '?'}: the PVM sent ${framesAtSuspend} frames, only ${count()} came within ${feedTimeoutMs} ms`)
        return
      }
      await within(new Promise<void>((r) => this.#feedWaiters.push(r)), left)
    }
  }

  /**
   * Stops the frames and closes the sockets (colo-compare goes on listening). What is still held
   * (here or in colo-compare) is not released: a caller that goes on without COLO should reset()
   * first. Waiting next() calls stay pending.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await Promise.resolve(this.#subscription?.close()).catch(() => undefined)
    for (const w of this.#feedWaiters.splice(0)) w()
    this.#requestWaiters.splice(0)
    await Promise.all([this.#notify?.close(), this.#primary?.close(), this.#outdev?.close()])
  }
}
