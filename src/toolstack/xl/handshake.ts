/**
 * The fixed messages of xl's migration handshake (xl.h; XEN-FACTS §1.3), read and written on raw
 * fds with exact lengths, never through a Node stream (the bytes after them belong to someone else).
 *
 *     banner   receiver -> sender   54 bytes, no NUL
 *     ready    receiver -> sender   34 bytes (33 + NUL)
 *     GO       sender -> receiver   44 bytes (43 + NUL); and receiver -> sender after a failed start
 *     report   receiver -> sender   39 bytes (38 + NUL), then one status byte (0 = started, else -rc)
 *
 * Failures carry xl's words: libxl_read_exactly's "file/stream truncated reading <what> from
 * <stream>" / "failed to read <what> from <stream>", migrate_read_fixedmessage's "<stream> contained
 * unexpected data instead of <what>" with "(command run was: <rune> )" on the sender.
 */
import {FdError, readExact, writeAll} from '../fd/index.js'

export const MIGRATE_RECEIVER_BANNER = Buffer.from('xl migration receiver ready, send binary domain data.\n', 'latin1')
export const MIGRATE_RECEIVER_READY = Buffer.from('domain received, ready to unpause\0', 'latin1')
export const MIGRATE_PERMISSION_TO_GO = Buffer.from('domain is yours, you are cleared to unpause\0', 'latin1')
export const MIGRATE_REPORT = Buffer.from('my copy unpause results are as follows\0', 'latin1')

/** The stream names xl uses in its messages. */
export const SENDER_STREAM = 'migration receiver stream'
export const RECEIVER_STREAM = 'migration stream'
export const ACK_STREAM = 'migration ack stream'

export type HandshakeFailure = 'eof' | 'io' | 'mismatch'

export class HandshakeError extends Error {
  override readonly name = 'HandshakeError'
  constructor(
    readonly failure: HandshakeFailure,
    /** What was being read or written: `banner`, `ready message`, `GO message`, ... */
    readonly what: string,
    /** xl's lines for it, in order. */
    readonly lines: readonly string[],
    /** For a write: bytes that left before it failed (0: none reached the pipe). */
    readonly written?: number,
    options?: {cause?: unknown},
  ) {
    super(lines.join(' '), options)
  }
}

/**
 * migrate_read_fixedmessage: reads exactly `msg.length` bytes and compares them. `rune` (sender
 * side) names the stream `migration receiver stream` and adds the command line on a mismatch.
 */
export async function readFixedMessage(fd: number, msg: Buffer, what: string, rune?: string): Promise<void> {
  const stream = rune !== undefined ? SENDER_STREAM : RECEIVER_STREAM
  let got: Buffer
  try {
    got = await readExact(fd, msg.length, {what})
  } catch (err) {
    const errno = err instanceof FdError ? err.errno : undefined
    throw new HandshakeError('io', what, [`failed to read ${what} from ${stream}${errno ? `: ${errno}` : ''}`], undefined, {cause: err})
  }
  if (got.length < msg.length) throw new HandshakeError('eof', what, [`file/stream truncated reading ${what} from ${stream}`])
  if (!got.equals(msg)) {
    const lines = [`${stream} contained unexpected data instead of ${what}`]
    if (rune !== undefined) lines.push(`(command run was: ${rune} )`)
    throw new HandshakeError('mismatch', what, lines)
  }
}

/** libxl_read_exactly of a few bytes that are not a fixed message (the status byte). */
export async function readBytes(fd: number, length: number, what: string, stream: string): Promise<Buffer> {
  let got: Buffer
  try {
    got = await readExact(fd, length, {what})
  } catch (err) {
    const errno = err instanceof FdError ? err.errno : undefined
    throw new HandshakeError('io', what, [`failed to read ${what} from ${stream}${errno ? `: ${errno}` : ''}`], undefined, {cause: err})
  }
  if (got.length < length) throw new HandshakeError('eof', what, [`file/stream truncated reading ${what} from ${stream}`])
  return got
}

/** libxl_write_exactly: all of `data` or a HandshakeError saying how much left. */
export async function writeMessage(fd: number, data: Buffer, what: string, stream: string): Promise<void> {
  try {
    await writeAll(fd, [data], {what})
  } catch (err) {
    const errno = err instanceof FdError ? err.errno : undefined
    const written = err instanceof FdError ? err.done ?? 0 : 0
    throw new HandshakeError('io', what, [`failed to write ${what} from ${stream}${errno ? `: ${errno}` : ''}`], written, {cause: err})
  }
}

/** The status byte of the report: `-rc` as a C char (0 = the domain runs at the target). */
export function encodeStatus(rc: number): Buffer {
  return Buffer.from([-rc & 0xff])
}

/** The status byte as xl's sender prints it (`%d` of a signed char). */
export function decodeStatus(b: Buffer): number {
  return b.readInt8(0)
}
