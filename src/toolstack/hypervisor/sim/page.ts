/**
 * The content of a simulated guest page (4096 bytes), self-describing so that memory can be checked
 * page by page, as QEMU's migration test does with its counter pages:
 *
 *   off   size  field
 *     0     4   magic 0x50544c58 ("XLTP")
 *     4     4   pfn
 *     8     8   generation (u64: the guest step that last wrote the page; 0 = initial content)
 *    16     4   check = hash32(pfn, generation)
 *    20    12   zero
 *    32  4048   body: a 16-byte pattern derived from (pfn, generation), repeated
 *  4080     8   generation again
 *  4088     4   pfn again
 *  4092     4   check again
 *
 * A page torn by a concurrent write has differing stamps at its two ends or a body that does not
 * match its header. Special pages (the top SPECIAL_PAGES pfns: xenstore ring, console ring, ioreq
 * pages) are never written by the guest and stay zero, as restore clears them.
 * All fields little-endian.
 */
import {mix32} from './prng.js'

export const PAGE_SIZE = 4096
export const PAGE_SHIFT = 12
export const PAGE_MAGIC = 0x50544c58
export const HEADER_BYTES = 32
export const TAIL_BYTES = 16
/** Pages at the top of guest memory that hold the rings the HVM params point to. */
export const SPECIAL_PAGES = 8

const TWO32 = 4294967296

export function pageCheck(pfn: number, genLo: number, genHi: number): number {
  return mix32((PAGE_MAGIC ^ pfn ^ mix32(genLo ^ mix32(genHi ^ 0x5bd1e995))) >>> 0)
}

/** Fills `pattern` (16 bytes) with the body pattern of (pfn, generation). */
function setPattern(pattern: Buffer, pfn: number, genLo: number, genHi: number): void {
  const a = mix32((Math.imul(pfn, 0x9e3779b1) ^ genLo) >>> 0)
  const b = mix32((a ^ genHi ^ 0x27d4eb2f) >>> 0)
  pattern.writeUInt32LE(pfn >>> 0, 0)
  pattern.writeUInt32LE(genLo >>> 0, 4)
  pattern.writeUInt32LE(a, 8)
  pattern.writeUInt32LE(b, 12)
}

/** Writes page (pfn, generation) into `buf` at `off`. `pattern` is 16 bytes of scratch. */
export function fillPage(buf: Buffer, off: number, pfn: number, gen: number, pattern: Buffer): void {
  const genLo = gen >>> 0
  const genHi = Math.floor(gen / TWO32) >>> 0
  setPattern(pattern, pfn, genLo, genHi)
  buf.fill(pattern, off, off + PAGE_SIZE)
  const check = pageCheck(pfn, genLo, genHi)
  buf.writeUInt32LE(PAGE_MAGIC, off)
  buf.writeUInt32LE(pfn >>> 0, off + 4)
  buf.writeUInt32LE(genLo, off + 8)
  buf.writeUInt32LE(genHi, off + 12)
  buf.writeUInt32LE(check, off + 16)
  buf.fill(0, off + 20, off + HEADER_BYTES)
  const t = off + PAGE_SIZE - TAIL_BYTES
  buf.writeUInt32LE(genLo, t)
  buf.writeUInt32LE(genHi, t + 4)
  buf.writeUInt32LE(pfn >>> 0, t + 8)
  buf.writeUInt32LE(check, t + 12)
}

export type PageVerdict = {ok: true; gen: number; zero: boolean} | {ok: false; reason: string}

/**
 * Checks the page at `buf[off..off+4096]` against pfn. `scratch` is a 4096-byte buffer and `pattern`
 * 16 bytes, both reused across calls. `special` pages must be zero.
 */
export function checkPage(buf: Buffer, off: number, pfn: number, special: boolean, scratch: Buffer, pattern: Buffer): PageVerdict {
  if (special) {
    for (let i = off; i < off + PAGE_SIZE; i += 8) {
      if (buf.readBigUInt64LE(i) !== 0n) return {ok: false, reason: `special page is not zero at byte ${i - off}`}
    }
    return {ok: true, gen: 0, zero: true}
  }
  const magic = buf.readUInt32LE(off)
  if (magic !== PAGE_MAGIC) {
    const zero = buf.subarray(off, off + PAGE_SIZE).every((b) => b === 0)
    return {ok: false, reason: zero ? 'page is zero' : `bad magic 0x${magic.toString(16)}`}
  }
  const hpfn = buf.readUInt32LE(off + 4)
  if (hpfn !== pfn >>> 0) return {ok: false, reason: `header names pfn ${hpfn}`}
  const genLo = buf.readUInt32LE(off + 8)
  const genHi = buf.readUInt32LE(off + 12)
  const t = off + PAGE_SIZE - TAIL_BYTES
  if (buf.readUInt32LE(t) !== genLo || buf.readUInt32LE(t + 4) !== genHi) return {ok: false, reason: 'torn page: generations at head and tail differ'}
  if (buf.readUInt32LE(t + 8) !== hpfn) return {ok: false, reason: 'torn page: pfns at head and tail differ'}
  const check = pageCheck(pfn, genLo, genHi)
  if (buf.readUInt32LE(off + 16) !== check || buf.readUInt32LE(t + 12) !== check) return {ok: false, reason: 'bad check word'}
  const gen = genHi * TWO32 + genLo
  fillPage(scratch, 0, pfn, gen, pattern)
  if (buf.compare(scratch, 0, PAGE_SIZE, off, off + PAGE_SIZE) !== 0) return {ok: false, reason: `body does not match generation ${gen}`}
  return {ok: true, gen, zero: false}
}
