/**
 * One QMP conversation without the socket: bytes from QEMU go in (`receive`), command lines come out
 * (the `send` callback), and the session matches replies to commands by `id`, hands events to
 * listeners and waiters, and times commands out. `QmpClient` (client.ts) puts a unix socket under it;
 * tests drive it directly with any bytes.
 *
 * Ids are ours (1, 2, 3, ...), so a reply finds its command whatever events come in between. What
 * does not fit is reported to `onAnomaly` listeners and otherwise ignored: a reply without an id
 * (QEMU answers input it could not parse that way; we never send such input), a reply whose id is
 * no command of ours, a reply that comes after its command timed out, an object of an unknown kind,
 * a listener that threw. What cannot be QMP (an overlong line, bad JSON, a malformed reply, a first
 * message that is no greeting) ends the session with a `protocol` / `not-qmp` QmpConnectionError.
 * When the session ends, for whatever reason, every command still waiting and every event waiter
 * is rejected with an error that says why and which command (or event) it was waiting for.
 *
 * Events are numbered (`seq`, from 1) and the last EVENT_HISTORY are kept, so a caller can wait for an
 * event that QEMU sends before the reply to the command that causes it (STOP comes before the reply
 * to `stop`): take `eventSeq` before the command, then `waitEvent(name, {since})`.
 */
import {QmpCommandError, QmpConnectionError, QmpTimeoutError, type QmpResult} from './errors.js'
import {LineFramer, MAX_LINE_BYTES} from './framing.js'
import {encodeQmpCommand, excerpt, parseQmpMessage, type QmpEvent, type QmpGreeting, type QmpMessage} from './protocol.js'

/** libxl's LIBXL_QMP_CMD_TIMEOUT (XEN-FACTS §11). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000
/** Events kept for `waitEvent(..., {since})`. */
export const EVENT_HISTORY = 256
/**
 * Events taken before the greeting. QEMU 7.2 can send one there: its monitor I/O thread accepts the
 * connection while the main thread emits an event (RESUME as the guest starts) before the greeting is
 * queued (the race QEMU's "qmp: Fix thread race" patch of 2025-12 closes). A few are QEMU's; more is
 * not QMP.
 */
const EVENTS_BEFORE_GREETING_MAX = 16
/** Ids of timed-out commands remembered, so their late replies are recognised. */
const EXPIRED_MAX = 1024

/** An event as delivered: QEMU's, plus its number in this session. */
export interface QmpEventRecord extends QmpEvent {
  readonly seq: number
}

export type QmpAnomalyKind =
  | 'reply-without-id'
  | 'unknown-id'
  | 'late-reply'
  | 'unknown-message'
  | 'unexpected-greeting'
  | 'event-before-greeting'
  | 'listener-threw'

export interface QmpAnomaly {
  readonly kind: QmpAnomalyKind
  readonly message: string
}

export interface QmpSessionOptions {
  /** Names the connection in messages: the socket path, `QEMU pid 1234`, ... */
  readonly label?: string
  /** Writes one command line to QEMU. */
  readonly send: (line: string) => void
  /** Called once when the session ends because of what QEMU sent (the owner drops the connection). */
  readonly onFatal?: (error: QmpConnectionError) => void
  readonly maxLineBytes?: number
  /** The timeout of commands and waits that give none (default 10 s). */
  readonly defaultTimeoutMs?: number
}

export interface ExecuteOptions {
  /** Give up after this long (default: the session's); `Infinity` waits for ever. */
  readonly timeoutMs?: number
}

export interface WaitEventOptions extends ExecuteOptions {
  /** Only events this accepts (it is given each event of the name; if it throws, the wait fails). */
  readonly filter?: (event: QmpEventRecord) => boolean
  /** Also take a kept event numbered above this (`eventSeq` read before the command that causes it). */
  readonly since?: number
}

interface Pending {
  readonly command: string
  readonly resolve: (value: unknown) => void
  readonly reject: (error: Error) => void
  timer?: NodeJS.Timeout
}

interface Waiter {
  readonly name: string
  readonly filter?: (event: QmpEventRecord) => boolean
  readonly resolve: (event: QmpEventRecord) => void
  readonly reject: (error: Error) => void
  timer?: NodeJS.Timeout
}

type Listener<T> = (value: T) => void

/** Calls `fn` after `ms` unless `ms` is infinite (setTimeout would take Infinity for 1 ms). */
function timer(ms: number, fn: () => void): NodeJS.Timeout | undefined {
  return Number.isFinite(ms) ? setTimeout(fn, Math.max(0, ms)) : undefined
}

export class QmpSession {
  readonly label: string
  readonly defaultTimeoutMs: number
  /** Resolves with the greeting; rejects if the session ends first or the first message is not one. */
  readonly greetingReceived: Promise<QmpGreeting>
  /** Resolves when the session has ended, with why. Never rejects. */
  readonly ended: Promise<QmpConnectionError>

  private readonly send: (line: string) => void
  private readonly onFatal?: (error: QmpConnectionError) => void
  private readonly framer: LineFramer
  private greetingValue?: QmpGreeting
  private endError?: QmpConnectionError
  private settleGreeting!: {resolve: (g: QmpGreeting) => void; reject: (e: Error) => void}
  private settleEnded!: (e: QmpConnectionError) => void
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  private readonly expired = new Map<number, string>()
  private readonly waiters = new Set<Waiter>()
  private readonly history: QmpEventRecord[] = []
  private seq = 0
  private readonly eventListeners = new Set<Listener<QmpEventRecord>>()
  private readonly anomalyListeners = new Set<Listener<QmpAnomaly>>()

  constructor(options: QmpSessionOptions) {
    this.label = options.label ?? 'QMP'
    this.send = options.send
    if (options.onFatal) this.onFatal = options.onFatal
    this.framer = new LineFramer(options.maxLineBytes ?? MAX_LINE_BYTES)
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS
    this.greetingReceived = new Promise((resolve, reject) => (this.settleGreeting = {resolve, reject}))
    this.greetingReceived.catch(() => {}) // not every owner awaits it; its failure also ends the session
    this.ended = new Promise((resolve) => (this.settleEnded = resolve))
  }

  /** The server's greeting (undefined until it has come). */
  get greeting(): QmpGreeting | undefined {
    return this.greetingValue
  }

  /** True until the session has ended. */
  get isOpen(): boolean {
    return this.endError === undefined
  }

  /** Why the session ended, once it has. */
  get endReason(): QmpConnectionError | undefined {
    return this.endError
  }

  /** The number of the last event received (0 before any). */
  get eventSeq(): number {
    return this.seq
  }

  /** Commands sent and not yet answered. */
  get pendingCommands(): string[] {
    return [...this.pending.values()].map((p) => p.command)
  }

  // --- input -------------------------------------------------------------------------------------

  /** Bytes from QEMU. Never throws: whatever is wrong with them ends the session or is an anomaly. */
  receive(chunk: Buffer): void {
    if (this.endError) return
    for (const item of this.framer.push(chunk)) {
      if (this.endError) return
      if ('overlong' in item) {
        this.fail(
          new QmpConnectionError(
            'protocol',
            `${this.label}: QMP protocol error: a line of more than ${this.framer.maxLineBytes} bytes`,
          ),
        )
        return
      }
      if (item.line.trim() === '') continue
      let msg: QmpMessage
      try {
        msg = parseQmpMessage(item.line, this.label)
      } catch (err) {
        this.fail(err as QmpConnectionError)
        return
      }
      this.dispatch(msg, item.line)
    }
  }

  /**
   * The session is over (the connection closed or broke): everything waiting is rejected with
   * `reason` plus what it waited for. Later calls do nothing.
   */
  end(reason: QmpConnectionError): void {
    if (this.endError) return
    this.endError = reason
    const derived = (what: string) => new QmpConnectionError(reason.code, `${reason.message}; ${what}`, reason.errno)
    this.settleGreeting.reject(derived('no QMP greeting'))
    const pending = [...this.pending.values()]
    this.pending.clear()
    for (const p of pending) {
      clearTimeout(p.timer)
      p.reject(derived(`no reply to "${p.command}"`))
    }
    const waiters = [...this.waiters]
    this.waiters.clear()
    for (const w of waiters) {
      clearTimeout(w.timer)
      w.reject(derived(`no event "${w.name}"`))
    }
    this.settleEnded(reason)
  }

  private fail(error: QmpConnectionError): void {
    this.end(error)
    this.onFatal?.(error)
  }

  private dispatch(msg: QmpMessage, line: string): void {
    if (!this.greetingValue) {
      // seq counts events, and before the greeting only these
      if (msg.kind === 'event' && this.seq < EVENTS_BEFORE_GREETING_MAX) {
        this.anomaly('event-before-greeting', `event ${msg.event.event} before the QMP greeting (a QEMU race, taken)`)
        this.deliver(msg.event)
        return
      }
      if (msg.kind !== 'greeting') {
        this.fail(new QmpConnectionError('not-qmp', `${this.label}: expected a QMP greeting, got ${excerpt(line)}`))
        return
      }
      this.greetingValue = msg.greeting
      this.settleGreeting.resolve(msg.greeting)
      return
    }
    switch (msg.kind) {
      case 'greeting':
        this.anomaly('unexpected-greeting', `a second QMP greeting: ${excerpt(line)}`)
        return
      case 'event':
        this.deliver(msg.event)
        return
      case 'unknown':
        this.anomaly('unknown-message', `a message of no known kind: ${excerpt(line)}`)
        return
      default:
        break
    }
    if (!msg.hasId) {
      this.anomaly('reply-without-id', `a reply without an id: ${excerpt(line)}`)
      return
    }
    const id = msg.id
    const p = typeof id === 'number' ? this.pending.get(id) : undefined
    if (!p) {
      const late = typeof id === 'number' ? this.expired.get(id) : undefined
      if (late !== undefined) {
        this.expired.delete(id as number)
        this.anomaly('late-reply', `the reply to "${late}" (id ${id}) came after it timed out`)
      } else {
        this.anomaly('unknown-id', `a reply with an id of no command of ours: ${excerpt(line)}`)
      }
      return
    }
    this.pending.delete(id as number)
    clearTimeout(p.timer)
    if (msg.kind === 'return') p.resolve(msg.value)
    else p.reject(new QmpCommandError(this.label, p.command, msg.errorClass, msg.desc))
  }

  private deliver(event: QmpEvent): void {
    const record: QmpEventRecord = {...event, seq: ++this.seq}
    this.history.push(record)
    if (this.history.length > EVENT_HISTORY) this.history.shift()
    for (const listener of [...this.eventListeners]) {
      try {
        listener(record)
      } catch (err) {
        this.anomaly('listener-threw', `an event listener threw on ${record.event}: ${(err as Error)?.message ?? String(err)}`)
      }
    }
    for (const w of [...this.waiters]) {
      if (w.name === record.event) this.tryWaiter(w, record)
    }
  }

  /** Settles `w` with `record` if its filter takes it (or with the filter's exception). */
  private tryWaiter(w: Waiter, record: QmpEventRecord): boolean {
    let take: boolean
    try {
      take = !w.filter || w.filter(record)
    } catch (err) {
      this.dropWaiter(w)
      w.reject(err instanceof Error ? err : new Error(String(err)))
      return true
    }
    if (take) {
      this.dropWaiter(w)
      w.resolve(record)
    }
    return take
  }

  private dropWaiter(w: Waiter): void {
    clearTimeout(w.timer)
    this.waiters.delete(w)
  }

  private anomaly(kind: QmpAnomalyKind, message: string): void {
    const a: QmpAnomaly = {kind, message: `${this.label}: ${message}`}
    for (const listener of [...this.anomalyListeners]) {
      try {
        listener(a)
      } catch {
        // a listener that throws on an anomaly has nobody left to tell
      }
    }
  }

  private closedError(what: string): QmpConnectionError {
    const reason = this.endError!
    return new QmpConnectionError(reason.code, `${this.label}: QMP connection is closed (${reason.message}); ${what}`, reason.errno)
  }

  // --- commands and events -------------------------------------------------------------------------

  /**
   * Runs `command` and resolves with its `return` value. Rejects with QmpCommandError (QEMU's error
   * reply), QmpTimeoutError (no reply in time) or QmpConnectionError (the session ended first).
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: ExecuteOptions = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.endError) {
        reject(this.closedError(`cannot run "${command}"`))
        return
      }
      const id = this.nextId++
      let line: string
      try {
        line = encodeQmpCommand(command, args, id)
      } catch (err) {
        reject(err)
        return
      }
      const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs
      const p: Pending = {command, resolve: resolve as (v: unknown) => void, reject}
      p.timer = timer(timeoutMs, () => {
        if (this.pending.get(id) !== p) return
        this.pending.delete(id)
        this.expired.set(id, command)
        if (this.expired.size > EXPIRED_MAX) this.expired.delete(this.expired.keys().next().value as number)
        reject(new QmpTimeoutError(this.label, 'command', command, timeoutMs))
      })
      this.pending.set(id, p)
      try {
        this.send(line)
      } catch (err) {
        this.pending.delete(id)
        clearTimeout(p.timer)
        reject(err)
      }
    })
  }

  /** As execute(), but QEMU's error reply is a value (`{ok: false, error}`); other failures throw. */
  async tryExecute<T = unknown>(command: string, args?: Record<string, unknown>, options?: ExecuteOptions): Promise<QmpResult<T>> {
    try {
      return {ok: true, value: await this.execute<T>(command, args, options)}
    } catch (err) {
      if (err instanceof QmpCommandError) return {ok: false, error: err}
      throw err
    }
  }

  /**
   * The next event `name` (that `filter` accepts; with `since`, a kept one numbered above it counts).
   * Rejects with QmpTimeoutError or, if the session ends first, QmpConnectionError.
   */
  waitEvent(name: string, options: WaitEventOptions = {}): Promise<QmpEventRecord> {
    return new Promise<QmpEventRecord>((resolve, reject) => {
      const w: Waiter = {name, resolve, reject, ...(options.filter ? {filter: options.filter} : {})}
      const since = options.since
      if (since !== undefined) {
        for (const record of this.history) {
          if (record.seq > since && record.event === name && this.tryWaiter(w, record)) return
        }
      }
      if (this.endError) {
        reject(this.closedError(`no event "${name}"`))
        return
      }
      const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs
      w.timer = timer(timeoutMs, () => {
        this.dropWaiter(w)
        reject(new QmpTimeoutError(this.label, 'event', name, timeoutMs))
      })
      this.waiters.add(w)
    })
  }

  /** Calls `listener` with every event (or only those named `name`) until the returned function is called. */
  onEvent(listener: Listener<QmpEventRecord>, name?: string): () => void {
    const l: Listener<QmpEventRecord> = name === undefined ? listener : (e) => e.event === name && listener(e)
    this.eventListeners.add(l)
    return () => this.eventListeners.delete(l)
  }

  /** Calls `listener` with every anomaly until the returned function is called. */
  onAnomaly(listener: Listener<QmpAnomaly>): () => void {
    this.anomalyListeners.add(listener)
    return () => this.anomalyListeners.delete(listener)
  }
}
