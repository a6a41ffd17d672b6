/**
 * A ByteSource that first gives back bytes already taken from another source (a peeked prefix,
 * e.g. the first bytes read to tell which format a stream is in), then reads on from that source.
 * Offsets stay those of the underlying stream.
 */
import type {ByteSource} from '../stream/index.js'

export class ReplaySource implements ByteSource {
  #prefix: Buffer

  constructor(
    /** Bytes read from `inner` just before its current offset. */
    prefix: Buffer,
    private readonly inner: ByteSource,
  ) {
    this.#prefix = prefix
  }

  get offset(): number {
    return this.inner.offset - this.#prefix.length
  }

  async read(length: number): Promise<Buffer> {
    if (this.#prefix.length === 0) return this.inner.read(length)
    if (length <= this.#prefix.length) {
      const out = this.#prefix.subarray(0, length)
      this.#prefix = this.#prefix.subarray(length)
      return out
    }
    const head = this.#prefix
    this.#prefix = Buffer.alloc(0)
    const tail = await this.inner.read(length - head.length)
    return Buffer.concat([head, tail], head.length + tail.length)
  }
}
