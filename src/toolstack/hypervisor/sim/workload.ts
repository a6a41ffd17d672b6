/**
 * The simulated guest's vCPU: executes "steps". Each step advances the PRNG by exactly three draws
 * and decides from them whether to write a page (and which) and whether to emit a frame, so the
 * sequence of writes and frames is a pure function of the state in the vCPU context; timers only
 * decide how many steps run per tick. With nondeterminism p > 0, before each step a host-local
 * random event (not the PRNG) with probability p perturbs the PRNG state, so two copies drift apart.
 *
 * The guest's disk: every `diskEvery`-th step writes one block of its first disk (block
 * `diskBlock(index, blocks)` filled with one byte taken from the PRNG state), so the disk's content
 * too is a pure function of the vCPU context and the steps run: `replayDiskWrites` gives it.
 */
import type {GuestState} from './context.js'
import {buildFrame} from './frame.js'
import {Xoshiro128} from './prng.js'

const TWO32 = 4294967296

export interface GuestOutput {
  /** Writes page `pfn` with generation `gen` (the step number) and marks it dirty. */
  writePage(pfn: number, gen: number): void
  frame(frame: Buffer): void
  /** Writes disk block number `index` (mod the disk's blocks, see diskBlock) filled with `pattern`. */
  diskWrite(index: number, pattern: number): void
}

/** The guest writes its disk in blocks of this many bytes. */
export const DISK_BLOCK_BYTES = 64 * 1024

/** The byte offset of disk write `index` on a disk of `diskBytes` (writes walk the disk and wrap). */
export function diskWriteOffset(index: number, diskBytes: number): number {
  const blocks = Math.floor(diskBytes / DISK_BLOCK_BYTES)
  return blocks > 0 ? (index % blocks) * DISK_BLOCK_BYTES : 0
}

export class GuestCpu {
  private prng: Xoshiro128
  private writeLimit = 0
  private frameLimit = 0
  state: GuestState

  constructor(state: GuestState) {
    this.state = state
    this.prng = new Xoshiro128(state.prng)
    this.load(state)
  }

  load(state: GuestState): void {
    this.state = {...state, prng: [...state.prng], mac: Buffer.from(state.mac)}
    this.prng = new Xoshiro128(state.prng)
    this.writeLimit = state.wsPages > 0 ? (state.dirtyRate / state.stepRate) * TWO32 : 0
    this.frameLimit = (state.packetRate / state.stepRate) * TWO32
  }

  /** The state to save: a copy, with the PRNG's current words. */
  save(): GuestState {
    return {...this.state, prng: this.prng.state(), mac: Buffer.from(this.state.mac)}
  }

  get step(): number {
    return this.state.step
  }

  /** Runs exactly `n` steps. `random` is the host-local randomness (Math.random). */
  run(n: number, out: GuestOutput, random: () => number): void {
    const s = this.state
    const prng = this.prng
    const p = s.nondeterminism
    const {writeLimit, frameLimit} = this
    const wsFirst = s.wsFirst
    const wsPages = s.wsPages
    for (let i = 0; i < n; i++) {
      const step = ++s.step
      if (p > 0 && random() < p) {
        prng.s0 = (prng.s0 ^ ((Math.floor(random() * TWO32) >>> 0) | 1)) >>> 0
        if ((prng.s0 | prng.s1 | prng.s2 | prng.s3) === 0) prng.s0 = 1
        s.perturbations++
      }
      const r1 = prng.next()
      const r2 = prng.next()
      const r3 = prng.next()
      if (r1 < writeLimit) {
        out.writePage(wsFirst + Math.floor((r2 * wsPages) / TWO32), step)
        s.writes++
      }
      if (r3 < frameLimit) {
        const seq = s.frames++
        const frame = buildFrame({mac: s.mac, ipv4: s.ipv4, udpPort: s.udpPort, step, seq, stateHash: prng.hash()})
        s.txBytes += frame.length
        out.frame(frame)
      }
      if (s.diskEvery > 0 && step % s.diskEvery === 0) {
        out.diskWrite(s.diskWrites, prng.hash() & 0xff)
        s.diskWrites = (s.diskWrites + 1) >>> 0
      }
    }
  }
}

/**
 * The disk writes a guest makes from `state` over `steps` steps when nothing perturbs it
 * (nondeterminism 0), in order: what its disk holds is the initial image with these applied.
 */
export function replayDiskWrites(state: GuestState, steps: number): {index: number; pattern: number}[] {
  const writes: {index: number; pattern: number}[] = []
  const cpu = new GuestCpu({...state, nondeterminism: 0})
  cpu.run(steps, {writePage: () => undefined, frame: () => undefined, diskWrite: (index, pattern) => writes.push({index, pattern})}, Math.random)
  return writes
}
