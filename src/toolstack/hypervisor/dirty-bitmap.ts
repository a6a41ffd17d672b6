/**
 * A set of guest pages as a bitmap, one bit per pfn (bit i of byte i>>3 = pfn i, as Xen's
 * log-dirty bitmaps are laid out on little-endian hosts).
 */
export class DirtyBitmap {
  readonly bits: Uint8Array

  constructor(
    /** Number of pages the bitmap covers (the p2m size). */
    readonly pages: number,
    bits?: Uint8Array,
  ) {
    const bytes = Math.ceil(pages / 8)
    if (bits && bits.length !== bytes) throw new RangeError(`a bitmap of ${pages} pages has ${bytes} bytes, not ${bits.length}`)
    this.bits = bits ?? new Uint8Array(bytes)
  }

  static all(pages: number): DirtyBitmap {
    const b = new DirtyBitmap(pages)
    b.bits.fill(0xff)
    const tail = pages % 8
    if (tail) b.bits[b.bits.length - 1] = (1 << tail) - 1
    return b
  }

  static fromPfns(pages: number, pfns: Iterable<number>): DirtyBitmap {
    const b = new DirtyBitmap(pages)
    for (const pfn of pfns) b.set(pfn)
    return b
  }

  has(pfn: number): boolean {
    return ((this.bits[pfn >>> 3] ?? 0) & (1 << (pfn & 7))) !== 0
  }

  set(pfn: number): void {
    if (!(pfn >= 0 && pfn < this.pages)) throw new RangeError(`pfn ${pfn} is outside a bitmap of ${this.pages} pages`)
    this.bits[pfn >>> 3]! |= 1 << (pfn & 7)
  }

  clear(pfn: number): void {
    this.bits[pfn >>> 3]! &= ~(1 << (pfn & 7))
  }

  /** Number of pages in the set. */
  count(): number {
    let n = 0
    for (const byte of this.bits) n += POPCOUNT[byte]!
    return n
  }

  isEmpty(): boolean {
    return this.bits.every((b) => b === 0)
  }

  /** Adds every page of `other` to this set (A ∪ B). */
  union(other: DirtyBitmap): this {
    if (other.pages !== this.pages) throw new RangeError(`cannot join bitmaps of ${this.pages} and ${other.pages} pages`)
    for (let i = 0; i < this.bits.length; i++) this.bits[i]! |= other.bits[i]!
    return this
  }

  copy(): DirtyBitmap {
    return new DirtyBitmap(this.pages, this.bits.slice())
  }

  /** The pfns in the set, ascending. */
  *pfns(): Generator<number> {
    const {bits} = this
    for (let i = 0; i < bits.length; i++) {
      let byte = bits[i]!
      while (byte) {
        const low = byte & -byte
        yield i * 8 + 31 - Math.clz32(low)
        byte ^= low
      }
    }
  }

  toArray(): number[] {
    return [...this.pfns()]
  }
}

const POPCOUNT = Uint8Array.from({length: 256}, (_, i) => {
  let n = 0
  for (let v = i; v; v &= v - 1) n++
  return n
})
