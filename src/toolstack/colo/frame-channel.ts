/**
 * Length-prefixed frames on a stream socket, as QEMU's colo-compare and its chardev/socket netdev
 * peers frame them (QEMU-REPLICATION.md "colo-compare Xen (notify_dev) protocol", XEN-FACTS §9.2):
 * a u32 length in network byte order, then that many bytes. No vnet header (colo-compare runs
 * without `vnet_hdr_support`). The same framing carries Ethernet frames (primary_in, secondary_in,
 * outdev) and the notify_dev text messages (`DO_CHECKPOINT`, ...).
 *
 * - `encodeFrame` / `FrameSplitter`: pure, bounded. A zero length or one above the bound is not a
 *   frame: the encoder refuses it, the splitter stops with a `FrameError` (the peer is not speaking
 *   this protocol, or is hostile; nothing after it can be trusted). The default bound is QEMU's:
 *   `net_fill_rstate` drops a colo-compare input for good on a frame longer than NET_BUFSIZE
 *   (4096 + 65536 bytes), so nothing longer may be sent to it and nothing longer comes from it.
 * - `FrameChannel`: one connected socket (unix path, however long, or TCP) with framed writes,
 *   framed reads stamped with their arrival time, and a typed end (`ended`).
 */
import * as net from 'node:net'
import * as path from 'node:path'

import {errnoCode} from '../fd/index.js'
import {connectUnix} from '../qmp/index.js'

/** QEMU's NET_BUFSIZE: the longest frame a colo-compare input takes (net/net.h). */
export const QEMU_FRAME_MAX = 4096 + 65536

/** Where a socket is: a unix path (relative ones are relative to a domain folder) or a TCP address. */
export type SocketEndpoint = {readonly kind: 'unix'; readonly path: string} | {readonly kind: 'tcp'; readonly host: string; readonly port: number}

/** `unix:<path>` or `tcp:<host>:<port>`, for messages. */
export function formatEndpoint(endpoint: SocketEndpoint): string {
  return endpoint.kind === 'unix' ? `unix:${endpoint.path}` : `tcp:${endpoint.host}:${endpoint.port}`
}

export type FrameErrorCode =
  /** A length of zero: colo-compare never sends one, and an empty frame is nothing to compare. */
  | 'zero-length'
  /** A length above the bound. */
  | 'too-long'
  /** The stream ended inside a frame. */
  | 'truncated'

/** A length prefix (or a stream) that is not a frame of this protocol. */
export class FrameError extends Error {
  override readonly name = 'FrameError'
  constructor(
    readonly code: FrameErrorCode,
    /** The length read or asked for (bytes left over, for `truncated`). */
    readonly length: number,
    /** The bound in force. */
    readonly max: number,
    message: string,
  ) {
    super(message)
  }
}

export type ChannelErrorCode =
  /** The socket could not be connected (errno says why), or not in time (`ETIMEDOUT`). */
  | 'connect'
  /** Written to after the channel ended. */
  | 'closed'

export class ChannelError extends Error {
  override readonly name = 'ChannelError'
  constructor(
    readonly code: ChannelErrorCode,
    readonly label: string,
    /** The message without the label. */
    readonly detail: string,
    readonly errno?: string,
  ) {
    super(`${label}: ${detail}`)
  }
}

function checkLength(length: number, max: number, what: string): void {
  if (length === 0) throw new FrameError('zero-length', 0, max, `${what}: a frame of length 0`)
  if (length > max) throw new FrameError('too-long', length, max, `${what}: a frame of ${length} bytes (at most ${max})`)
}

/** `payload` with its u32 big-endian length in front. Throws FrameError for an empty or too long payload. */
export function encodeFrame(payload: Uint8Array, max: number = QEMU_FRAME_MAX): Buffer {
  checkLength(payload.length, max, 'encode')
  const out = Buffer.allocUnsafe(4 + payload.length)
  out.writeUInt32BE(payload.length, 0)
  out.set(payload, 4)
  return out
}

/**
 * Splits a byte stream into frames. `push` hands each whole frame to `onFrame` (a copy: the chunk's
 * memory is not kept) and throws FrameError as soon as a length prefix is 0 or above `max`; after
 * that the splitter is dead and every push throws the same error. Memory held: at most one frame
 * plus 4 bytes; chunks of an incomplete frame are joined once, when it is complete (a peer
 * trickling bytes one at a time costs linear time, not quadratic).
 */
export class FrameSplitter {
  #chunks: Buffer[] = []
  #size = 0
  /** Bytes needed before there is something to do: the length prefix, or the frame it announced. */
  #need = 4
  #failed: FrameError | undefined

  constructor(
    private readonly onFrame: (frame: Buffer) => void,
    readonly max: number = QEMU_FRAME_MAX,
  ) {}

  /** Bytes of an incomplete frame held. */
  get pendingBytes(): number {
    return this.#size
  }

  push(chunk: Buffer): void {
    if (this.#failed) throw this.#failed
    if (!chunk.length) return
    this.#chunks.push(chunk)
    this.#size += chunk.length
    if (this.#size < this.#need) return
    const buf = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#size)
    let off = 0
    let need = 4
    try {
      while (buf.length - off >= 4) {
        const len = buf.readUInt32BE(off)
        checkLength(len, this.max, 'received')
        if (buf.length - off < 4 + len) {
          need = 4 + len
          break
        }
        this.onFrame(Buffer.from(buf.subarray(off + 4, off + 4 + len)))
        off += 4 + len
      }
    } catch (err) {
      this.#chunks = []
      this.#size = 0
      if (err instanceof FrameError) this.#failed = err
      throw err
    }
    // Keep only what is left, not the whole chunk it is a view of.
    const rest = buf.subarray(off)
    this.#chunks = rest.length ? [Buffer.from(rest)] : []
    this.#size = rest.length
    this.#need = need
  }

  /** The stream ended: throws FrameError `truncated` when it ended inside a frame. */
  end(): void {
    if (this.#failed) throw this.#failed
    if (this.#size) {
      this.#failed = new FrameError('truncated', this.#size, this.max, `the stream ended inside a frame (${this.#size} bytes left)`)
      throw this.#failed
    }
  }
}

/** How a channel ended. */
export interface ChannelEnd {
  /** `us`: close(); `peer`: the other end closed; `error`: a socket error; `bad-frame`: the peer sent something not framed. */
  readonly by: 'us' | 'peer' | 'error' | 'bad-frame'
  /** The FrameError (`bad-frame`, and `peer` when it closed inside a frame) or the socket error. */
  readonly error?: Error
}

export interface FrameChannelOptions {
  /** Names the channel in messages (default: the endpoint). */
  readonly label?: string
  /** The longest frame sent or accepted (default QEMU_FRAME_MAX). */
  readonly maxFrame?: number
  /** Every frame received, with performance.now() of the read that completed it. Also onFrame(). */
  readonly onFrame?: (frame: Buffer, atMs: number) => void
}

export interface ConnectOptions extends FrameChannelOptions {
  /** Relative unix paths are relative to this folder (a domain folder; default: the working directory). */
  readonly folder?: string
  /** For a TCP connect (default 5 s; a unix connect succeeds or fails at once). */
  readonly timeoutMs?: number
}

function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({host, port})
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`no connection within ${timeoutMs} ms`), {code: 'ETIMEDOUT'})
      socket.destroy()
      reject(err)
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.off('error', reject)
      resolve(socket)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    })
  })
}

/** Connects a stream socket to `endpoint` (a unix path resolved against `folder`). Rejects with ChannelError `connect`. */
export async function connectEndpoint(endpoint: SocketEndpoint, opts: {folder?: string; timeoutMs?: number; label?: string} = {}): Promise<net.Socket> {
  const label = opts.label ?? formatEndpoint(endpoint)
  try {
    if (endpoint.kind === 'unix') return await connectUnix(path.resolve(opts.folder ?? '.', endpoint.path))
    return await connectTcp(endpoint.host, endpoint.port, opts.timeoutMs ?? 5_000)
  } catch (err) {
    const errno = errnoCode(err as Error)
    throw new ChannelError('connect', label, `cannot connect to ${formatEndpoint(endpoint)}: ${(err as Error).message}`, errno)
  }
}

/** A connected socket carrying frames both ways. */
export class FrameChannel {
  readonly label: string
  readonly maxFrame: number
  /** Resolves once when the channel has ended, saying how; never rejects. */
  readonly ended: Promise<ChannelEnd>
  #end: ChannelEnd | undefined
  #closing = false
  #listeners = new Set<(frame: Buffer, atMs: number) => void>()
  #resolveEnded!: (end: ChannelEnd) => void
  #framesIn = 0
  #framesOut = 0

  /** Takes over a connected socket. */
  constructor(
    private readonly socket: net.Socket,
    opts: FrameChannelOptions = {},
  ) {
    this.label = opts.label ?? 'frame channel'
    this.maxFrame = opts.maxFrame ?? QEMU_FRAME_MAX
    if (opts.onFrame) this.#listeners.add(opts.onFrame)
    this.ended = new Promise((resolve) => (this.#resolveEnded = resolve))
    socket.setNoDelay(true) // TCP: each frame goes out at once (a no-op on a unix socket)
    let at = 0
    const splitter = new FrameSplitter((frame) => {
      this.#framesIn++
      for (const l of [...this.#listeners]) l(frame, at)
    }, this.maxFrame)
    socket.on('data', (chunk: Buffer) => {
      if (this.#end) return
      at = performance.now()
      try {
        splitter.push(chunk)
      } catch (err) {
        if (!(err instanceof FrameError)) throw err
        this.#finish({by: 'bad-frame', error: err})
        socket.destroy()
      }
    })
    socket.on('error', (err) => this.#finish({by: 'error', error: err}))
    socket.on('close', () => {
      if (this.#closing) return this.#finish({by: 'us'})
      try {
        splitter.end()
        this.#finish({by: 'peer'})
      } catch (err) {
        this.#finish({by: 'peer', error: err as Error})
      }
    })
  }

  /** Connects to `endpoint` and wraps the socket. Rejects with ChannelError `connect`. */
  static async connect(endpoint: SocketEndpoint, opts: ConnectOptions = {}): Promise<FrameChannel> {
    const label = opts.label ?? formatEndpoint(endpoint)
    const socket = await connectEndpoint(endpoint, {...opts, label})
    return new FrameChannel(socket, {...opts, label})
  }

  #finish(end: ChannelEnd): void {
    if (this.#end) return
    this.#end = end
    this.#resolveEnded(end)
  }

  /** True until the channel ended. */
  get isOpen(): boolean {
    return this.#end === undefined
  }

  /** Frames received and sent so far. */
  get counts(): {readonly framesIn: number; readonly framesOut: number} {
    return {framesIn: this.#framesIn, framesOut: this.#framesOut}
  }

  /** Calls `listener` with every frame received from now on, until the returned function is called. */
  onFrame(listener: (frame: Buffer, atMs: number) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /**
   * Queues one frame for writing (in order with the others). Throws FrameError for an empty or too
   * long payload (nothing is written), ChannelError `closed` once the channel ended.
   */
  send(payload: Uint8Array): void {
    const frame = encodeFrame(payload, this.maxFrame)
    if (this.#end || this.socket.destroyed) throw new ChannelError('closed', this.label, `cannot send: the channel has ended (${this.#end?.by ?? 'destroyed'})`)
    this.#framesOut++
    this.socket.write(frame)
  }

  /** Resolves once everything sent has been handed to the kernel (or the channel ended). */
  drain(): Promise<void> {
    if (this.socket.writableLength === 0 || this.#end) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done)
        resolve()
      }
      this.socket.once('drain', done)
      void this.ended.then(done)
    })
  }

  /** Ends the channel (frames still queued are dropped). Resolves once the socket is closed. */
  async close(): Promise<void> {
    if (!this.#end) this.#closing = true
    this.socket.destroy()
    await this.ended
  }
}
