/**
 * Where a reader gets its bytes. A reader asks for exactly the bytes of the header or record it is
 * parsing and never more, because the fd behind a source may be handed to another process after the
 * record (DESIGN.md, "Processes and fds").
 */
export interface ByteSource {
  /** Stream offset of the next byte to be read. */
  readonly offset: number
  /**
   * Reads exactly `length` bytes. The result is shorter only when the source ended; an empty result
   * means it ended before the first byte.
   */
  read(length: number): Promise<Buffer>
  /**
   * Optional: moves the next `length` bytes to `fd` at byte `offset` without passing them through
   * memory of ours (a kernel copy, fd to fd). Returns how many moved: fewer only when the source ended.
   */
  moveTo?(fd: number, offset: number, length: number): Promise<number>
}

/** An in-memory source: a whole stream (or a prefix of one) already in a Buffer. */
export class BufferSource implements ByteSource {
  #offset = 0
  constructor(
    private readonly bytes: Buffer,
    /** Offset of `bytes[0]` in the stream it came from. */
    private readonly base = 0,
  ) {}

  get offset(): number {
    return this.base + this.#offset
  }

  /** Bytes not yet read. */
  get remaining(): number {
    return this.bytes.length - this.#offset
  }

  async read(length: number): Promise<Buffer> {
    return this.readSync(length)
  }

  readSync(length: number): Buffer {
    const start = this.#offset
    const end = Math.min(this.bytes.length, start + length)
    this.#offset = end
    return this.bytes.subarray(start, end)
  }
}
