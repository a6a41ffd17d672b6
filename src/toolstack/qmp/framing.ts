/**
 * Newline framing of bytes that come from QEMU (QMP messages, its stdout and stderr), with a bound on
 * the line length: QEMU is not trusted, so a line that never ends cannot make us buffer without limit.
 *
 * Pure: bytes in, lines out. A line is split at `\n`; a `\r` before it is dropped (QMP ends its lines
 * with `\r\n`). Bytes are decoded as UTF-8 (invalid sequences become U+FFFD, never an exception). A line
 * longer than `maxLineBytes` is not kept: as soon as it goes over, one `{overlong}` item stands for it
 * (so a line that never ends is noticed at once), and the rest of it, up to its `\n`, is dropped. The
 * caller decides what that means (QMP: a protocol error; QEMU's output: a marker line).
 */

/** The default bound: 16 MiB, far above QEMU's largest reply (`query-qmp-schema`, ~200 KiB on 7.2). */
export const MAX_LINE_BYTES = 16 * 1024 * 1024

/** One framed item: a whole line, or a line over the bound (`overlong`: its bytes when it went over). */
export type FramedLine = {readonly line: string} | {readonly overlong: number}

const NL = 0x0a
const CR = 0x0d

export class LineFramer {
  /** Bytes of the unfinished line, in the order they came. */
  private parts: Buffer[] = []
  private partBytes = 0
  /** True while the rest of an overlong line is being dropped. */
  private dropping = false

  constructor(readonly maxLineBytes: number = MAX_LINE_BYTES) {
    if (!(maxLineBytes > 0)) throw new RangeError(`maxLineBytes must be positive, got ${maxLineBytes}`)
  }

  /** The lines `chunk` completes, in order, and an `overlong` item where a line goes over the bound. */
  push(chunk: Buffer): FramedLine[] {
    const out: FramedLine[] = []
    let start = 0
    while (start < chunk.length) {
      const nl = chunk.indexOf(NL, start)
      const end = nl < 0 ? chunk.length : nl
      this.take(chunk.subarray(start, end), out)
      if (nl < 0) break
      this.finishLine(out)
      start = nl + 1
    }
    return out
  }

  /** Bytes held for a line not yet ended (0 while dropping an overlong one). */
  get pendingBytes(): number {
    return this.partBytes
  }

  /** At the end of the input: what is left unterminated, as one item (or none). */
  flush(): FramedLine[] {
    if (this.dropping || this.partBytes === 0) {
      this.dropping = false
      return []
    }
    const out: FramedLine[] = []
    this.finishLine(out)
    return out
  }

  private take(bytes: Buffer, out: FramedLine[]): void {
    if (bytes.length === 0 || this.dropping) return
    if (this.partBytes + bytes.length > this.maxLineBytes) {
      // Over the bound: say so now, forget what was held, drop the rest of the line.
      out.push({overlong: this.partBytes + bytes.length})
      this.dropping = true
      this.parts = []
      this.partBytes = 0
      return
    }
    // Copy: the caller's chunk may be a pooled buffer that is reused after push() returns.
    this.parts.push(Buffer.from(bytes))
    this.partBytes += bytes.length
  }

  private finishLine(out: FramedLine[]): void {
    if (this.dropping) {
      this.dropping = false
      return
    }
    let line = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partBytes)
    this.parts = []
    this.partBytes = 0
    if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1)
    out.push({line: line.toString('utf8')})
  }
}
