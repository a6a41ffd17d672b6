/**
 * The simulated guest's state blobs and the per-domain platform defaults.
 *
 * vCPU context (what travels as the body of a libxc HVM_CONTEXT record) is shaped like Xen's HVM
 * save format (public/hvm/save.h): a series of `{u16 typecode; u16 instance; u32 length}` descriptors
 * each followed by `length` bytes, ending with the zero END descriptor. Ours holds
 *
 *   HEADER (typecode 1, 24 bytes): u32 magic 0x54381286, u32 version 1, u64 changeset 0,
 *                                   u32 cpuid (leaf 1 eax), u32 gtsc_khz
 *   SIM_GUEST (typecode 0x5358, instance 0, 120 bytes), little-endian:
 *       0  u32  magic "XLSG" (0x47534c58)
 *       4  u16  version (1)
 *       6  u16  flags (bit 0: the guest has a workload state; 0 = an empty context)
 *       8  u64  step: guest steps executed so far (the generation stamped on pages written next)
 *      16  u32[4] xoshiro128** state
 *      32  f64  step rate (steps per second of guest run time)
 *      40  f64  dirty rate (pages per second)
 *      48  f64  packet rate (frames per second)
 *      56  f64  nondeterminism (probability per step of a host-local perturbation)
 *      64  u32  first pfn of the working set
 *      68  u32  pages in the working set
 *      72  u32  seed
 *      76  u32  disk write period in steps (0: the guest writes no disk)
 *      80  u64  page writes so far
 *      88  u64  frames emitted so far (the next frame's sequence number)
 *      96  u64  perturbations taken so far
 *     104  u8[6] MAC address of the guest's NIC
 *     110  u16  UDP source port
 *     112  u32  IPv4 source address
 *     116  u32  disk writes so far (mod 2^32; the next write's index)
 *   SIM_NIC (typecode 0x4e53, instance 0, 16 bytes), little-endian: the guest NIC's counters
 *       0  u64  bytes transmitted (its frames: SIM_GUEST's frames emitted so far)
 *       8  u64  frames received (0: the sim's NIC receives nothing)
 *   END (typecode 0, length 0)
 *
 * The page-write, frame and disk-write sequence that follows is a pure function of SIM_GUEST (plus
 * host-local randomness when nondeterminism > 0). The two disk fields were zero in contexts written
 * before the guest had a disk, which reads as "no disk writes": old contexts stay valid. So do
 * contexts without SIM_NIC (written while the NIC's counters were the sim device model's state):
 * they read as counters of zero.
 */
import {HypervisorError} from '../index.js'
import type {CpuPolicy, HvmParam, TscInfo, WorkloadSpec} from '../index.js'
import {SPECIAL_PAGES} from './page.js'
import {mix32, seedState, type PrngState} from './prng.js'
import {HVM_PARAM} from '../../stream/index.js'

export const HVM_FILE_MAGIC = 0x54381286
export const HVM_FILE_VERSION = 1
export const HVM_SAVE_CODE_END = 0
export const HVM_SAVE_CODE_HEADER = 1
export const HVM_SAVE_CODE_SIM_GUEST = 0x5358
export const SIM_GUEST_MAGIC = 0x47534c58
export const SIM_GUEST_VERSION = 1
export const SIM_GUEST_BYTES = 120
export const HVM_SAVE_CODE_SIM_NIC = 0x4e53
export const SIM_NIC_BYTES = 16
export const CONTEXT_BYTES = 8 + 24 + 8 + SIM_GUEST_BYTES + 8 + SIM_NIC_BYTES + 8

/** CPUID leaf 1 eax of the simulated CPU (family 6 model 0x5e stepping 3). */
export const SIM_CPUID_SIGNATURE = 0x000506e3
export const SIM_TSC_KHZ = 2_400_000
/** Steps per second at least, whatever the rates: keeps one step's time short. */
export const MIN_STEP_RATE = 1000

export interface GuestState {
  hasWorkload: boolean
  step: number
  prng: PrngState
  stepRate: number
  dirtyRate: number
  packetRate: number
  nondeterminism: number
  wsFirst: number
  wsPages: number
  seed: number
  writes: number
  frames: number
  perturbations: number
  mac: Buffer
  udpPort: number
  ipv4: number
  /** A disk write every this many steps (0: none). */
  diskEvery: number
  /** Disk writes issued so far: the index of the next one. */
  diskWrites: number
  /** The NIC's bytes transmitted and frames received (SIM_NIC). */
  txBytes: number
  rxFrames: number
}

const TWO32 = 4294967296

function readU64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off + 4) * TWO32 + buf.readUInt32LE(off)
}

function writeU64(buf: Buffer, off: number, v: number): void {
  buf.writeUInt32LE(v >>> 0, off)
  buf.writeUInt32LE(Math.floor(v / TWO32) >>> 0, off + 4)
}

/** The pages the workload may write: everything but the special pages at the top. */
export function guestPages(pages: number): number {
  return Math.max(0, pages - SPECIAL_PAGES)
}

export function checkWorkload(spec: WorkloadSpec | undefined, pages: number, domid?: number): void {
  if (!spec) return
  const bad = (what: string): never => {
    throw new HypervisorError('bad-request', `workload ${what}`, domid)
  }
  const rate = (v: number, name: string, max: number): void => {
    if (!Number.isFinite(v) || v < 0 || v > max) bad(`${name} ${v} is not in 0..${max}`)
  }
  rate(spec.dirtyRate, 'dirtyRate', 10_000_000)
  rate(spec.packetRate, 'packetRate', 1_000_000)
  rate(spec.diskRate ?? 0, 'diskRate', 10_000)
  rate(spec.workingSetMiB, 'workingSetMiB', (pages * 4096) / (1 << 20))
  if (!Number.isFinite(spec.nondeterminism) || spec.nondeterminism < 0 || spec.nondeterminism > 1) bad(`nondeterminism ${spec.nondeterminism} is not in 0..1`)
  if (!Number.isInteger(spec.seed)) bad(`seed ${spec.seed} is not an integer`)
}

/** The state a freshly built guest starts from. */
export function initialGuestState(spec: WorkloadSpec | undefined, pages: number): GuestState {
  const w: WorkloadSpec = spec ?? {dirtyRate: 0, workingSetMiB: 0, seed: 0, nondeterminism: 0, packetRate: 0}
  const usable = guestPages(pages)
  const wsPages = w.workingSetMiB > 0 ? Math.min(usable, Math.max(1, Math.floor(w.workingSetMiB * 256))) : usable
  const seed = w.seed >>> 0
  const h = mix32(seed ^ 0x7f4a7c15)
  const mac = Buffer.from([0x00, 0x16, 0x3e, (h >>> 16) & 0x7f, (h >>> 8) & 0xff, h & 0xff])
  const stepRate = Math.max(MIN_STEP_RATE, Math.ceil(w.dirtyRate), Math.ceil(w.packetRate))
  const diskRate = w.diskRate ?? 0
  return {
    hasWorkload: true,
    step: 0,
    prng: seedState(seed),
    stepRate,
    dirtyRate: w.dirtyRate,
    packetRate: w.packetRate,
    nondeterminism: w.nondeterminism,
    wsFirst: 0,
    wsPages,
    seed,
    writes: 0,
    frames: 0,
    perturbations: 0,
    mac,
    udpPort: 40000 + (mix32(seed) % 20000),
    ipv4: ((10 << 24) | ((h & 0xffff) << 8) | (2 + (mix32(h) % 250))) >>> 0,
    diskEvery: diskRate > 0 ? Math.max(1, Math.round(stepRate / diskRate)) : 0,
    diskWrites: 0,
    txBytes: 0,
    rxFrames: 0,
  }
}

/** An empty context (a domain built for restore, before the stream's context arrives). */
export function emptyGuestState(): GuestState {
  return {
    hasWorkload: false,
    step: 0,
    prng: [1, 0, 0, 0],
    stepRate: MIN_STEP_RATE,
    dirtyRate: 0,
    packetRate: 0,
    nondeterminism: 0,
    wsFirst: 0,
    wsPages: 0,
    seed: 0,
    writes: 0,
    frames: 0,
    perturbations: 0,
    mac: Buffer.from([0x00, 0x16, 0x3e, 0, 0, 0]),
    udpPort: 40000,
    ipv4: 0x0a000002,
    diskEvery: 0,
    diskWrites: 0,
    txBytes: 0,
    rxFrames: 0,
  }
}

export function encodeContext(g: GuestState, tscKhz: number): Buffer {
  const out = Buffer.alloc(CONTEXT_BYTES)
  let o = 0
  out.writeUInt16LE(HVM_SAVE_CODE_HEADER, o)
  out.writeUInt16LE(0, o + 2)
  out.writeUInt32LE(24, o + 4)
  o += 8
  out.writeUInt32LE(HVM_FILE_MAGIC, o)
  out.writeUInt32LE(HVM_FILE_VERSION, o + 4)
  writeU64(out, o + 8, 0)
  out.writeUInt32LE(SIM_CPUID_SIGNATURE, o + 16)
  out.writeUInt32LE(tscKhz >>> 0, o + 20)
  o += 24
  out.writeUInt16LE(HVM_SAVE_CODE_SIM_GUEST, o)
  out.writeUInt16LE(0, o + 2)
  out.writeUInt32LE(SIM_GUEST_BYTES, o + 4)
  o += 8
  const b = out.subarray(o, o + SIM_GUEST_BYTES)
  b.writeUInt32LE(SIM_GUEST_MAGIC, 0)
  b.writeUInt16LE(SIM_GUEST_VERSION, 4)
  b.writeUInt16LE(g.hasWorkload ? 1 : 0, 6)
  writeU64(b, 8, g.step)
  for (let i = 0; i < 4; i++) b.writeUInt32LE(g.prng[i]! >>> 0, 16 + 4 * i)
  b.writeDoubleLE(g.stepRate, 32)
  b.writeDoubleLE(g.dirtyRate, 40)
  b.writeDoubleLE(g.packetRate, 48)
  b.writeDoubleLE(g.nondeterminism, 56)
  b.writeUInt32LE(g.wsFirst >>> 0, 64)
  b.writeUInt32LE(g.wsPages >>> 0, 68)
  b.writeUInt32LE(g.seed >>> 0, 72)
  writeU64(b, 80, g.writes)
  writeU64(b, 88, g.frames)
  writeU64(b, 96, g.perturbations)
  g.mac.copy(b, 104, 0, 6)
  b.writeUInt16LE(g.udpPort, 110)
  b.writeUInt32LE(g.ipv4 >>> 0, 112)
  b.writeUInt32LE(g.diskEvery >>> 0, 76)
  b.writeUInt32LE(g.diskWrites >>> 0, 116)
  o += SIM_GUEST_BYTES
  out.writeUInt16LE(HVM_SAVE_CODE_SIM_NIC, o)
  out.writeUInt16LE(0, o + 2)
  out.writeUInt32LE(SIM_NIC_BYTES, o + 4)
  o += 8
  writeU64(out, o, g.txBytes)
  writeU64(out, o + 8, g.rxFrames)
  o += SIM_NIC_BYTES
  // END descriptor: already zero.
  return out
}

/** Decodes a context blob; throws bad-request naming what is wrong. `pages` bounds the working set. */
export function decodeContext(blob: Buffer, pages: number, domid?: number): GuestState {
  const bad = (why: string): never => {
    throw new HypervisorError('bad-request', `domain ${domid ?? '?'}: invalid vCPU context: ${why}`, domid)
  }
  let o = 0
  let sawHeader = false
  let guest: Buffer | undefined
  let nic: Buffer | undefined
  for (;;) {
    if (o + 8 > blob.length) bad(`truncated at byte ${o} (no END descriptor)`)
    const code = blob.readUInt16LE(o)
    const len = blob.readUInt32LE(o + 4)
    o += 8
    if (o + len > blob.length) bad(`record of type ${code} runs past the end (${len} bytes at ${o})`)
    const body = blob.subarray(o, o + len)
    o += len
    if (code === HVM_SAVE_CODE_END) break
    if (code === HVM_SAVE_CODE_HEADER) {
      if (len !== 24) bad(`HEADER of ${len} bytes, not 24`)
      if (body.readUInt32LE(0) !== HVM_FILE_MAGIC) bad(`HEADER magic 0x${body.readUInt32LE(0).toString(16)}`)
      if (body.readUInt32LE(4) !== HVM_FILE_VERSION) bad(`HEADER version ${body.readUInt32LE(4)}`)
      sawHeader = true
    } else if (code === HVM_SAVE_CODE_SIM_GUEST) {
      if (!sawHeader) bad('SIM_GUEST before HEADER')
      if (len < SIM_GUEST_BYTES) bad(`SIM_GUEST of ${len} bytes, not ${SIM_GUEST_BYTES}`)
      guest = body
    } else if (code === HVM_SAVE_CODE_SIM_NIC) {
      if (len < SIM_NIC_BYTES) bad(`SIM_NIC of ${len} bytes, not ${SIM_NIC_BYTES}`)
      nic = body
    } else {
      bad(`unknown record type ${code}`)
    }
  }
  if (o !== blob.length) bad(`${blob.length - o} bytes after END`)
  if (!guest) bad('no SIM_GUEST record')
  const b = guest!
  if (b.readUInt32LE(0) !== SIM_GUEST_MAGIC) bad('SIM_GUEST magic')
  if (b.readUInt16LE(4) !== SIM_GUEST_VERSION) bad(`SIM_GUEST version ${b.readUInt16LE(4)}`)
  const g: GuestState = {
    hasWorkload: (b.readUInt16LE(6) & 1) !== 0,
    step: readU64(b, 8),
    prng: [b.readUInt32LE(16), b.readUInt32LE(20), b.readUInt32LE(24), b.readUInt32LE(28)],
    stepRate: b.readDoubleLE(32),
    dirtyRate: b.readDoubleLE(40),
    packetRate: b.readDoubleLE(48),
    nondeterminism: b.readDoubleLE(56),
    wsFirst: b.readUInt32LE(64),
    wsPages: b.readUInt32LE(68),
    seed: b.readUInt32LE(72),
    writes: readU64(b, 80),
    frames: readU64(b, 88),
    perturbations: readU64(b, 96),
    mac: Buffer.from(b.subarray(104, 110)),
    udpPort: b.readUInt16LE(110),
    ipv4: b.readUInt32LE(112),
    diskEvery: b.readUInt32LE(76),
    diskWrites: b.readUInt32LE(116),
    txBytes: nic ? readU64(nic, 0) : 0,
    rxFrames: nic ? readU64(nic, 8) : 0,
  }
  if (g.prng.every((w) => w === 0)) bad('PRNG state is all zero')
  if (!(g.stepRate >= 1 && g.stepRate <= 1e8)) bad(`step rate ${g.stepRate}`)
  for (const [name, v] of [['dirty rate', g.dirtyRate], ['packet rate', g.packetRate]] as const) {
    if (!(v >= 0 && v <= g.stepRate)) bad(`${name} ${v} (step rate ${g.stepRate})`)
  }
  if (!(g.nondeterminism >= 0 && g.nondeterminism <= 1)) bad(`nondeterminism ${g.nondeterminism}`)
  if (g.wsFirst + g.wsPages > guestPages(pages)) bad(`working set ${g.wsFirst}+${g.wsPages} is beyond the ${guestPages(pages)} guest pages`)
  return g
}

/** HVM param indexes: one table for the whole toolstack (Xen's public/hvm/params.h). */
export {HVM_PARAM}

export function defaultHvmParams(pages: number, type: string): HvmParam[] {
  if (type === 'pv') return []
  const top = pages - 1
  const p = (index: number, value: number): HvmParam => ({index, value: BigInt(value)})
  return [
    p(HVM_PARAM.STORE_PFN, top),
    p(HVM_PARAM.STORE_EVTCHN, 1),
    p(HVM_PARAM.PAE_ENABLED, 1),
    p(HVM_PARAM.IOREQ_PFN, top - 2),
    p(HVM_PARAM.BUFIOREQ_PFN, top - 3),
    p(HVM_PARAM.TIMER_MODE, 1),
    p(HVM_PARAM.IDENT_PT, (top - 4) * 4096),
    p(HVM_PARAM.CONSOLE_PFN, top - 1),
    p(HVM_PARAM.CONSOLE_EVTCHN, 2),
    p(HVM_PARAM.X87_FIP_WIDTH, 8),
  ]
}

export function defaultTscInfo(): TscInfo {
  return {mode: 0, khz: SIM_TSC_KHZ, nsec: 0n, incarnation: 0}
}

const NO_SUBLEAF = 0xffffffff

export function defaultCpuPolicy(): CpuPolicy {
  return {
    cpuid: [
      // max basic leaf 0xd, "GenuineIntel"
      {leaf: 0, subleaf: NO_SUBLEAF, a: 0x0000000d, b: 0x756e6547, c: 0x6c65746e, d: 0x49656e69},
      // family 6 model 0x5e, hypervisor bit (c bit 31) set
      {leaf: 1, subleaf: NO_SUBLEAF, a: SIM_CPUID_SIGNATURE, b: 0x00010800, c: 0xf6fa3203, d: 0x178bfbff},
      {leaf: 7, subleaf: 0, a: 0, b: 0x009c4fbb, c: 0, d: 0},
      {leaf: 0x80000000, subleaf: NO_SUBLEAF, a: 0x80000008, b: 0, c: 0, d: 0},
      {leaf: 0x80000001, subleaf: NO_SUBLEAF, a: 0, b: 0, c: 0x00000121, d: 0x2c100800},
      {leaf: 0x80000008, subleaf: NO_SUBLEAF, a: 0x00003027, b: 0, c: 0, d: 0},
    ],
    msrs: [
      {index: 0xce, value: 0n}, // MSR_INTEL_PLATFORM_INFO
      {index: 0x10a, value: 0n}, // MSR_ARCH_CAPABILITIES
    ],
  }
}
