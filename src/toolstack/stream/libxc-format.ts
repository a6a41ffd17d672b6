/**
 * Constants of the libxc (libxenguest) migration stream, revision 3 (XEN-FACTS §3).
 * Image header big-endian; domain header, record headers and bodies little-endian.
 */

export const IMAGE_HEADER_SIZE = 24
export const DOMAIN_HEADER_SIZE = 16
export const IHDR_MARKER = 0xffffffffffffffffn
export const IHDR_ID = 0x58454e46 // "XENF"
export const IHDR_VERSION = 3
export const IHDR_OPT_BIG_ENDIAN = 0x0001
export const IHDR_OPT_RESERVED_MASK = 0xfffe

export const DOMAIN_TYPE = {X86_PV: 1, X86_HVM: 2} as const
export type DomainType = (typeof DOMAIN_TYPE)[keyof typeof DOMAIN_TYPE]
export const PAGE_SHIFT = 12
export const PAGE_SIZE = 4096

/** Record types, by the names Xen gives them (REC_TYPE_*). */
export const LIBXC = {
  END: 0x00,
  PAGE_DATA: 0x01,
  X86_PV_INFO: 0x02,
  X86_PV_P2M_FRAMES: 0x03,
  X86_PV_VCPU_BASIC: 0x04,
  X86_PV_VCPU_EXTENDED: 0x05,
  X86_PV_VCPU_XSAVE: 0x06,
  SHARED_INFO: 0x07,
  X86_TSC_INFO: 0x08,
  HVM_CONTEXT: 0x09,
  HVM_PARAMS: 0x0a,
  TOOLSTACK: 0x0b,
  X86_PV_VCPU_MSRS: 0x0c,
  VERIFY: 0x0d,
  CHECKPOINT: 0x0e,
  CHECKPOINT_DIRTY_PFN_LIST: 0x0f,
  STATIC_DATA_END: 0x10,
  X86_CPUID_POLICY: 0x11,
  X86_MSR_POLICY: 0x12,
} as const
export type LibxcTypeName = keyof typeof LIBXC

const NAMES = new Map<number, LibxcTypeName>(
  Object.entries(LIBXC).map(([name, type]) => [type, name as LibxcTypeName]),
)

export function libxcTypeName(type: number): string {
  return NAMES.get(type) ?? `0x${type.toString(16).padStart(8, '0')}`
}

export function isKnownLibxcType(type: number): type is (typeof LIBXC)[LibxcTypeName] {
  return NAMES.has(type)
}

/** The four vCPU records share a body: `u32 vcpu_id; u32 _res1; context[]`. */
export const PV_VCPU_TYPES = [
  LIBXC.X86_PV_VCPU_BASIC,
  LIBXC.X86_PV_VCPU_EXTENDED,
  LIBXC.X86_PV_VCPU_XSAVE,
  LIBXC.X86_PV_VCPU_MSRS,
] as const

/** Records only a PV guest's stream may carry. */
export const PV_ONLY_TYPES: ReadonlySet<number> = new Set([
  LIBXC.X86_PV_INFO,
  LIBXC.X86_PV_P2M_FRAMES,
  ...PV_VCPU_TYPES,
  LIBXC.SHARED_INFO,
])

/** Records only an HVM guest's stream may carry. */
export const HVM_ONLY_TYPES: ReadonlySet<number> = new Set([LIBXC.HVM_CONTEXT, LIBXC.HVM_PARAMS])

/** PAGE_DATA pfn word: bits 63-60 type, 59-52 reserved, 51-0 pfn. */
export const PFN_BITS = 52
export const PFN_LIMIT = 2 ** PFN_BITS
/** MAX_BATCH_SIZE: pages in one PAGE_DATA record as libxc writes them. */
export const MAX_BATCH_SIZE = 1024

/** XEN_DOMCTL_PFINFO_* values as they appear in bits 63-60 of a pfn word. */
export const PAGE_TYPE = {
  NOTAB: 0x0,
  L1TAB: 0x1,
  L2TAB: 0x2,
  L3TAB: 0x3,
  L4TAB: 0x4,
  L1TAB_PINNED: 0x9,
  L2TAB_PINNED: 0xa,
  L3TAB_PINNED: 0xb,
  L4TAB_PINNED: 0xc,
  BROKEN: 0xd,
  XALLOC: 0xe,
  XTAB: 0xf,
} as const

/** Types 5-8 are not defined. */
export function isKnownPageType(type: number): boolean {
  return type >= 0 && type <= 0xf && !(type >= 5 && type <= 8)
}

/** BROKEN, XALLOC and XTAB pages carry no data in the stream; every other type carries 4096 bytes. */
export function pageTypeHasData(type: number): boolean {
  return type < PAGE_TYPE.BROKEN
}

/** HVM_PARAM indexes (Xen's public/hvm/params.h): those libxc writes (xg_sr_save_x86_hvm.c) and a few more. */
export const HVM_PARAM = {
  STORE_PFN: 1,
  STORE_EVTCHN: 2,
  PAE_ENABLED: 4,
  IOREQ_PFN: 5,
  BUFIOREQ_PFN: 6,
  VIRIDIAN: 9,
  TIMER_MODE: 10,
  IDENT_PT: 12,
  CONSOLE_PFN: 17,
  CONSOLE_EVTCHN: 18,
  ACPI_IOPORTS_LOCATION: 19,
  NESTEDHVM: 24,
  PAGING_RING_PFN: 27,
  MONITOR_RING_PFN: 28,
  SHARING_RING_PFN: 29,
  IOREQ_SERVER_PFN: 32,
  NR_IOREQ_SERVER_PAGES: 33,
  VM_GENERATION_ID_ADDR: 34,
  X87_FIP_WIDTH: 36,
  VM86_TSS_SIZED: 37,
  MCA_CAP: 38,
} as const

export const XEN_CPUID_NO_SUBLEAF = 0xffffffff
export const CPUID_LEAF_SIZE = 24
export const MSR_ENTRY_SIZE = 16
export const TSC_INFO_SIZE = 24
export const HVM_PARAM_ENTRY_SIZE = 16
