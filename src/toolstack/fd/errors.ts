/**
 * The one error type of the raw-fd layer. It names what was being read or written (`migration
 * receiver stream`, `helper io_fd`, ...), the fd, and how far the transfer got, so a failure in the
 * middle of a handshake or a record says which bytes were missing.
 */
export type FdErrorCode =
  | 'eof' // the other end closed before all the bytes asked for arrived
  | 'closed' // writing to a pipe or socket whose reader has gone (EPIPE, ECONNRESET)
  | 'io' // any other error from the kernel (EBADF, EIO, ...)
  | 'not-reopenable' // reopenBlocking() on something that has no /proc path to reopen (a socket)
  | 'fifo' // making or opening the FIFOs of an fd pair failed

export interface FdErrorDetails {
  /** Bytes asked for. */
  readonly expected?: number
  /** Bytes moved before the failure. */
  readonly done?: number
  /** The errno code from the kernel (`EPIPE`, `EBADF`, ...), when there was one. */
  readonly errno?: string
  readonly cause?: unknown
}

export class FdError extends Error {
  override readonly name = 'FdError'
  readonly expected?: number
  readonly done?: number
  readonly errno?: string

  constructor(
    readonly code: FdErrorCode,
    /** What the bytes are: `migration stream`, `helper stdout`, `ready message`, ... */
    readonly what: string,
    /** The fd involved, -1 when none was open yet. */
    readonly fd: number,
    readonly detail: string,
    details: FdErrorDetails = {},
  ) {
    super(`${what} (fd ${fd}): ${detail}`, details.cause === undefined ? undefined : {cause: details.cause})
    if (details.expected !== undefined) this.expected = details.expected
    if (details.done !== undefined) this.done = details.done
    if (details.errno !== undefined) this.errno = details.errno
  }

  toJSON(): Record<string, unknown> {
    return {code: this.code, what: this.what, fd: this.fd, expected: this.expected, done: this.done, errno: this.errno, message: this.message}
  }
}

/** The `code` of a Node errno exception (`EAGAIN`, `EPIPE`, ...), or undefined. */
export function errnoCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return typeof code === 'string' ? code : undefined
}
