/** The libxl migration stream v2 (XEN-FACTS §2): header, record types, emulator and checkpoint ids. */
import type {ByteSource} from './byte-source.js'
import {fail, hex, type ErrorSite} from './errors.js'

export const LIBXL_HEADER_SIZE = 16
export const LIBXL_IDENT = 0x4c6962786c466d74n // "LibxlFmt"
export const LIBXL_VERSION = 2
export const LIBXL_OPT_BIG_ENDIAN = 0x1
export const LIBXL_OPT_LEGACY = 0x2
export const LIBXL_OPT_RESERVED_MASK = 0xfffffffc

export const LIBXL = {
  END: 0,
  LIBXC_CONTEXT: 1,
  EMULATOR_XENSTORE_DATA: 2,
  EMULATOR_CONTEXT: 3,
  CHECKPOINT_END: 4,
  CHECKPOINT_STATE: 5,
} as const
export type LibxlTypeName = keyof typeof LIBXL

const NAMES = new Map<number, LibxlTypeName>(Object.entries(LIBXL).map(([n, t]) => [t, n as LibxlTypeName]))

export function libxlTypeName(type: number): string {
  return NAMES.get(type) ?? `0x${type.toString(16).padStart(8, '0')}`
}

export function isKnownLibxlType(type: number): boolean {
  return NAMES.has(type)
}

export const EMULATOR = {UNKNOWN: 0, QEMU_TRADITIONAL: 1, QEMU_UPSTREAM: 2} as const
export const EMULATOR_NAMES: Record<number, string> = {0: 'unknown', 1: 'qemu-traditional', 2: 'qemu-upstream'}

/** CHECKPOINT_STATE control ids (COLO). */
export const CHECKPOINT_STATE = {NEW: 0, SVM_SUSPENDED: 1, SVM_READY: 2, SVM_RESUMED: 3} as const
export type CheckpointStateName = keyof typeof CHECKPOINT_STATE
export const CHECKPOINT_STATE_NAMES: readonly CheckpointStateName[] = ['NEW', 'SVM_SUSPENDED', 'SVM_READY', 'SVM_RESUMED']

export interface LibxlHeader {
  /** Set by Xen's legacy converter. */
  legacy: boolean
}

export function encodeLibxlHeader(h: LibxlHeader = {legacy: false}): Buffer {
  const b = Buffer.alloc(LIBXL_HEADER_SIZE)
  b.writeBigUInt64BE(LIBXL_IDENT, 0)
  b.writeUInt32BE(LIBXL_VERSION, 8)
  b.writeUInt32BE(h.legacy ? LIBXL_OPT_LEGACY : 0, 12)
  return b
}

export function decodeLibxlHeader(b: Buffer, offset = 0): LibxlHeader {
  const site: ErrorSite = {format: 'libxl', offset, part: 'header'}
  const ident = b.readBigUInt64BE(0)
  if (ident !== LIBXL_IDENT) fail(site, 'bad-magic', `ident ${hex(ident, 16)}, expected ${hex(LIBXL_IDENT, 16)} ("LibxlFmt")`)
  const version = b.readUInt32BE(8)
  if (version !== LIBXL_VERSION) fail(site, 'bad-version', `version ${version}, expected ${LIBXL_VERSION}`)
  const options = b.readUInt32BE(12)
  if ((options & LIBXL_OPT_RESERVED_MASK) >>> 0) fail(site, 'reserved', `reserved option bits set: ${hex((options & LIBXL_OPT_RESERVED_MASK) >>> 0, 8)}`)
  if (options & LIBXL_OPT_BIG_ENDIAN) fail(site, 'bad-options', 'big-endian streams are not supported')
  return {legacy: (options & LIBXL_OPT_LEGACY) !== 0}
}

export async function readLibxlHeader(source: ByteSource): Promise<LibxlHeader> {
  const offset = source.offset
  const b = await source.read(LIBXL_HEADER_SIZE)
  if (b.length < LIBXL_HEADER_SIZE) {
    fail({format: 'libxl', offset, part: 'header'}, 'truncated', `stream ends after ${b.length} of ${LIBXL_HEADER_SIZE} bytes`)
  }
  return decodeLibxlHeader(b, offset)
}
