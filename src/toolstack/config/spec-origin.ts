/**
 * Where a disk or vif spec string came from, so that a message about a token inside it can name
 * the token's line and column in the config file, through the quotes and escapes of the string.
 */
import type {ConfigPos, ConfigWarning} from './errors.js'
import {octalQuirkLength, type XlAtom} from './xl-cfg.js'

export interface SpecOrigin {
  /** Source name for messages; default `command line` (what xl calls specs given as arguments). */
  readonly file?: string
  /** The config value holding the spec: offsets map to columns through its text as written. */
  readonly value?: XlAtom
  /** Else: where the spec's first character is; default line 1, column 1. */
  readonly pos?: ConfigPos
  /** The setting the spec belongs to (`disk`, `vif`), for ConfigError.key. */
  readonly key?: string
}

export interface SpecOptions {
  readonly origin?: SpecOrigin
  /** Warnings are pushed here as well as returned (where the parser returns them). */
  readonly warnings?: ConfigWarning[]
}

export function originFile(origin: SpecOrigin | undefined): string {
  return origin?.file ?? 'command line'
}

/** The line and column of the character at `offset` in the decoded spec. */
export function specPos(origin: SpecOrigin | undefined, offset: number): ConfigPos {
  const v = origin?.value
  if (v) {
    if (v.kind === 'number') return {line: v.pos.line, column: v.pos.column + offset}
    if (v.raw === undefined) return v.pos
    return {line: v.pos.line, column: v.pos.column + 1 + rawIndex(v.raw, offset)}
  }
  const p = origin?.pos ?? {line: 1, column: 1}
  return {line: p.line, column: p.column + offset}
}

/** Index in the string's source text of the character that decodes to position `offset`. */
function rawIndex(raw: string, offset: number): number {
  let r = 0
  let d = 0
  while (r < raw.length && d < offset) {
    if (raw[r] !== '\\') {
      r++
      d++
      continue
    }
    const e = raw[r + 1] ?? ''
    if (e >= '0' && e <= '7') {
      r += Math.max(2, octalQuirkLength(raw, r)) // dropped: decodes to nothing
      continue
    }
    r += 2
    d++
  }
  return r
}
