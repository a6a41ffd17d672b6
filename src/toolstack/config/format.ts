/**
 * Writes xl.cfg text that xl (and parseXlConfig) reads back to the same settings: one `key = value`
 * line per setting, strings in double quotes (single quotes when that avoids escaping), numbers as
 * written, lists on one line or, when long, one element per line with a trailing comma.
 */
import {isXlName, isXlNumberText, type ParsedConfig, type XlValue} from './xl-cfg.js'

export interface FormatOptions {
  /** Lists longer than this many characters on one line are written one element per line. Default 100. */
  listWidth?: number
}

/** A value to write: positions are not needed. */
export type XlValueInput =
  | {readonly kind: 'string'; readonly value: string}
  | {readonly kind: 'number'; readonly text: string}
  | {readonly kind: 'list'; readonly items: readonly XlValueInput[]}

export function formatXlConfig(
  config: ParsedConfig | Iterable<readonly [string, XlValueInput]>,
  options: FormatOptions = {},
): string {
  const width = options.listWidth ?? 100
  const entries: Iterable<readonly [string, XlValueInput]> =
    'settings' in config ? [...config.settings.values()].map(s => [s.key, s.value] as const) : config
  let out = ''
  for (const [key, value] of entries) {
    if (!isXlName(key)) throw new RangeError(`cannot write setting name ${JSON.stringify(key)}: names are [a-z][._0-9a-z]*`)
    out += `${key} = ${formatTop(value, width)}\n`
  }
  return out
}

function formatTop(v: XlValueInput, width: number): string {
  const line = formatValue(v)
  if (v.kind !== 'list' || line.length <= width || v.items.length === 0) return line
  return `[\n${v.items.map(item => `    ${formatValue(item)},\n`).join('')}]`
}

export function formatValue(v: XlValueInput | XlValue): string {
  switch (v.kind) {
    case 'string':
      return quoteXlString(v.value)
    case 'number':
      if (!isXlNumberText(v.text)) throw new RangeError(`cannot write ${JSON.stringify(v.text)} as an xl.cfg number`)
      return v.text
    case 'list':
      return v.items.length === 0 ? '[ ]' : `[ ${v.items.map(formatValue).join(', ')} ]`
  }
}

/**
 * Quotes a string for xl.cfg. Only a newline, the quote and the backslash must be escaped; tabs and
 * carriage returns are escaped too, for readability. NUL cannot be written: xl would cut the string there.
 */
export function quoteXlString(s: string): string {
  if (s.includes('\0')) throw new RangeError('cannot write a string holding a NUL character in xl.cfg')
  const q = s.includes('"') && !s.includes("'") ? "'" : '"'
  let out = q
  for (const c of s) {
    if (c === q || c === '\\') out += `\\${c}`
    else if (c === '\n') out += '\\n'
    else if (c === '\t') out += '\\t'
    else if (c === '\r') out += '\\r'
    else out += c
  }
  return out + q
}

export function xlString(value: string): XlValueInput {
  return {kind: 'string', value}
}

/** A number value: an integer (written in decimal) or a token text such as `0x1f`. */
export function xlNumber(n: number | string): XlValueInput {
  const text = typeof n === 'number' ? String(n) : n
  if (!isXlNumberText(text)) throw new RangeError(`${JSON.stringify(text)} is not an xl.cfg number (non-negative integers only)`)
  return {kind: 'number', text}
}

export function xlList(items: readonly XlValueInput[]): XlValueInput {
  return {kind: 'list', items}
}
