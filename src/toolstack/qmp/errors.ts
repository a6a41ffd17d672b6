/**
 * The errors of the QMP client. All are `QmpError`s; which one says what went wrong:
 *
 * - `QmpCommandError`: QEMU answered the command with an error (`{"error": {"class", "desc"}}`);
 *   the connection is fine.
 * - `QmpTimeoutError`: no reply to a command (or no event, or no greeting) within the time given;
 *   names the command (event, connect). The connection stays open: a late reply is dropped.
 * - `QmpConnectionError`: the connection could not be made, is not QMP, broke or was closed, or QEMU
 *   sent bytes that are not QMP (`protocol`, after which the connection is closed).
 *
 * Messages start with the connection's label (the socket path, or what the owner named it, e.g.
 * `QEMU pid 1234`), so a failure in a log says which QEMU.
 */

export class QmpError extends Error {
  override readonly name: string = 'QmpError'
}

/** QEMU's error reply to a command: its class (`GenericError`, `CommandNotFound`, ...) and text. */
export class QmpCommandError extends QmpError {
  override readonly name = 'QmpCommandError'
  constructor(
    readonly label: string,
    readonly command: string,
    /** QMP's error class: `GenericError`, `CommandNotFound`, `DeviceNotFound`, `DeviceNotActive`, `KVMMissingCap`. */
    readonly errorClass: string,
    /** QEMU's text, as sent. */
    readonly desc: string,
  ) {
    super(`${label}: QMP command "${command}" failed: ${errorClass}: ${desc}`)
  }
}

export type QmpTimeoutKind = 'command' | 'event' | 'connect'

export class QmpTimeoutError extends QmpError {
  override readonly name = 'QmpTimeoutError'
  constructor(
    readonly label: string,
    readonly kind: QmpTimeoutKind,
    /** The command, the event, or the socket path for `connect`. */
    readonly subject: string,
    readonly timeoutMs: number,
  ) {
    super(
      kind === 'command'
        ? `${label}: QMP command "${subject}" got no reply within ${timeoutMs} ms`
        : kind === 'event'
          ? `${label}: no QMP event "${subject}" within ${timeoutMs} ms`
          : `${label}: no QMP greeting on ${subject} within ${timeoutMs} ms`,
    )
  }

  /** The command that timed out (undefined for event and connect timeouts). */
  get command(): string | undefined {
    return this.kind === 'command' ? this.subject : undefined
  }
}

export type QmpConnectionErrorCode =
  | 'connect' // connecting to the socket failed (errno says why: ENOENT, ECONNREFUSED, ...)
  | 'not-qmp' // the first message was not a QMP greeting, or capabilities negotiation failed
  | 'closed' // the connection ended: QEMU closed it, it broke, or we closed it
  | 'protocol' // QEMU sent something that is not QMP: an overlong line, bad JSON, a malformed reply

export class QmpConnectionError extends QmpError {
  override readonly name = 'QmpConnectionError'
  constructor(
    readonly code: QmpConnectionErrorCode,
    message: string,
    /** The errno code (`ENOENT`, `ECONNREFUSED`, `EPIPE`, ...) when the kernel gave one. */
    readonly errno?: string,
  ) {
    super(message)
  }
}

/** A command's outcome as a value: the reply, or QEMU's error (other failures still throw). */
export type QmpResult<T> = {readonly ok: true; readonly value: T} | {readonly ok: false; readonly error: QmpCommandError}
