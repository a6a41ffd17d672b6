/**
 * The simulated guest's vCPU: executes "steps". Each step advances the PRNG by exactly three draws
 * and decides from them whether to write a page (and which) and whether to emit a frame, so the
 * sequence of writes and frames is a pure function of the state in the vCPU context; timers only
 * decide how many steps run per tick. With nondeterminism p > 0, before each step a host-local
 * random event (not the PRNG) with probability p perturbs the PRNG state, so two copies drift apart.
 */
import type {GuestState} from './context.js'
import {buildFrame} from './frame.js'
import {Xoshiro128} from './prng.js'

const TWO32 = 4294967296

export interface GuestOutput {
  /** Writes page `pfn` with generation `gen` (the step number) and marks it dirty. */
  writePage(pfn: number, gen: number): void
  frame(frame: Buffer): void
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
        out.frame(buildFrame({mac: s.mac, ipv4: s.ipv4, udpPort: s.udpPort, step, seq, stateHash: prng.hash()}))
      }
    }
  }
}
