/**
 * The guest's PRNG: xoshiro128** (Blackman and Vigna), four 32-bit words of state, seeded through
 * splitmix32 so that any seed (0 included) gives a non-zero state. Pure integer arithmetic, so every
 * machine draws the same numbers from the same state.
 */

export type PrngState = [number, number, number, number]

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}

/** One splitmix32 output for `x` (also used as a cheap 32-bit mixer). */
export function mix32(x: number): number {
  let z = (x + 0x9e3779b9) >>> 0
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
  return (z ^ (z >>> 16)) >>> 0
}

export function seedState(seed: number): PrngState {
  let x = seed >>> 0
  const out: number[] = []
  for (let i = 0; i < 4; i++) {
    x = (x + 0x9e3779b9) >>> 0
    out.push(mix32(x))
  }
  const state = out as PrngState
  if (state.every((w) => w === 0)) state[0] = 1
  return state
}

export class Xoshiro128 {
  s0: number
  s1: number
  s2: number
  s3: number

  constructor(state: PrngState) {
    ;[this.s0, this.s1, this.s2, this.s3] = state
  }

  /** The next 32-bit unsigned output. */
  next(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0
    const t = (this.s1 << 9) >>> 0
    this.s2 = (this.s2 ^ this.s0) >>> 0
    this.s3 = (this.s3 ^ this.s1) >>> 0
    this.s1 = (this.s1 ^ this.s2) >>> 0
    this.s0 = (this.s0 ^ this.s3) >>> 0
    this.s2 = (this.s2 ^ t) >>> 0
    this.s3 = rotl(this.s3, 11)
    return result
  }

  state(): PrngState {
    return [this.s0, this.s1, this.s2, this.s3]
  }

  /** A 32-bit digest of the state (what the guest's frames carry). */
  hash(): number {
    return mix32(this.s0 ^ mix32(this.s1 ^ mix32(this.s2 ^ mix32(this.s3))))
  }
}
