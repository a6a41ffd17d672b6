/**
 * Streams of a synthetic x86 HVM guest, laid out record by record as Xen 4.17's writer lays them
 * out (XEN-FACTS §2.4, §3.6): for golden tests, interop with Xen's verifier, inspect and benches.
 */
import {
  CHECKPOINT_STATE_NAMES,
  DOMAIN_TYPE,
  HVM_PARAM,
  MAX_BATCH_SIZE,
  PAGE_SIZE,
  XEN_CPUID_NO_SUBLEAF,
  encodeDomainHeader,
  encodeImageHeader,
  encodeLibxcRecord,
  encodeLibxlHeader,
  encodeLibxlRecord,
  encodeXlHeader,
  type LibxcRecord,
  type LibxlRecord,
} from '../../src/toolstack/stream/index.js'

export interface SyntheticGuest {
  /** Guest size in pages (p2m size). */
  pages: number
  /** Fill byte pattern seed: page i holds bytes derived from (seed, i, round). */
  seed?: number
  /** Emit an EMULATOR_XENSTORE_DATA record (physmap entries). Xen's Python 3 verifier rejects it. */
  xenstoreData?: boolean
}

export function pageContent(seed: number, pfn: number, round: number): Buffer {
  const b = Buffer.allocUnsafe(PAGE_SIZE)
  let x = (seed * 2654435761 + pfn * 40503 + round * 977) >>> 0
  for (let i = 0; i < PAGE_SIZE; i += 4) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    b.writeUInt32LE(x >>> 0, i)
  }
  return b
}

export function pageRecords(seed: number, pfns: readonly number[], round: number): LibxcRecord[] {
  const out: LibxcRecord[] = []
  for (let i = 0; i < pfns.length; i += MAX_BATCH_SIZE) {
    const batch = pfns.slice(i, i + MAX_BATCH_SIZE)
    out.push({
      kind: 'PAGE_DATA',
      pfns: batch,
      types: batch.map(() => 0),
      pages: batch.map((pfn) => pageContent(seed, pfn, round)),
    })
  }
  return out
}

export const STATIC_RECORDS: LibxcRecord[] = [
  {
    kind: 'X86_CPUID_POLICY',
    leaves: [
      {leaf: 0, subleaf: XEN_CPUID_NO_SUBLEAF, a: 0xd, b: 0x756e6547, c: 0x6c65746e, d: 0x49656e69},
      {leaf: 1, subleaf: XEN_CPUID_NO_SUBLEAF, a: 0x000906ea, b: 0x00010800, c: 0xf7fa3203, d: 0x1f8bfbff},
      {leaf: 7, subleaf: 0, a: 0, b: 0x009c27ab, c: 0, d: 0xbc000400},
    ],
  },
  {kind: 'X86_MSR_POLICY', msrs: [{index: 0xce, flags: 0, value: 0x80000000n}, {index: 0x10a, flags: 0, value: 0n}]},
  {kind: 'STATIC_DATA_END'},
]

export function hvmContext(round: number): Buffer {
  const b = Buffer.alloc(1024)
  b.write(`synthetic hvm context round ${round}`, 0, 'latin1')
  return b
}

export function endOfCheckpoint(round: number): LibxcRecord[] {
  return [
    {kind: 'X86_TSC_INFO', mode: 0, khz: 2_400_000, nsec: 123_456_789n + BigInt(round), incarnation: round},
    {kind: 'HVM_CONTEXT', context: hvmContext(round)},
    {
      kind: 'HVM_PARAMS',
      params: [
        {index: BigInt(HVM_PARAM.STORE_PFN), value: 0xfeffcn},
        {index: BigInt(HVM_PARAM.IOREQ_PFN), value: 0xff000n},
        {index: BigInt(HVM_PARAM.BUFIOREQ_PFN), value: 0xff001n},
        {index: BigInt(HVM_PARAM.CONSOLE_PFN), value: 0xfefffn},
      ],
    },
  ]
}

/** The libxc records of a plain live migration: all pages, one dirty round, CPU state, END. */
export function plainLibxcRecords(g: SyntheticGuest): LibxcRecord[] {
  const seed = g.seed ?? 1
  const all = Array.from({length: g.pages}, (_, i) => i)
  const dirty = all.filter((pfn) => pfn % 7 === 3)
  return [...STATIC_RECORDS, ...pageRecords(seed, all, 0), ...pageRecords(seed, dirty, 1), ...endOfCheckpoint(0), {kind: 'END'}]
}

export function libxcHeaders(): Buffer[] {
  return [encodeImageHeader(), encodeDomainHeader({type: DOMAIN_TYPE.X86_HVM, pageShift: 12, xenMajor: 4, xenMinor: 17})]
}

export function emulatorRecords(g: SyntheticGuest, round: number): LibxlRecord[] {
  const out: LibxlRecord[] = []
  if (g.xenstoreData) {
    out.push({
      kind: 'EMULATOR_XENSTORE_DATA',
      emulator: 2,
      index: 0,
      entries: [
        ['physmap/f0000000/start_addr', 'f0000000'],
        ['physmap/f0000000/size', '800000'],
        ['physmap/f0000000/name', 'vga.vram'],
      ],
    })
  }
  const blob = Buffer.alloc(4000)
  blob.write(`QEVM device state round ${round}`, 0, 'latin1')
  out.push({kind: 'EMULATOR_CONTEXT', emulator: 2, index: 0, blob})
  return out
}

function flat(parts: Buffer[][]): Buffer {
  return Buffer.concat(parts.flat())
}

export function libxcStream(g: SyntheticGuest): Buffer {
  return flat([libxcHeaders(), ...plainLibxcRecords(g).map(encodeLibxcRecord)])
}

export function libxlStream(g: SyntheticGuest): Buffer {
  return flat([
    [encodeLibxlHeader()],
    encodeLibxlRecord({kind: 'LIBXC_CONTEXT'}),
    libxcHeaders(),
    ...plainLibxcRecords(g).map(encodeLibxcRecord),
    ...emulatorRecords(g, 0).map(encodeLibxlRecord),
    encodeLibxlRecord({kind: 'END'}),
  ])
}

export const SYNTHETIC_CONFIG = {
  c_info: {type: 'hvm', name: 'synthetic', uuid: '5e1f0c2a-8c5b-4a55-9e2e-2f0d7d1c3b11'},
  b_info: {max_memkb: 4096, target_memkb: 4096, max_vcpus: 1, type: {hvm: {}}},
}

export function xlFile(g: SyntheticGuest): Buffer {
  return Buffer.concat([encodeXlHeader({config: JSON.stringify(SYNTHETIC_CONFIG, null, 4)}), libxlStream(g)])
}

/**
 * A checkpointed (Remus or COLO) main stream of `checkpoints` checkpoints, ending between
 * checkpoints as it does when the primary goes away: no END record.
 */
export function checkpointedStream(g: SyntheticGuest, mode: 'remus' | 'colo', checkpoints: number): Buffer {
  const seed = g.seed ?? 1
  const all = Array.from({length: g.pages}, (_, i) => i)
  const parts: Buffer[][] = [[encodeLibxlHeader()], encodeLibxlRecord({kind: 'LIBXC_CONTEXT'}), libxcHeaders()]
  for (let round = 0; round < checkpoints; round++) {
    const pfns = round === 0 ? all : all.filter((pfn) => (pfn + round) % 5 === 0)
    const libxc: LibxcRecord[] = [
      ...(round === 0 ? STATIC_RECORDS : []),
      ...pageRecords(seed, pfns, round),
      ...endOfCheckpoint(round),
      {kind: 'CHECKPOINT'},
    ]
    parts.push(...libxc.map(encodeLibxcRecord))
    parts.push(...emulatorRecords(g, round).map(encodeLibxlRecord), encodeLibxlRecord({kind: 'CHECKPOINT_END'}))
    if (mode === 'colo' && round < checkpoints - 1) parts.push(encodeLibxlRecord({kind: 'CHECKPOINT_STATE', state: 'NEW'}))
  }
  return flat(parts)
}

/** The COLO back channel for `checkpoints` checkpoints: READY, RESUMED, then SUSPENDED, dirty list, READY, RESUMED. */
export function backChannelStream(checkpoints: number, dirty: (round: number) => number[]): Buffer {
  const parts: Buffer[][] = []
  for (let round = 0; round < checkpoints; round++) {
    if (round > 0) {
      parts.push(encodeLibxlRecord({kind: 'CHECKPOINT_STATE', state: 'SVM_SUSPENDED'}))
      parts.push(encodeLibxcRecord({kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: dirty(round)}))
    }
    parts.push(encodeLibxlRecord({kind: 'CHECKPOINT_STATE', state: 'SVM_READY'}))
    parts.push(encodeLibxlRecord({kind: 'CHECKPOINT_STATE', state: 'SVM_RESUMED'}))
  }
  return flat(parts)
}

export {CHECKPOINT_STATE_NAMES}
