/**
 * The client side of colo-compare's notify_dev: what xl's userspace COLO proxy does (XEN-FACTS
 * §9.2), written for this toolstack.
 *
 * Messages are framed as every colo-compare socket is (frame-channel.ts: u32 BE length + bytes, no
 * NUL). `NotifyClient.connect` connects (a unix path or TCP host:port), sends
 * `COLO_USERSPACE_PROXY_INIT` and waits at most 500 ms for a reply (libxl's bound). QEMU answers
 * `COLO_COMPARE_GET_XEN_INIT`; libxl does not look at the reply, we keep it (`init.reply`) and log
 * when it is anything else. Then:
 * - every `DO_CHECKPOINT` QEMU sends (the outputs differ, or a primary frame waited compare_timeout)
 *   is a `CheckpointRequest` stamped with its arrival time: `onRequest()`, `nextRequest()`, or
 *   `for await (const r of client)`;
 * - `checkpoint()` sends `COLO_CHECKPOINT` (colo-compare releases the primary frames it holds and
 *   drops the secondary's);
 * - `sync()` sends INIT again and resolves at its reply. QEMU handles notify messages in order and
 *   sends its own in order on this socket (one send queue), so a request that arrives before that
 *   reply was sent before QEMU read what we sent before the INIT (e.g. a COLO_CHECKPOINT).
 *   QEMU-REPLICATION.md: any INIT gets the reply; colo-compare keeps no state for it.
 *
 * QEMU is not trusted: a message longer than 1024 bytes (libxl's receive buffer) or of length 0
 * ends the connection with NotifyError `bad-message`; messages that are neither DO_CHECKPOINT nor
 * an INIT reply are counted and logged, not acted on.
 */
import {ChannelError, FrameChannel, FrameError, formatEndpoint, type ChannelEnd, type SocketEndpoint} from './frame-channel.js'

export const NOTIFY_INIT = 'COLO_USERSPACE_PROXY_INIT'
export const NOTIFY_INIT_REPLY = 'COLO_COMPARE_GET_XEN_INIT'
export const NOTIFY_DO_CHECKPOINT = 'DO_CHECKPOINT'
export const NOTIFY_CHECKPOINT = 'COLO_CHECKPOINT'
/** libxl's receive buffer: no message of the protocol comes near it. */
export const NOTIFY_MESSAGE_MAX = 1024
/** libxl waits this long for the INIT reply. */
export const NOTIFY_INIT_TIMEOUT_MS = 500

export type NotifyErrorCode =
  /** The socket could not be connected. */
  | 'connect'
  /** No reply to INIT in time. */
  | 'init-timeout'
  /** No reply to a sync() in time. */
  | 'sync-timeout'
  /** The connection ended (by QEMU, by an error, or by close()). */
  | 'closed'
  /** QEMU sent something that is not a message of this protocol (the connection is then closed). */
  | 'bad-message'

export class NotifyError extends Error {
  override readonly name = 'NotifyError'
  constructor(
    readonly code: NotifyErrorCode,
    readonly label: string,
    message: string,
    options?: {cause?: unknown},
  ) {
    super(`${label}: ${message}`, options)
  }
}

/** One DO_CHECKPOINT. */
export interface CheckpointRequest {
  /** 1, 2, ... over the connection. */
  readonly seq: number
  /** performance.now() of its arrival. */
  readonly atMs: number
}

/** The reply to a sync(). */
export interface SyncReply {
  /** performance.now() of its arrival. */
  readonly atMs: number
  /** DO_CHECKPOINTs received before it (the seq of the last one). */
  readonly requests: number
}

export interface NotifyInit {
  /** What QEMU answered (colo-compare: COLO_COMPARE_GET_XEN_INIT). */
  readonly reply: string
  /** The round trip, ms. */
  readonly ms: number
}

export interface NotifyConnectOptions {
  /** Relative unix paths are relative to this folder (the domain folder). */
  readonly folder?: string
  /** Names the connection in messages (default: the endpoint). */
  readonly label?: string
  /** For the INIT reply (default 500 ms, libxl's). */
  readonly initTimeoutMs?: number
  /** For a TCP connect (default 5 s). */
  readonly connectTimeoutMs?: number
  readonly onLog?: (level: 'warning' | 'debug', text: string) => void
}

export interface NotifyStats {
  /** DO_CHECKPOINT messages received. */
  requests: number
  /** COLO_CHECKPOINT messages sent. */
  checkpoints: number
  /** INIT messages sent (connect + syncs). */
  inits: number
  /** Messages that were neither DO_CHECKPOINT nor an awaited INIT reply. */
  unexpected: number
}

const text = (frame: Buffer): string => frame.toString('latin1')
/** A message for a log line: printable ASCII, at most 64 characters. */
const shown = (s: string): string => JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}...` : s).replace(/[^\x20-\x7e]/g, '?')

export class NotifyClient implements AsyncIterable<CheckpointRequest> {
  readonly label: string
  readonly stats: NotifyStats = {requests: 0, checkpoints: 0, inits: 0, unexpected: 0}
  #init: NotifyInit | undefined
  #last: CheckpointRequest | undefined
  #listeners = new Set<(r: CheckpointRequest) => void>()
  /** Replies awaited by INITs sent, oldest first. */
  #syncs: {resolve: (reply: SyncReply) => void; reject: (err: Error) => void}[] = []
  #error: NotifyError | undefined
  #closedByUs = false
  /** The latest reply to an INIT. */
  #lastReply: string | undefined
  #endListeners = new Set<(err: NotifyError) => void>()

  private constructor(
    private readonly channel: FrameChannel,
    private readonly onLog: (level: 'warning' | 'debug', text: string) => void,
  ) {
    this.label = channel.label
    channel.onFrame((frame, atMs) => this.#message(text(frame), atMs))
    void channel.ended.then((end) => this.#ended(end))
  }

  /**
   * Connects to colo-compare's notify_dev at `endpoint` and does the INIT handshake. Rejects with
   * NotifyError `connect`, `init-timeout`, `closed` or `bad-message`.
   */
  static async connect(endpoint: SocketEndpoint, opts: NotifyConnectOptions = {}): Promise<NotifyClient> {
    const label = opts.label ?? `notify_dev ${formatEndpoint(endpoint)}`
    let channel: FrameChannel
    try {
      channel = await FrameChannel.connect(endpoint, {
        label,
        maxFrame: NOTIFY_MESSAGE_MAX,
        ...(opts.folder === undefined ? {} : {folder: opts.folder}),
        ...(opts.connectTimeoutMs === undefined ? {} : {timeoutMs: opts.connectTimeoutMs}),
      })
    } catch (err) {
      if (err instanceof ChannelError) throw new NotifyError('connect', label, err.detail, {cause: err})
      throw err
    }
    const client = new NotifyClient(channel, opts.onLog ?? (() => {}))
    const timeoutMs = opts.initTimeoutMs ?? NOTIFY_INIT_TIMEOUT_MS
    try {
      const t0 = performance.now()
      const {atMs} = await client.#sendInit(timeoutMs, 'init-timeout')
      client.#init = {reply: client.#lastReply ?? '', ms: atMs - t0}
      if (client.#init.reply !== NOTIFY_INIT_REPLY) client.onLog('warning', `${label}: INIT answered with ${shown(client.#init.reply)}, not ${NOTIFY_INIT_REPLY}`)
      return client
    } catch (err) {
      await client.close()
      throw err
    }
  }

  #sendInit(timeoutMs: number, code: 'init-timeout' | 'sync-timeout'): Promise<SyncReply> {
    if (this.#error) return Promise.reject(this.#error)
    return new Promise<SyncReply>((resolve, reject) => {
      const entry = {
        resolve: (reply: SyncReply) => {
          clearTimeout(timer)
          resolve(reply)
        },
        reject: (err: Error) => {
          clearTimeout(timer)
          reject(err)
        },
      }
      const timer = setTimeout(() => {
        // The reply may still come: it then answers this (stale) entry, which is left in place.
        entry.resolve = () => {}
        reject(new NotifyError(code, this.label, `no reply to ${NOTIFY_INIT} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#syncs.push(entry)
      try {
        this.#send(NOTIFY_INIT)
      } catch (err) {
        this.#syncs.splice(this.#syncs.indexOf(entry), 1)
        entry.reject(err as Error)
        return
      }
      this.stats.inits++
    })
  }

  #send(message: string): void {
    if (this.#error) throw this.#error
    this.channel.send(Buffer.from(message, 'latin1'))
  }

  #message(msg: string, atMs: number): void {
    if (msg === NOTIFY_DO_CHECKPOINT) {
      const r: CheckpointRequest = {seq: ++this.stats.requests, atMs}
      this.#last = r
      for (const l of [...this.#listeners]) l(r)
      return
    }
    const sync = this.#syncs.shift()
    if (sync) {
      // libxl takes any reply to INIT; so do we, but say when it is not the usual one.
      this.#lastReply = msg
      if (msg !== NOTIFY_INIT_REPLY && this.#init) this.onLog('warning', `${this.label}: INIT answered with ${shown(msg)}`)
      sync.resolve({atMs, requests: this.stats.requests})
      return
    }
    this.stats.unexpected++
    this.onLog('warning', `${this.label}: unexpected message ${shown(msg)} ignored`)
  }

  #ended(end: ChannelEnd): void {
    const err =
      end.by === 'bad-frame' && end.error instanceof FrameError
        ? new NotifyError('bad-message', this.label, `not a notify message (${end.error.message}); connection closed`, {cause: end.error})
        : new NotifyError('closed', this.label, end.by === 'us' ? 'closed by us' : `closed by QEMU${end.error ? ` (${end.error.message})` : ''}`, end.error ? {cause: end.error} : undefined)
    this.#error = err
    this.#closedByUs = end.by === 'us'
    for (const s of this.#syncs.splice(0)) s.reject(err)
    for (const l of [...this.#endListeners]) l(err)
  }

  /** The INIT handshake's result. */
  get init(): NotifyInit {
    return this.#init!
  }

  /** The latest DO_CHECKPOINT, if any came. */
  get lastRequest(): CheckpointRequest | undefined {
    return this.#last
  }

  /** Why the connection is over, once it is. */
  get error(): NotifyError | undefined {
    return this.#error
  }

  get isOpen(): boolean {
    return this.#error === undefined
  }

  /** Calls `listener` with every DO_CHECKPOINT from now on, until the returned function is called. */
  onRequest(listener: (r: CheckpointRequest) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Calls `listener` once when the connection ends (at once if it has). */
  onEnd(listener: (err: NotifyError) => void): () => void {
    if (this.#error) {
      listener(this.#error)
      return () => {}
    }
    this.#endListeners.add(listener)
    return () => this.#endListeners.delete(listener)
  }

  /**
   * The first DO_CHECKPOINT with a sequence number above `afterSeq` (default: the latest so far):
   * resolves at once when one has come. Rejects with NotifyError `closed` / `bad-message` when the
   * connection ends, `sync-timeout` after `timeoutMs` (none by default).
   */
  nextRequest(opts: {afterSeq?: number; timeoutMs?: number} = {}): Promise<CheckpointRequest> {
    const after = opts.afterSeq ?? this.stats.requests
    const last = this.#last
    if (last && last.seq > after) return Promise.resolve(last)
    if (this.#error) return Promise.reject(this.#error)
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const done = () => {
        clearTimeout(timer)
        offReq()
        offEnd()
      }
      const offReq = this.onRequest((r) => {
        if (r.seq <= after) return
        done()
        resolve(r)
      })
      const offEnd = this.onEnd((err) => {
        done()
        reject(err)
      })
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          done()
          reject(new NotifyError('sync-timeout', this.label, `no ${NOTIFY_DO_CHECKPOINT} within ${opts.timeoutMs} ms`))
        }, opts.timeoutMs)
      }
    })
  }

  /** Every DO_CHECKPOINT from now on; ends when the connection is closed by us, throws when it breaks. */
  async *[Symbol.asyncIterator](): AsyncGenerator<CheckpointRequest> {
    const queue: CheckpointRequest[] = []
    let wake: (() => void) | undefined
    const offReq = this.onRequest((r) => {
      queue.push(r)
      wake?.()
    })
    let ended: NotifyError | undefined
    const offEnd = this.onEnd((err) => {
      ended = err
      wake?.()
    })
    try {
      for (;;) {
        while (queue.length) yield queue.shift()!
        if (ended) {
          if (this.#closedByUs) return
          throw ended
        }
        await new Promise<void>((resolve) => (wake = resolve))
        wake = undefined
      }
    } finally {
      offReq()
      offEnd()
    }
  }

  /** Sends COLO_CHECKPOINT. Throws NotifyError `closed` once the connection is over. */
  checkpoint(): void {
    this.#send(NOTIFY_CHECKPOINT)
    this.stats.checkpoints++
  }

  /**
   * Sends INIT and resolves at the reply: every message QEMU sent before it handled what we sent
   * before the INIT has arrived by then (their DO_CHECKPOINTs are those numbered up to
   * `reply.requests`). Rejects with `sync-timeout` after `timeoutMs` (default 1 s), or when the
   * connection ends. After a timeout the replies may pair with the wrong INITs: treat the
   * connection as broken.
   */
  sync(timeoutMs = 1_000): Promise<SyncReply> {
    return this.#sendInit(timeoutMs, 'sync-timeout')
  }

  /** Ends the connection; waits still pending are rejected with NotifyError `closed`. */
  async close(): Promise<void> {
    await this.channel.close()
  }
}
