/** Typed libxl records, their encoders, and the per-record rules their decoder applies. */
import {fail, hex, type ErrorSite} from './errors.js'
import {frameRecord, type RawRecord} from './framing.js'
import {CHECKPOINT_STATE_NAMES, EMULATOR_NAMES, LIBXL, libxlTypeName, type CheckpointStateName} from './libxl-format.js'

export type LibxlRecord =
  | {kind: 'END'}
  | {kind: 'LIBXC_CONTEXT'}
  | {kind: 'EMULATOR_XENSTORE_DATA'; emulator: number; index: number; entries: [key: string, value: string][]}
  | {kind: 'EMULATOR_CONTEXT'; emulator: number; index: number; blob: Buffer}
  | {kind: 'CHECKPOINT_END'}
  | {kind: 'CHECKPOINT_STATE'; state: CheckpointStateName}

export type LibxlKind = LibxlRecord['kind']

function emulatorHeader(emulator: number, index: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt32LE(emulator, 0)
  b.writeUInt32LE(index, 4)
  return b
}

/** Keys and values are xenstore paths and values: bytes, kept byte-exact as latin1. */
function encodeXenstorePairs(entries: readonly (readonly [string, string])[]): Buffer {
  if (entries.length === 0) return Buffer.alloc(0)
  const parts: Buffer[] = []
  for (const [k, v] of entries) {
    for (const s of [k, v]) {
      if (s.includes('\0')) throw new RangeError('xenstore keys and values cannot contain NUL')
      parts.push(Buffer.from(s, 'latin1'), Buffer.alloc(1))
    }
  }
  return Buffer.concat(parts)
}

export function encodeLibxlRecord(rec: LibxlRecord): Buffer[] {
  switch (rec.kind) {
    case 'END':
    case 'LIBXC_CONTEXT':
    case 'CHECKPOINT_END':
      return frameRecord(LIBXL[rec.kind], [])
    case 'EMULATOR_XENSTORE_DATA':
      return frameRecord(LIBXL.EMULATOR_XENSTORE_DATA, [emulatorHeader(rec.emulator, rec.index), encodeXenstorePairs(rec.entries)])
    case 'EMULATOR_CONTEXT':
      return frameRecord(LIBXL.EMULATOR_CONTEXT, [emulatorHeader(rec.emulator, rec.index), rec.blob])
    case 'CHECKPOINT_STATE': {
      const b = Buffer.alloc(4)
      b.writeUInt32LE(CHECKPOINT_STATE_NAMES.indexOf(rec.state), 0)
      return frameRecord(LIBXL.CHECKPOINT_STATE, [b])
    }
  }
}

export function libxlSite(raw: RawRecord): ErrorSite {
  return {format: 'libxl', offset: raw.offset, record: {type: raw.type, name: libxlTypeName(raw.type), index: raw.index}}
}

function emptyBody(site: ErrorSite, body: Buffer): void {
  if (body.length !== 0) fail(site, 'bad-length', `length ${body.length}, must be 0`)
}

function emulatorOf(site: ErrorSite, body: Buffer): {emulator: number; index: number} {
  if (body.length < 8) fail(site, 'bad-length', `length ${body.length}, must be at least 8 (emulator header)`)
  const emulator = body.readUInt32LE(0)
  if (!(emulator in EMULATOR_NAMES)) fail(site, 'bad-value', `unknown emulator id ${hex(emulator)}`)
  return {emulator, index: body.readUInt32LE(4)}
}

function decodeXenstorePairs(site: ErrorSite, data: Buffer): [string, string][] {
  if (data.length === 0) return []
  if (data[data.length - 1] !== 0) fail(site, 'bad-value', 'xenstore data is not NUL terminated')
  const strings = data.subarray(0, data.length - 1).toString('latin1').split('\0')
  if (strings.length % 2 !== 0) fail(site, 'bad-value', `xenstore data holds ${strings.length} strings, expected key/value pairs`)
  const entries: [string, string][] = []
  for (let i = 0; i < strings.length; i += 2) entries.push([strings[i]!, strings[i + 1]!])
  return entries
}

/** Checks a framed libxl record against its type's rules and decodes it. */
export function decodeLibxlRecord(raw: RawRecord): LibxlRecord {
  const site = libxlSite(raw)
  const {body} = raw
  switch (raw.type) {
    case LIBXL.END:
      emptyBody(site, body)
      return {kind: 'END'}
    case LIBXL.LIBXC_CONTEXT:
      emptyBody(site, body)
      return {kind: 'LIBXC_CONTEXT'}
    case LIBXL.CHECKPOINT_END:
      emptyBody(site, body)
      return {kind: 'CHECKPOINT_END'}
    case LIBXL.EMULATOR_XENSTORE_DATA: {
      const {emulator, index} = emulatorOf(site, body)
      return {kind: 'EMULATOR_XENSTORE_DATA', emulator, index, entries: decodeXenstorePairs(site, body.subarray(8))}
    }
    case LIBXL.EMULATOR_CONTEXT: {
      const {emulator, index} = emulatorOf(site, body)
      return {kind: 'EMULATOR_CONTEXT', emulator, index, blob: body.subarray(8)}
    }
    case LIBXL.CHECKPOINT_STATE: {
      if (body.length !== 4) fail(site, 'bad-length', `length ${body.length}, must be 4`)
      const id = body.readUInt32LE(0)
      const state = CHECKPOINT_STATE_NAMES[id]
      if (state === undefined) fail(site, 'bad-value', `unknown checkpoint state id ${id}`)
      return {kind: 'CHECKPOINT_STATE', state}
    }
    default:
      // libxl's reader knows no optional records: anything unknown is fatal.
      return fail(site, 'unknown-record', `record type ${hex(raw.type, 8)} is not defined by libxl stream v2`)
  }
}
