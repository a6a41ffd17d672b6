/**
 * Guest disk I/O without a guest: HMP `qemu-io <drive> "write -P 0xNN <offset> <len>"` and
 * `"read -P 0xNN <offset> <len>"` through QMP's human-monitor-command, on a running device model.
 * What tests and demos use to play the guest of a COLO primary or secondary.
 *
 * Facts (QEMU-REPLICATION.md gotcha (a), and measured on QEMU 7.2.22):
 * - The QMP return of human-monitor-command is "" whatever qemu-io did. Its report goes to QEMU's
 *   STDOUT: `wrote <len>/<len> bytes at offset <off>` or `write failed: <strerror>`; for a read,
 *   `Pattern verification failed at offset <o>, <n> bytes` (when it differs) and then
 *   `read <len>/<len> bytes at offset <off>`, or `read failed: <strerror>`; then a timing line.
 *   Usage errors go to stderr (`command "x" not found`). An unknown drive is the one error HMP
 *   returns as text (`Error: Cannot find device='' nor node-name='x'`).
 * - That stdout is line-buffered by QEMU even into a pipe or a file: strace shows one write(2) per
 *   line, issued before the QMP reply is sent. No pty or `stdbuf` is needed. But stdout and the QMP
 *   socket are two channels: the report may be read just before or just after the reply. So the
 *   listener is installed before the command, and after the reply we wait (bounded) for the
 *   report line that names this very offset and length.
 * - Commands are serialized per QMP session (also across QemuIo objects on the same session), so
 *   a report always belongs to the one command in flight. Other stdout output is ignored.
 */
import {QmpCommandError, QmpConnectionError, QmpTimeoutError} from './errors.js'
import type {QmpSession} from './session.js'

/** A line QEMU printed (the device model's OutputLine fits). */
export interface QemuOutputLine {
  readonly stream: 'stdout' | 'stderr'
  readonly text: string
}

/** Subscribes to QEMU's output lines; returns the unsubscribe function (`(l) => dm.onOutput(l)`). */
export type QemuOutputSubscribe = (listener: (line: QemuOutputLine) => void) => () => void

export const DEFAULT_QEMU_IO_TIMEOUT_MS = 5_000

export type QemuIoErrorCode =
  | 'io' // qemu-io reported `write failed` / `read failed`
  | 'hmp' // HMP refused the command (unknown drive, ...)
  | 'no-report' // no report line on stdout in time
  | 'qmp' // the QMP command itself failed (timeout, connection gone, error reply)
  | 'bad-argument' // a drive, pattern, offset or length we will not send

export class QemuIoError extends Error {
  override readonly name = 'QemuIoError'
  constructor(
    readonly code: QemuIoErrorCode,
    /** The qemu-io command, e.g. `write -P 0xab 0 65536`. */
    readonly command: string,
    readonly drive: string,
    message: string,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : {cause})
  }
}

export interface QemuIoOptions {
  /** For the QMP command, and then for the report line (default 5 s each). */
  readonly timeoutMs?: number
}

/** The last command of each session: the next one waits for it. */
const queues = new WeakMap<QmpSession, Promise<unknown>>()

const DRIVE = /^[A-Za-z][A-Za-z0-9._-]*$/

type Outcome = {kind: 'done'; mismatch: boolean} | {kind: 'failed'; message: string}

export class QemuIo {
  private readonly timeoutMs: number

  constructor(
    private readonly qmp: QmpSession,
    private readonly output: QemuOutputSubscribe,
    options: QemuIoOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_QEMU_IO_TIMEOUT_MS
  }

  /** Writes `len` bytes of `pattern` at `offset` through `drive`, as the guest would. Throws QemuIoError. */
  async write(drive: string, pattern: number, offset: number, len: number): Promise<void> {
    await this.serialized('write', drive, pattern, offset, len)
  }

  /** Reads `len` bytes at `offset` through `drive`: true when all of them are `pattern`. Throws QemuIoError when the read fails. */
  async verify(drive: string, pattern: number, offset: number, len: number): Promise<boolean> {
    const outcome = await this.serialized('read', drive, pattern, offset, len)
    return !outcome.mismatch
  }

  private serialized(op: 'write' | 'read', drive: string, pattern: number, offset: number, len: number): Promise<{mismatch: boolean}> {
    const prev = queues.get(this.qmp) ?? Promise.resolve()
    const mine = prev.catch(() => {}).then(() => this.runOne(op, drive, pattern, offset, len))
    queues.set(this.qmp, mine.catch(() => {}))
    return mine
  }

  private async runOne(op: 'write' | 'read', drive: string, pattern: number, offset: number, len: number): Promise<{mismatch: boolean}> {
    const command = `${op} -P 0x${(pattern >>> 0).toString(16).padStart(2, '0')} ${offset} ${len}`
    const fail = (code: QemuIoErrorCode, message: string, cause?: unknown) =>
      new QemuIoError(code, command, drive, `qemu-io ${drive} "${command}": ${message}`, cause)
    if (!DRIVE.test(drive)) throw fail('bad-argument', 'not a drive id')
    if (!Number.isInteger(pattern) || pattern < 0 || pattern > 255) throw fail('bad-argument', `pattern ${pattern} is not a byte`)
    if (!Number.isSafeInteger(offset) || offset < 0) throw fail('bad-argument', `offset ${offset}`)
    if (!Number.isSafeInteger(len) || len <= 0) throw fail('bad-argument', `length ${len}`)

    const done = op === 'write' ? `wrote ${len}/${len} bytes at offset ${offset}` : `read ${len}/${len} bytes at offset ${offset}`
    const failed = `${op} failed: `
    let mismatch = false
    const stderr: string[] = []
    let settle!: (o: Outcome) => void
    const outcome = new Promise<Outcome>((resolve) => (settle = resolve))
    const unsubscribe = this.output((line) => {
      const text = line.text.trim()
      if (line.stream === 'stderr') {
        if (text !== '') stderr.push(text)
        return
      }
      if (text === done) settle({kind: 'done', mismatch})
      else if (text.startsWith(failed)) settle({kind: 'failed', message: text})
      else if (op === 'read' && text.startsWith('Pattern verification failed')) mismatch = true
    })
    let timer: NodeJS.Timeout | undefined
    try {
      let said: unknown
      try {
        said = await this.qmp.execute('human-monitor-command', {'command-line': `qemu-io ${drive} "${command}"`}, {timeoutMs: this.timeoutMs})
      } catch (err) {
        const why =
          err instanceof QmpCommandError ? err.desc : err instanceof QmpTimeoutError || err instanceof QmpConnectionError ? err.message : String(err)
        throw fail('qmp', why, err)
      }
      const text = typeof said === 'string' ? said.replace(/\r/g, '').trim() : ''
      if (text !== '') throw fail('hmp', text.replace(/\n/g, '; '))
      const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.timeoutMs)))
      const result = await Promise.race([outcome, timeout])
      if (result === 'timeout') {
        const extra = stderr.length > 0 ? `; QEMU said on stderr: ${stderr.join('; ')}` : ''
        throw fail('no-report', `no "${done}" on QEMU's stdout within ${this.timeoutMs} ms${extra}`)
      }
      if (result.kind === 'failed') throw fail('io', result.message)
      return {mismatch: result.mismatch}
    } finally {
      clearTimeout(timer)
      unsubscribe()
    }
  }
}
