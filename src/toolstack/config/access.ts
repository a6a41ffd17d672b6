/**
 * Typed reads of settings, with xl's conventions: a number is also a string (its text), a quoted
 * string holding an integer is also an integer, a boolean is an integer (0 false, anything else true).
 * Every function returns undefined when the setting is absent and throws a ConfigError at the
 * setting's value when it has the wrong shape.
 */
import {configFail} from './errors.js'
import {atomText, parseCInteger, type ParsedConfig, type XlAtom, type XlSetting, type XlValue} from './xl-cfg.js'

export interface IntBounds {
  min?: number
  max?: number
}

export function getSetting(cfg: ParsedConfig, key: string): XlSetting | undefined {
  return cfg.settings.get(key)
}

/** A single value (string or number) as text. */
export function getString(cfg: ParsedConfig, key: string): string | undefined {
  const s = cfg.settings.get(key)
  if (!s) return undefined
  return atomText(atomOf(s))
}

/**
 * An integer, read as C's strtol(text, NULL, 0) does (`0x1f`, `010` = 8, `" 12"`), within bounds
 * (default: JavaScript's safe integers). xl refuses `+=` on a setting read as a number; so does this.
 */
export function getInt(cfg: ParsedConfig, key: string, bounds: IntBounds = {}): number | undefined {
  const s = cfg.settings.get(key)
  if (!s) return undefined
  const v = atomOf(s)
  if (s.op === '+=') configFail('bad-number', s.file, v.pos, `'+=' cannot be used with '${key}', which is a number`, key)
  const text = atomText(v)
  const r = parseCInteger(text)
  if (!r.ok) {
    const why =
      r.reason === 'range'
        ? 'is out of range'
        : 'is not a number (decimal, octal with a leading 0, or hex with 0x)'
    configFail('bad-number', s.file, v.pos, `'${key}' = ${JSON.stringify(text)} ${why}`, key)
  }
  const min = bounds.min ?? Number.MIN_SAFE_INTEGER
  const max = bounds.max ?? Number.MAX_SAFE_INTEGER
  if (r.value < BigInt(min)) configFail('out-of-range', s.file, v.pos, `'${key}' = ${r.value} is smaller than the minimum ${min}`, key)
  if (r.value > BigInt(max)) configFail('out-of-range', s.file, v.pos, `'${key}' = ${r.value} is greater than the maximum ${max}`, key)
  return Number(r.value)
}

/** xl's booleans are integers: 0 is false, any other integer true. */
export function getBool(cfg: ParsedConfig, key: string): boolean | undefined {
  const n = getInt(cfg, key)
  return n === undefined ? undefined : n !== 0
}

export function getList(cfg: ParsedConfig, key: string): readonly XlValue[] | undefined {
  const s = cfg.settings.get(key)
  if (!s) return undefined
  if (s.value.kind !== 'list') {
    configFail('wrong-type', s.file, s.value.pos, `'${key}' is a single value but should be a list`, key)
  }
  return s.value.items
}

/** A list whose elements are single values, as their texts. */
export function getStringList(cfg: ParsedConfig, key: string): string[] | undefined {
  return getAtomList(cfg, key)?.map(atomText)
}

/** Like getStringList, keeping each element with its position (for messages about its contents). */
export function getAtomList(cfg: ParsedConfig, key: string): XlAtom[] | undefined {
  const items = getList(cfg, key)
  if (!items) return undefined
  const file = (cfg.settings.get(key) as XlSetting).file
  return items.map((item, i) => {
    if (item.kind === 'list') {
      configFail('wrong-type', file, item.pos, `element ${i} of '${key}' is a list but should be a single value`, key)
    }
    return item
  })
}

function atomOf(s: XlSetting): XlAtom {
  if (s.value.kind === 'list') {
    configFail('wrong-type', s.file, s.value.pos, `'${s.key}' is a list but should be a single value`, s.key)
  }
  return s.value
}
