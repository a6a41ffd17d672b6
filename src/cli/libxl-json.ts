/**
 * JSON as libxl prints it: yajl 2's generator with beautify on (libxl_yajl_gen_alloc in
 * tools/include/libxl_json.h), so `xl create -n` and `xl list -l` output can be diffed against
 * real xl's. yajl differs from JSON.stringify(x, null, 4) in two ways: an empty object or array is
 * `{` newline, newline, indent `}`, and a complete top-level value is followed by a newline. Strings
 * are escaped as yajl_string_encode does (control characters as \u00XX in upper case, `/` as is).
 */

const INDENT = '    '

/** The text yajl_gen produces for `value`, final newline included. */
export function libxlJson(value: unknown): string {
  return `${gen(value, 0)}\n`
}

function gen(value: unknown, depth: number): string {
  if (value === null || value === undefined) return 'null'
  switch (typeof value) {
    case 'string':
      return yajlString(value)
    case 'number':
      if (!Number.isFinite(value)) return 'null'
      return Number.isInteger(value) ? String(value) : doubleText(value)
    case 'bigint':
      return value.toString()
    case 'boolean':
      return value ? 'true' : 'false'
    case 'object':
      break
    default:
      return 'null'
  }
  const inner = INDENT.repeat(depth + 1)
  const outer = INDENT.repeat(depth)
  if (Array.isArray(value)) {
    const items = value.map(v => `${inner}${gen(v, depth + 1)}`)
    return `[\n${items.join(',\n')}\n${outer}]`
  }
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${inner}${yajlString(k)}: ${gen(v, depth + 1)}`)
  return `{\n${entries.join(',\n')}\n${outer}}`
}

/** yajl_gen_double: %.20g, with ".0" added when that looks like an integer. */
function doubleText(n: number): string {
  const s = String(n)
  return /^[0-9-]+$/.test(s) ? `${s}.0` : s
}

function yajlString(s: string): string {
  let out = '"'
  for (const ch of s) {
    switch (ch) {
      case '"':
        out += '\\"'
        break
      case '\\':
        out += '\\\\'
        break
      case '\b':
        out += '\\b'
        break
      case '\f':
        out += '\\f'
        break
      case '\n':
        out += '\\n'
        break
      case '\r':
        out += '\\r'
        break
      case '\t':
        out += '\\t'
        break
      default: {
        const c = ch.codePointAt(0) as number
        out += c < 0x20 ? `\\u00${c.toString(16).toUpperCase().padStart(2, '0')}` : ch
      }
    }
  }
  return `${out}"`
}
