/**
 * fast-check arbitraries of valid migration streams (HVM and PV, v2 and v3, plain and checkpointed,
 * wrapped in xl + libxl, libxl only, or bare libxc), a model-to-bytes encoder, a re-encoder that
 * turns a reader's events back into bytes, and a canonical form for comparing records.
 */
import fc from 'fast-check'
import {
  DOMAIN_TYPE,
  PAGE_SIZE,
  PAGE_TYPE,
  REC_TYPE_OPTIONAL,
  encodeDomainHeader,
  encodeImageHeader,
  encodeLibxcRecord,
  encodeLibxlHeader,
  encodeLibxlRecord,
  encodeXlHeader,
  pageTypeHasData,
  type CpuidLeaf,
  type HvmParam,
  type LibxcDomainHeader,
  type LibxcRecord,
  type LibxlRecord,
  type MsrEntry,
  type OuterFormat,
  type StreamEvent,
  type StreamType,
} from '../../src/toolstack/stream/index.js'

// ---------------------------------------------------------------------------------------------
// Values

export const arbU32 = fc.nat({max: 0xffffffff})
export const arbU64 = fc.bigInt({min: 0n, max: (1n << 64n) - 1n})
/** Frame numbers: mostly small, some using all 52 bits. */
export const arbPfn = fc.oneof(fc.nat({max: 0xfff}), fc.integer({min: 0, max: 2 ** 52 - 1}))
export const arbPageType = fc.constantFrom(...Object.values(PAGE_TYPE))
export const arbBytes = (maxLength: number, minLength = 0): fc.Arbitrary<Buffer> =>
  fc.uint8Array({minLength, maxLength}).map((a) => Buffer.from(a))

/** A page of arbitrary content: a seeded pattern with an arbitrary patch at an arbitrary place. */
export const arbPage: fc.Arbitrary<Buffer> = fc
  .record({seed: arbU32, at: fc.nat({max: PAGE_SIZE - 1}), patch: arbBytes(32)})
  .map(({seed, at, patch}) => {
    const b = Buffer.allocUnsafe(PAGE_SIZE)
    let x = seed | 1
    for (let i = 0; i < PAGE_SIZE; i += 4) {
      x ^= x << 13
      x ^= x >>> 17
      x ^= x << 5
      b.writeUInt32LE(x >>> 0, i)
    }
    patch.copy(b, at)
    return b
  })

/** Printable, NUL-free strings, as xenstore keys and values are. */
export const arbPrintable = (maxLength = 24): fc.Arbitrary<string> =>
  fc.string({unit: fc.integer({min: 0x20, max: 0x7e}).map((c) => String.fromCharCode(c)), maxLength})

// ---------------------------------------------------------------------------------------------
// Records

export const arbPageData: fc.Arbitrary<LibxcRecord> = fc
  .array(fc.record({pfn: arbPfn, type: arbPageType, page: arbPage}), {minLength: 1, maxLength: 3})
  .map((entries) => ({
    kind: 'PAGE_DATA',
    pfns: entries.map((e) => e.pfn),
    types: entries.map((e) => e.type),
    pages: entries.filter((e) => pageTypeHasData(e.type)).map((e) => e.page),
  }))

export const arbCpuidLeaf: fc.Arbitrary<CpuidLeaf> = fc.record({leaf: arbU32, subleaf: arbU32, a: arbU32, b: arbU32, c: arbU32, d: arbU32})
export const arbCpuid: fc.Arbitrary<LibxcRecord> = fc
  .array(arbCpuidLeaf, {minLength: 1, maxLength: 4})
  .map((leaves) => ({kind: 'X86_CPUID_POLICY', leaves}))

export const arbMsrEntry: fc.Arbitrary<MsrEntry> = fc.record({index: arbU32, flags: fc.constant(0), value: arbU64})
export const arbMsr: fc.Arbitrary<LibxcRecord> = fc
  .array(arbMsrEntry, {minLength: 1, maxLength: 4})
  .map((msrs) => ({kind: 'X86_MSR_POLICY', msrs}))

export const arbHvmParam: fc.Arbitrary<HvmParam> = fc.record({index: arbU64, value: arbU64})
/** Zero params is legal: 4.6-4.8 wrote empty HVM_PARAMS records. */
export const arbHvmParams: fc.Arbitrary<LibxcRecord> = fc
  .array(arbHvmParam, {maxLength: 5})
  .map((params) => ({kind: 'HVM_PARAMS', params}))

export const arbTscInfo: fc.Arbitrary<LibxcRecord> = fc
  .record({mode: arbU32, khz: arbU32, nsec: arbU64, incarnation: arbU32})
  .map((t) => ({kind: 'X86_TSC_INFO', ...t}))

export const arbHvmContext: fc.Arbitrary<LibxcRecord> = arbBytes(64, 1).map((context) => ({kind: 'HVM_CONTEXT', context}))
export const arbSharedInfo: fc.Arbitrary<LibxcRecord> = arbPage.map((page) => ({kind: 'SHARED_INFO', page}))
export const arbPvInfo: fc.Arbitrary<LibxcRecord> = fc
  .record({guestWidth: fc.constantFrom(4, 8), ptLevels: fc.constantFrom(3, 4)})
  .map((r) => ({kind: 'X86_PV_INFO', ...r}))
export const arbP2mFrames: fc.Arbitrary<LibxcRecord> = fc
  .record({a: arbU32, b: arbU32, frames: fc.array(arbU64, {maxLength: 4})})
  .map(({a, b, frames}) => ({kind: 'X86_PV_P2M_FRAMES', startPfn: Math.min(a, b), endPfn: Math.max(a, b), frames}))

/** One vCPU's four PV records, with arbitrary (possibly empty) contexts. */
export const arbPvVcpu = (vcpuId: number): fc.Arbitrary<LibxcRecord[]> =>
  fc.tuple(arbBytes(40), arbBytes(40), arbBytes(40), arbBytes(40)).map(([b, e, x, m]) => [
    {kind: 'X86_PV_VCPU_BASIC', vcpuId, context: b},
    {kind: 'X86_PV_VCPU_EXTENDED', vcpuId, context: e},
    {kind: 'X86_PV_VCPU_XSAVE', vcpuId, context: x},
    {kind: 'X86_PV_VCPU_MSRS', vcpuId, context: m},
  ])

/** An unknown record with the optional bit set. */
export const arbOptional: fc.Arbitrary<LibxcRecord> = fc
  .record({low: fc.integer({min: 0x13, max: 0x7fffffff}), body: arbBytes(20)})
  .map(({low, body}) => ({kind: 'OPTIONAL', type: (REC_TYPE_OPTIONAL | low) >>> 0, body}))

export const arbDirtyPfnList: fc.Arbitrary<LibxcRecord> = fc
  .array(arbPfn, {maxLength: 6})
  .map((pfns) => ({kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns}))

export const arbEmulator = fc.constantFrom(0, 1, 2)
export const arbXenstoreData: fc.Arbitrary<LibxlRecord> = fc
  .record({emulator: arbEmulator, index: arbU32, entries: fc.array(fc.tuple(arbPrintable(), arbPrintable()), {maxLength: 4})})
  .map((r) => ({kind: 'EMULATOR_XENSTORE_DATA', ...r}))
export const arbEmulatorContext: fc.Arbitrary<LibxlRecord> = fc
  .record({emulator: arbEmulator, index: arbU32, blob: arbBytes(48)})
  .map((r) => ({kind: 'EMULATOR_CONTEXT', ...r}))

/** Every libxc record type a forward stream may carry (TOOLSTACK excluded), alone. */
export const arbAnyLibxcRecord: fc.Arbitrary<LibxcRecord> = fc.oneof(
  fc.constantFrom<LibxcRecord>({kind: 'END'}, {kind: 'VERIFY'}, {kind: 'CHECKPOINT'}, {kind: 'STATIC_DATA_END'}),
  arbPageData,
  arbPvInfo,
  arbP2mFrames,
  arbPvVcpu(0).chain((rs) => fc.constantFrom(...rs)),
  arbSharedInfo,
  arbTscInfo,
  arbHvmContext,
  arbHvmParams,
  arbDirtyPfnList,
  arbCpuid,
  arbMsr,
  arbOptional,
)

// ---------------------------------------------------------------------------------------------
// Streams

export type Item = {layer: 'libxl'; record: LibxlRecord} | {layer: 'libxc'; record: LibxcRecord}

export interface StreamModel {
  outer: OuterFormat
  mode: 'plain' | 'remus' | 'colo'
  /** The stream type the reader is told: the real one, or `unknown`. */
  readAs: StreamType
  version: 2 | 3
  domain: LibxcDomainHeader
  /** xl only: the embedded config, if any. */
  config?: string
  /** The records in stream order (libxc headers follow LIBXC_CONTEXT, or lead a bare libxc stream). */
  items: Item[]
}

const arbRound = fc.record({
  pages: fc.array(arbPageData, {maxLength: 2}),
  tsc: arbTscInfo,
  hvmContext: arbHvmContext,
  hvmParams: fc.option(arbHvmParams, {nil: undefined}),
  sharedInfo: arbSharedInfo,
  vcpus: fc.integer({min: 1, max: 2}).chain((n) => fc.tuple(...Array.from({length: n}, (_, i) => arbPvVcpu(i)))),
  optional: fc.option(fc.tuple(fc.nat(), arbOptional), {nil: undefined}),
  xenstore: fc.option(arbXenstoreData, {nil: undefined}),
  emulator: arbEmulatorContext,
})

export const arbStreamModel: fc.Arbitrary<StreamModel> = fc
  .record({
    outer: fc.constantFrom<OuterFormat>('xl', 'libxl', 'libxc'),
    hvm: fc.boolean(),
    mode: fc.constantFrom<StreamModel['mode']>('plain', 'remus', 'colo'),
    version: fc.constantFrom<2 | 3>(2, 3),
    readUnknown: fc.boolean(),
    config: fc.option(arbPrintable(60), {nil: undefined}),
    cpuid: fc.option(arbCpuid, {nil: undefined}),
    msr: fc.option(arbMsr, {nil: undefined}),
    pvInfo: arbPvInfo,
    p2m: arbP2mFrames,
    rounds: fc.array(arbRound, {minLength: 1, maxLength: 3}),
    verify: fc.option(fc.array(arbPageData, {maxLength: 2}), {nil: undefined}),
    endWithState: fc.boolean(),
    xenMinor: fc.constantFrom(17, 18, 19),
  })
  .map((r): StreamModel => {
    // COLO is for HVM guests; a PV guest's checkpointed stream is a Remus one.
    const mode = !r.hvm && r.mode === 'colo' ? 'remus' : r.mode
    const rounds = mode === 'plain' ? r.rounds.slice(0, 1) : r.rounds
    const items: Item[] = []
    const libxl = (...recs: LibxlRecord[]): void => {
      if (r.outer !== 'libxc') for (const record of recs) items.push({layer: 'libxl', record})
    }
    const libxc = (...recs: LibxcRecord[]): void => {
      for (const record of recs) items.push({layer: 'libxc', record})
    }
    libxl({kind: 'LIBXC_CONTEXT'})
    rounds.forEach((round, i) => {
      const recs: LibxcRecord[] = []
      if (i === 0) {
        if (!r.hvm) recs.push(r.pvInfo)
        if (r.version === 3) {
          if (r.cpuid) recs.push(r.cpuid)
          if (r.msr) recs.push(r.msr)
          recs.push({kind: 'STATIC_DATA_END'})
        }
        if (!r.hvm) recs.push(r.p2m)
      }
      recs.push(...round.pages)
      if (mode === 'plain' && r.verify) recs.push({kind: 'VERIFY'}, ...r.verify)
      recs.push(round.tsc)
      if (r.hvm) {
        recs.push(round.hvmContext)
        if (round.hvmParams) recs.push(round.hvmParams)
      } else {
        recs.push(round.sharedInfo, ...round.vcpus.flat())
      }
      if (round.optional) recs.splice(round.optional[0] % (recs.length + 1), 0, round.optional[1])
      recs.push(mode === 'plain' ? {kind: 'END'} : {kind: 'CHECKPOINT'})
      libxc(...recs)
      if (r.hvm) {
        if (round.xenstore) libxl(round.xenstore)
        libxl(round.emulator)
      }
      if (mode === 'plain') libxl({kind: 'END'})
      else {
        libxl({kind: 'CHECKPOINT_END'})
        if (mode === 'colo' && (i < rounds.length - 1 || r.endWithState)) libxl({kind: 'CHECKPOINT_STATE', state: 'NEW'})
      }
    })
    return {
      outer: r.outer,
      mode,
      readAs: r.readUnknown ? 'unknown' : mode,
      version: r.version,
      domain: {type: r.hvm ? DOMAIN_TYPE.X86_HVM : DOMAIN_TYPE.X86_PV, pageShift: 12, xenMajor: 4, xenMinor: r.xenMinor},
      ...(r.outer === 'xl' && r.config !== undefined ? {config: r.config} : {}),
      items,
    }
  })

function libxcHeaderBytes(m: {version: number; domain: LibxcDomainHeader}): Buffer[] {
  return [encodeImageHeader({version: m.version}), encodeDomainHeader(m.domain)]
}

/** The bytes of a model stream, as the writers lay them out. */
export function encodeModel(m: StreamModel): Buffer {
  const out: Buffer[] = []
  if (m.outer === 'xl') out.push(encodeXlHeader(m.config === undefined ? {} : {config: m.config}))
  if (m.outer !== 'libxc') out.push(encodeLibxlHeader())
  else out.push(...libxcHeaderBytes(m))
  for (const item of m.items) {
    if (item.layer === 'libxl') {
      out.push(...encodeLibxlRecord(item.record))
      if (item.record.kind === 'LIBXC_CONTEXT') out.push(...libxcHeaderBytes(m))
    } else {
      out.push(...encodeLibxcRecord(item.record))
    }
  }
  return Buffer.concat(out)
}

/** Turns a reader's events back into bytes with the encoders. */
export function reencode(events: readonly StreamEvent[]): Buffer {
  const out: Buffer[] = []
  for (const ev of events) {
    switch (ev.layer) {
      case 'xl':
        out.push(
          encodeXlHeader({
            mandatoryFlags: ev.header.mandatoryFlags,
            optionalFlags: ev.header.optionalFlags,
            ...(ev.header.config === undefined ? {} : {config: ev.header.config}),
          }),
        )
        break
      case 'libxl-header':
        out.push(encodeLibxlHeader(ev.header))
        break
      case 'libxc-header':
        out.push(encodeImageHeader(ev.image), encodeDomainHeader(ev.domain))
        break
      case 'libxl':
        out.push(...encodeLibxlRecord(ev.record))
        break
      case 'libxc':
        out.push(...encodeLibxcRecord(ev.record))
        break
      case 'eof':
        break
    }
  }
  return Buffer.concat(out)
}

/** The records of a reader's events, in order. */
export function itemsOf(events: readonly StreamEvent[]): Item[] {
  const out: Item[] = []
  for (const ev of events) {
    if (ev.layer === 'libxl') out.push({layer: 'libxl', record: ev.record})
    if (ev.layer === 'libxc') out.push({layer: 'libxc', record: ev.record})
  }
  return out
}

/**
 * A comparable form of records: Buffers become hex strings and PAGE_DATA's page buffers are joined
 * (a writer may split them anywhere, a reader returns them whole).
 */
export function canonical(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return `hex:${value.toString('hex')}`
  if (Array.isArray(value)) return value.map(canonical)
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>
    if (o['kind'] === 'PAGE_DATA' && Array.isArray(o['pages'])) {
      return canonical({...o, pages: Buffer.concat(o['pages'] as Buffer[])})
    }
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, canonical(v)]))
  }
  return value
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}
