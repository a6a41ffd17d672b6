/**
 * How `stream inspect` shows a stream: one row per header and record (offset, layer, index, name,
 * length and a short detail), consecutive PAGE_DATA rows squashed into one as verify-stream-v2
 * does, NDJSON objects for scripts, and the summary. Pure: lines go to a writer it is given.
 */
import {
  CHECKPOINT_STATE,
  EMULATOR_NAMES,
  HVM_PARAM,
  LIBXC,
  LIBXL,
  PAGE_TYPE,
  XL_FLAG_JSON,
  XL_FLAG_STREAMV2,
  XL_HEADER_SIZE,
  IMAGE_HEADER_SIZE,
  DOMAIN_HEADER_SIZE,
  LIBXL_HEADER_SIZE,
  StreamError,
  domainTypeName,
  hex,
  libxcTypeName,
  pageTypeHasData,
  type LibxcRecord,
  type LibxlRecord,
  type XlHeader,
} from '../toolstack/stream/index.js'
import {UnknownFormatError, type InspectEvent, type InspectFormat, type InspectSummary} from './stream-inspect.js'

export type JsonValue = string | number | boolean | null | JsonValue[] | {[key: string]: JsonValue}
export type JsonObject = {[key: string]: JsonValue}

export type RowLayer = 'xl' | 'libxl' | 'libxc' | 'back'

/** Pages of one or more PAGE_DATA records: what a squashed line reports. */
export interface PageSpan {
  pfns: number
  withData: number
  first: number
  last: number
  /** Counts of pages whose type is not NOTAB, by type name. */
  types: Record<string, number>
}

export interface Row {
  event: 'header' | 'record' | 'eof'
  layer: RowLayer
  offset: number
  /** Position among the records of its layer; absent for headers. */
  index?: number
  /** The record type's name, or the header's part. */
  name: string
  /** Numeric record type as on the wire. */
  type?: number
  /** Bytes: the body length of a record (as in its header, no padding), the size of a header. */
  length: number
  detail: string
  /** Details for --json, already JSON-safe. */
  fields: JsonObject
  pages?: PageSpan
}

const PAGE_TYPE_NAMES = new Map<number, string>(Object.entries(PAGE_TYPE).map(([n, v]) => [v, n]))
const HVM_PARAM_NAMES = new Map<number, string>(Object.entries(HVM_PARAM).map(([n, v]) => [v, n]))

function pageTypeName(type: number): string {
  return PAGE_TYPE_NAMES.get(type) ?? hex(type)
}

function hvmParamName(index: bigint): string {
  return (index <= 0xffffn ? HVM_PARAM_NAMES.get(Number(index)) : undefined) ?? `param ${index}`
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}

/** Quotes a string from the stream for a terminal: no control characters get through. */
function quote(s: string, max = 64): string {
  const cut = s.length > max ? `${s.slice(0, max)}...` : s
  return JSON.stringify(cut)
}

function pfnRange(first: number, last: number): string {
  return first === last ? `pfn ${hex(first)}` : `pfns ${hex(first)}-${hex(last)}`
}

export function pageSpanDetail(p: PageSpan): string {
  const parts = [plural(p.pfns, 'pfn'), `${plural(p.withData, 'page')} of data`, pfnRange(p.first, p.last)]
  const types = Object.entries(p.types)
  if (types.length) parts.push(`types ${types.map(([t, n]) => `${t} ${n}`).join(', ')}`)
  return parts.join(', ')
}

function pageSpanOf(pfns: readonly number[], types: readonly number[]): PageSpan {
  let first = Infinity
  let last = -Infinity
  let withData = 0
  const named: Record<string, number> = {}
  for (let i = 0; i < pfns.length; i++) {
    const pfn = pfns[i]!
    const t = types[i]!
    if (pfn < first) first = pfn
    if (pfn > last) last = pfn
    if (pageTypeHasData(t)) withData++
    if (t !== PAGE_TYPE.NOTAB) {
      const name = pageTypeName(t)
      named[name] = (named[name] ?? 0) + 1
    }
  }
  return {pfns: pfns.length, withData, first, last, types: named}
}

export function mergePageSpans(a: PageSpan, b: PageSpan): PageSpan {
  const types = {...a.types}
  for (const [t, n] of Object.entries(b.types)) types[t] = (types[t] ?? 0) + n
  return {
    pfns: a.pfns + b.pfns,
    withData: a.withData + b.withData,
    first: Math.min(a.first, b.first),
    last: Math.max(a.last, b.last),
    types,
  }
}

function pageSpanFields(p: PageSpan): JsonObject {
  return {pfns: p.pfns, pagesWithData: p.withData, pfnFirst: hex(p.first), pfnLast: hex(p.last), pageTypes: p.types}
}

function u64(v: bigint): string {
  return hex(v)
}

function emulatorName(id: number): string {
  return EMULATOR_NAMES[id] ?? hex(id)
}

const XL_FLAG_NAMES: [number, string][] = [
  [XL_FLAG_JSON, 'JSON'],
  [XL_FLAG_STREAMV2, 'STREAMv2'],
]

/** The domain name in a saved config: `c_info.name` of the JSON, or `name = "..."` of xl.cfg text. */
export function configDomainName(header: XlHeader): string | undefined {
  const config = header.config
  if (config === undefined) return undefined
  if (header.mandatoryFlags & XL_FLAG_JSON) {
    try {
      const name = (JSON.parse(config) as {c_info?: {name?: unknown}} | null)?.c_info?.name
      return typeof name === 'string' ? name : undefined
    } catch {
      return undefined
    }
  }
  return /^\s*name\s*=\s*["']([^"'\n]*)["']/m.exec(config)?.[1]
}

function xlRow(header: XlHeader, offset: number, length: number): Row {
  const flags = XL_FLAG_NAMES.filter(([bit]) => header.mandatoryFlags & bit).map(([, n]) => n)
  const parts = [`flags ${hex(header.mandatoryFlags)}${flags.length ? ` (${flags.join(', ')})` : ''}`]
  if (header.optionalFlags) parts.push(`optional flags ${hex(header.optionalFlags)}`)
  const fields: JsonObject = {
    mandatoryFlags: header.mandatoryFlags,
    flags,
    optionalFlags: header.optionalFlags,
    optionalDataLength: length - XL_HEADER_SIZE,
  }
  if (header.config === undefined) {
    parts.push('no config')
  } else {
    const json = (header.mandatoryFlags & XL_FLAG_JSON) !== 0
    const bytes = Buffer.byteLength(header.config, 'utf8')
    const name = configDomainName(header)
    parts.push(`config ${bytes} bytes ${json ? 'JSON' : 'xl.cfg'}`)
    parts.push(name === undefined ? `domain name not found in the config` : `domain ${quote(name)}`)
    fields.configLength = bytes
    fields.configFormat = json ? 'json' : 'xl.cfg'
    fields.domain = name ?? null
  }
  return {event: 'header', layer: 'xl', offset, name: 'savefile header', length, detail: parts.join(', '), fields}
}

/** Turns events into rows; numbers checkpoints as they go by. */
export class RowMaker {
  #libxlCheckpoints = 0
  #libxcCheckpoints = 0
  #format?: InspectFormat

  rows(ev: InspectEvent): Row[] {
    switch (ev.layer) {
      case 'format':
        this.#format = ev.format
        return []
      case 'xl':
        return [xlRow(ev.header, ev.offset, ev.length)]
      case 'libxl-header':
        return [
          {
            event: 'header',
            layer: 'libxl',
            offset: ev.offset,
            name: 'header',
            length: LIBXL_HEADER_SIZE,
            detail: `version 2${ev.header.legacy ? ', converted from a legacy stream' : ''}`,
            fields: {version: 2, legacy: ev.header.legacy},
          },
        ]
      case 'libxc-header': {
        const {image, domain} = ev
        const legacy = domain.xenMajor === 0
        const xen = `${domain.xenMajor}.${domain.xenMinor}`
        return [
          {
            event: 'header',
            layer: 'libxc',
            offset: ev.offset,
            name: 'image header',
            length: IMAGE_HEADER_SIZE,
            detail: `version ${image.version}`,
            fields: {version: image.version},
          },
          {
            event: 'header',
            layer: 'libxc',
            offset: ev.offset + IMAGE_HEADER_SIZE,
            name: 'domain header',
            length: DOMAIN_HEADER_SIZE,
            detail: `${domainTypeName(domain.type)}, ${legacy ? `converted from a legacy stream (converter ${domain.xenMinor})` : `from Xen ${xen}`}`,
            fields: {domainType: domainTypeName(domain.type), domainTypeId: domain.type, pageShift: domain.pageShift, xenVersion: legacy ? null : xen, legacy},
          },
        ]
      }
      case 'libxl':
        return [this.#libxlRow(ev.record, ev.offset, ev.index, ev.length)]
      case 'libxc':
        return [this.#libxcRow(ev.record, ev.offset, ev.index, ev.length)]
      case 'back': {
        const rec = ev.record
        const base = {event: 'record' as const, layer: 'back' as const, offset: ev.offset, index: ev.index, length: ev.length}
        if (rec.kind === 'CHECKPOINT_STATE') {
          return [{...base, name: rec.kind, type: LIBXL.CHECKPOINT_STATE, detail: stateDetail(rec.state), fields: {state: rec.state, stateId: CHECKPOINT_STATE[rec.state]}}]
        }
        return [{...base, name: rec.kind, type: LIBXC.CHECKPOINT_DIRTY_PFN_LIST, ...dirtyList(rec.pfns)}]
      }
      case 'eof': {
        const back = 'expecting' in ev
        const midCycle = back && ev.expecting !== 'SVM_SUSPENDED'
        const detail = back
          ? `back channel ends after ${plural(ev.checkpoints, 'checkpoint')}${midCycle ? `, in the middle of a cycle (${ev.expecting} was next)` : ''}`
          : `stream ends between checkpoints, after ${plural(ev.checkpoints, 'checkpoint')} (the sender went away)`
        const fields: JsonObject = {checkpoints: ev.checkpoints}
        if (back) fields.expecting = ev.expecting
        const layer: RowLayer = back ? 'back' : this.#format === 'libxc' ? 'libxc' : 'libxl'
        return [{event: 'eof', layer, offset: ev.offset, name: 'end of input', length: 0, detail, fields}]
      }
    }
  }

  #libxlRow(rec: LibxlRecord, offset: number, index: number, length: number): Row {
    const row = (detail: string, fields: JsonObject = {}): Row => ({
      event: 'record',
      layer: 'libxl',
      offset,
      index,
      name: rec.kind,
      type: LIBXL[rec.kind],
      length,
      detail,
      fields,
    })
    switch (rec.kind) {
      case 'END':
        return row('end of stream')
      case 'LIBXC_CONTEXT':
        return row('the libxc stream follows')
      case 'EMULATOR_XENSTORE_DATA':
        return row(`${emulatorName(rec.emulator)} (id ${rec.emulator}), index ${rec.index}, ${plural(rec.entries.length, 'key')}`, {
          emulator: emulatorName(rec.emulator),
          emulatorId: rec.emulator,
          emulatorIndex: rec.index,
          keys: rec.entries.length,
        })
      case 'EMULATOR_CONTEXT':
        return row(`${emulatorName(rec.emulator)} (id ${rec.emulator}), index ${rec.index}, ${rec.blob.length} bytes of device state`, {
          emulator: emulatorName(rec.emulator),
          emulatorId: rec.emulator,
          emulatorIndex: rec.index,
          stateLength: rec.blob.length,
        })
      case 'CHECKPOINT_END':
        this.#libxlCheckpoints++
        return row(`end of checkpoint ${this.#libxlCheckpoints}`, {checkpoint: this.#libxlCheckpoints})
      case 'CHECKPOINT_STATE':
        return row(stateDetail(rec.state), {state: rec.state, stateId: CHECKPOINT_STATE[rec.state]})
    }
  }

  #libxcRow(rec: LibxcRecord, offset: number, index: number, length: number): Row {
    const type = rec.kind === 'OPTIONAL' ? rec.type : LIBXC[rec.kind]
    const row = (detail: string, fields: JsonObject = {}, pages?: PageSpan): Row => ({
      event: 'record',
      layer: 'libxc',
      offset,
      index,
      name: rec.kind === 'OPTIONAL' ? libxcTypeName(rec.type) : rec.kind,
      type,
      length,
      detail,
      fields,
      ...(pages ? {pages} : {}),
    })
    switch (rec.kind) {
      case 'END':
        return row('end of the libxc stream')
      case 'STATIC_DATA_END':
        return row('end of static data')
      case 'VERIFY':
        return row('memory is sent again, for verification')
      case 'PAGE_DATA': {
        const span = pageSpanOf(rec.pfns, rec.types)
        return row(pageSpanDetail(span), pageSpanFields(span), span)
      }
      case 'X86_PV_INFO':
        return row(`guest width ${rec.guestWidth} bytes, ${rec.ptLevels} page-table levels`, {guestWidth: rec.guestWidth, ptLevels: rec.ptLevels})
      case 'X86_PV_P2M_FRAMES':
        return row(`${pfnRange(rec.startPfn, rec.endPfn)}, ${plural(rec.frames.length, 'frame')}`, {
          startPfn: hex(rec.startPfn),
          endPfn: hex(rec.endPfn),
          frames: rec.frames.length,
        })
      case 'X86_PV_VCPU_BASIC':
      case 'X86_PV_VCPU_EXTENDED':
      case 'X86_PV_VCPU_XSAVE':
      case 'X86_PV_VCPU_MSRS':
        return row(`vcpu ${rec.vcpuId}, ${rec.context.length} bytes of context`, {vcpu: rec.vcpuId, contextLength: rec.context.length})
      case 'SHARED_INFO':
        return row('shared info page')
      case 'X86_TSC_INFO':
        return row(`mode ${rec.mode}, ${rec.khz} kHz, nsec ${rec.nsec}, incarnation ${rec.incarnation}`, {
          mode: rec.mode,
          khz: rec.khz,
          nsec: rec.nsec.toString(),
          incarnation: rec.incarnation,
        })
      case 'HVM_CONTEXT':
        return row(`${rec.context.length} bytes of HVM context`, {contextLength: rec.context.length})
      case 'HVM_PARAMS': {
        const names = rec.params.map((p) => hvmParamName(p.index))
        return row(`${plural(rec.params.length, 'param')}${names.length ? ` (${names.slice(0, 8).join(', ')}${names.length > 8 ? ', ...' : ''})` : ''}`, {
          count: rec.params.length,
          params: rec.params.map((p, i) => ({index: Number(p.index), name: names[i]!, value: u64(p.value)})),
        })
      }
      case 'TOOLSTACK':
        return row(`${rec.blob.length} bytes (deprecated record)`, {blobLength: rec.blob.length})
      case 'CHECKPOINT':
        this.#libxcCheckpoints++
        return row(`checkpoint ${this.#libxcCheckpoints}`, {checkpoint: this.#libxcCheckpoints})
      case 'CHECKPOINT_DIRTY_PFN_LIST': {
        const d = dirtyList(rec.pfns)
        return row(d.detail, d.fields)
      }
      case 'X86_CPUID_POLICY':
        return row(plural(rec.leaves.length, 'leaf', 'leaves'), {leaves: rec.leaves.length})
      case 'X86_MSR_POLICY':
        return row(plural(rec.msrs.length, 'MSR'), {msrs: rec.msrs.length})
      case 'OPTIONAL':
        return row(`optional record ${hex(rec.type, 8)} this reader does not know, skipped`, {optional: true})
    }
  }
}

function stateDetail(state: keyof typeof CHECKPOINT_STATE): string {
  return `${state} (${CHECKPOINT_STATE[state]})`
}

function dirtyList(pfns: readonly number[]): {detail: string; fields: JsonObject} {
  if (pfns.length === 0) return {detail: '0 pfns', fields: {pfns: 0}}
  let first = Infinity
  let last = -Infinity
  for (const p of pfns) {
    if (p < first) first = p
    if (p > last) last = p
  }
  return {detail: `${plural(pfns.length, 'pfn')} in ${hex(first)}-${hex(last)}`, fields: {pfns: pfns.length, pfnFirst: hex(first), pfnLast: hex(last)}}
}

// ---------------------------------------------------------------------------------------------
// Human output

export const COLUMN_HEADER = formatLine('OFFSET', 'LAYER', 'INDEX', 'RECORD', 'LENGTH', 'DETAIL')

function formatLine(offset: string, layer: string, index: string, name: string, length: string, detail: string): string {
  return `${offset.padStart(11)}  ${layer.padEnd(5)}  ${index.padEnd(11)} ${name.padEnd(25)} ${length.padStart(10)}  ${detail}`.trimEnd()
}

export function formatRow(row: Row): string {
  return formatLine(String(row.offset), row.layer, row.index === undefined ? '' : `#${row.index}`, row.name, String(row.length), row.detail)
}

interface PageGroup {
  first: Row
  lastIndex: number
  count: number
  length: number
  pages: PageSpan
}

/**
 * Writes rows as lines. With `squash`, consecutive PAGE_DATA rows become one line
 * (`PAGE_DATA x N`, offset of the first, total length); call `flush()` before anything else is
 * written and at the end.
 */
export class RowPrinter {
  #group?: PageGroup

  constructor(
    private readonly write: (line: string) => void,
    private readonly squash: boolean,
  ) {}

  print(row: Row): void {
    if (this.squash && row.pages && row.index !== undefined) {
      const g = this.#group
      if (g && g.first.layer === row.layer && g.lastIndex + 1 === row.index) {
        g.lastIndex = row.index
        g.count++
        g.length += row.length
        g.pages = mergePageSpans(g.pages, row.pages)
      } else {
        this.flush()
        this.#group = {first: row, lastIndex: row.index, count: 1, length: row.length, pages: row.pages}
      }
      return
    }
    this.flush()
    this.write(formatRow(row))
  }

  flush(): void {
    const g = this.#group
    if (!g) return
    this.#group = undefined
    if (g.count === 1) {
      this.write(formatRow(g.first))
      return
    }
    this.write(
      formatLine(String(g.first.offset), g.first.layer, `#${g.first.index}-${g.lastIndex}`, `${g.first.name} x ${g.count}`, String(g.length), pageSpanDetail(g.pages)),
    )
  }
}

const FORMAT_NAMES: Record<InspectFormat, string> = {
  xl: 'xl savefile (xl header, libxl v2, libxc v3)',
  libxl: 'libxl stream v2 (with libxc v3 inside)',
  libxc: 'libxc stream v3',
  'back-channel': 'COLO back channel (secondary to primary)',
}

const STREAM_TYPE_NAMES: Record<InspectSummary['streamType'], string> = {
  plain: 'plain (save or migration)',
  remus: 'Remus (checkpointed)',
  colo: 'COLO (checkpointed)',
  checkpointed: 'checkpointed (Remus or COLO: nothing in the stream tells which)',
  unknown: 'unknown',
}

/** `N bytes`, with a binary-unit size after it from 1 KiB on. */
function bytesText(bytes: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = bytes
  let unit = ''
  for (const u of units) {
    if (v < 1024) break
    v /= 1024
    unit = u
  }
  return unit ? `${bytes} bytes (${v.toFixed(1)} ${unit})` : plural(bytes, 'byte')
}

export interface SummaryContext {
  summary: InspectSummary
  /** Bytes read from the input. */
  bytes: number
  /** The format was told from the first bytes rather than given with -f. */
  sniffed: boolean
  /** Bytes of a regular file left after the stream's END (never read). */
  trailingBytes?: number
  /** The error that stopped the reader, if any. */
  error?: unknown
}

export function formatSummary(ctx: SummaryContext): string[] {
  const {summary: s} = ctx
  const lines = ['', 'summary']
  const item = (key: string, value: string) => lines.push(`  ${key.padEnd(12)} ${value}`)
  item('format', s.format ? `${FORMAT_NAMES[s.format]}${ctx.sniffed ? ', told from its first bytes' : ''}` : 'unknown')
  item('stream type', STREAM_TYPE_NAMES[s.streamType])
  const layers: string[] = []
  if (s.format !== 'back-channel') layers.push(`libxl ${s.records.libxl}`, `libxc ${s.records.libxc}`)
  else layers.push(`back channel ${s.records.back}`)
  item('records', `${layers.join(', ')}${s.headers ? ` (and ${plural(s.headers, 'header')})` : ''}`)
  if (s.format === 'back-channel') {
    item('dirty pfns', String(s.dirtyPfns))
  } else {
    item('pages', `${plural(s.pages.pfns, 'pfn')} in ${plural(s.pages.records, 'PAGE_DATA record')}, ${plural(s.pages.withData, 'page')} of data = ${bytesText(s.pages.bytes)}`)
  }
  item('checkpoints', String(s.checkpoints))
  item('bytes', `${bytesText(ctx.bytes)} read`)
  const end =
    s.end === 'END'
      ? 'END record'
      : s.end === 'eof'
        ? s.format === 'back-channel'
          ? 'end of input'
          : 'end of input between checkpoints'
        : 'not reached'
  item('end', ctx.trailingBytes ? `${end}; ${ctx.trailingBytes} more bytes in the file after it, not read` : end)
  item('result', ctx.error === undefined ? 'valid' : `invalid: ${errorMessage(ctx.error)}`)
  return lines
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code
    if (err instanceof StreamError || err instanceof UnknownFormatError) return err.message
    if (typeof code === 'string' && (err as NodeJS.ErrnoException).syscall) return `read error: ${err.message}`
    return err.message.split('\n')[0] ?? String(err)
  }
  return String(err)
}

// ---------------------------------------------------------------------------------------------
// NDJSON

export function rowJson(row: Row): JsonObject {
  if (row.event === 'header') return {event: 'header', layer: row.layer, offset: row.offset, part: row.name, length: row.length, ...row.fields}
  if (row.event === 'eof') return {event: 'eof', layer: row.layer, offset: row.offset, ...row.fields}
  return {
    event: 'record',
    layer: row.layer,
    offset: row.offset,
    index: row.index ?? null,
    type: row.name,
    typeId: row.type ?? null,
    length: row.length,
    ...row.fields,
  }
}

export function formatJson(ev: InspectEvent): JsonObject | undefined {
  return ev.layer === 'format' ? {event: 'format', format: ev.format, detected: ev.sniffed} : undefined
}

export function summaryJson(ctx: SummaryContext): JsonObject {
  const s = ctx.summary
  const out: JsonObject = {
    event: 'summary',
    valid: ctx.error === undefined,
    format: s.format ?? null,
    streamType: s.streamType,
    records: s.records,
    headers: s.headers,
    pages: s.pages,
    dirtyPfns: s.dirtyPfns,
    checkpoints: s.checkpoints,
    bytes: ctx.bytes,
    end: s.end,
  }
  if (ctx.trailingBytes) out.trailingBytes = ctx.trailingBytes
  return out
}

export function errorJson(err: unknown, ctx: SummaryContext): JsonObject {
  const read = summaryJson(ctx)
  delete read.event
  delete read.valid
  if (err instanceof StreamError) {
    return {
      event: 'error',
      format: err.format,
      code: err.code,
      offset: err.offset,
      record: err.record ? {type: err.record.name, typeId: err.record.type, index: err.record.index} : null,
      part: err.part ?? null,
      message: err.message,
      read,
    }
  }
  if (err instanceof UnknownFormatError) {
    return {event: 'error', format: null, code: err.code, offset: err.offset, record: null, part: null, message: err.message, read}
  }
  const code = err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined
  return {event: 'error', format: null, code: typeof code === 'string' ? code : 'error', offset: null, record: null, part: null, message: errorMessage(err), read}
}
