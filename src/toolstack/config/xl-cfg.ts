/**
 * xl.cfg(5) reader. It accepts what xl's own reader (libxlutil) accepts, token for token:
 *
 * - a setting is `name = value` or `name += value`; settings end at a newline or `;`, and the last one
 *   may end at the end of the file; empty statements (`;;`, blank lines) are fine;
 * - names are `[a-z][._0-9a-z]*` (lowercase only);
 * - a value is a quoted string, a number or a list `[ v, v, ]`: lists may nest, may be empty, may end
 *   with a comma, and only inside a list may a value continue on the next line (after `[`, after an
 *   element, after a comma). There is no other line continuation;
 * - numbers are lexed as `[0-9][0-9a-fx]*` and kept as text, as xl does; they become integers only
 *   when a setting is read as one, the way C's strtol(text, NULL, 0) reads them (so `010` is 8);
 * - strings use '...' or "..." and cannot span lines. Escapes: \\ \" \' \a \b \f \n \r \t \v.
 *   xl rejects every \x escape, and an octal escape either fails or is silently dropped from the
 *   string; both behaviours are reproduced (the second with a warning);
 * - `#` starts a comment that runs to the end of the line. xl needs the newline: a comment on the
 *   last line without one is an error there, and here too;
 * - a name set twice keeps its last value; `+=` appends to the previous value (string to string,
 *   list to list) or just sets it when there is none.
 *
 * Errors are ConfigErrors at the first problem, with its line and column.
 */
import {configFail, show, type ConfigPos, type ConfigWarning} from './errors.js'

export interface XlString {
  readonly kind: 'string'
  readonly value: string
  /** Where the opening quote is (for a value built by `+=`: where the appended part starts). */
  readonly pos: ConfigPos
  /**
   * The text between the quotes as written, when the value is one quoted string of the source.
   * Absent for values built by `+=` or by code. Lets disk and vif messages point inside the string.
   */
  readonly raw?: string
}

export interface XlNumber {
  readonly kind: 'number'
  /** The token as written: xl keeps numbers as text. */
  readonly text: string
  /**
   * The integer strtol(text, NULL, 0) gives when it reads the whole text and the result is a safe
   * JavaScript integer; null otherwise (`08`, `12ab`, `0x`): xl lexes those as numbers too, and
   * fails only when a setting is read as an integer.
   */
  readonly value: number | null
  readonly pos: ConfigPos
}

export interface XlList {
  readonly kind: 'list'
  readonly items: readonly XlValue[]
  /** Where the `[` is. */
  readonly pos: ConfigPos
}

export type XlValue = XlString | XlNumber | XlList
export type XlAtom = XlString | XlNumber

export type XlOp = '=' | '+='

export interface XlSetting {
  readonly key: string
  readonly op: XlOp
  readonly value: XlValue
  /** Where the name is. */
  readonly pos: ConfigPos
  /** The source the setting came from: the config file, or `command line` for overrides. */
  readonly file: string
}

export interface ParsedConfig {
  /** The source name used in messages. */
  readonly file: string
  /**
   * The settings in effect, in the order of their last assignment: a setting assigned again moves to
   * where it was last assigned; `+=` values hold the combined value.
   */
  readonly settings: ReadonlyMap<string, XlSetting>
  /** Every assignment as written, in source order (values of `+=` as written, not combined). */
  readonly assignments: readonly XlSetting[]
  readonly warnings: readonly ConfigWarning[]
}

export interface ParseOptions {
  /** Name of the source for messages; default `config`. */
  file?: string
}

const NAME_RE = /^[a-z][._0-9a-z]*$/
const NUMBER_RE = /^[0-9][0-9a-fx]*$/

/** True when `name` can be written as a setting name. */
export function isXlName(name: string): boolean {
  return NAME_RE.test(name)
}

/** True when `text` is a number token as xl lexes it (which does not make it a valid integer). */
export function isXlNumberText(text: string): boolean {
  return NUMBER_RE.test(text)
}

export function parseXlConfig(text: string, options: ParseOptions = {}): ParsedConfig {
  const file = options.file ?? 'config'
  const warnings: ConfigWarning[] = []
  const lexer = new Lexer(text, file, warnings)
  const assignments = new Parser(lexer, file).parseFile()
  const settings = new Map<string, XlSetting>()
  for (const a of assignments) store(settings, a)
  return {file, settings, assignments, warnings}
}

/**
 * Parses `key=value` arguments given after the config file (`xl create vm.cfg memory=2048`) with the
 * same grammar. xl appends each one, newline-terminated, after the file's text, so argument N is
 * line N of the source `command line`.
 */
export function parseOverrides(args: readonly string[], file = 'command line'): ParsedConfig {
  return parseXlConfig(args.map(a => `${a}\n`).join(''), {file})
}

/**
 * Applies the assignments of `later` after those of `base`, as if its text followed base's: names
 * set again take the later value, `+=` appends to base's value.
 */
export function mergeConfigs(base: ParsedConfig, ...later: ParsedConfig[]): ParsedConfig {
  const settings = new Map(base.settings)
  const assignments = [...base.assignments]
  const warnings = [...base.warnings]
  for (const cfg of later) {
    for (const a of cfg.assignments) {
      store(settings, a)
      assignments.push(a)
    }
    warnings.push(...cfg.warnings)
  }
  return {file: base.file, settings, assignments, warnings}
}

/** Records one assignment with xl's rules: the last one wins, `+=` concatenates with the previous one. */
function store(settings: Map<string, XlSetting>, a: XlSetting): void {
  let setting = a
  const prev = a.op === '+=' ? settings.get(a.key) : undefined
  if (prev) setting = {...a, value: appendValues(prev, a)}
  settings.delete(a.key)
  settings.set(a.key, setting)
}

function appendValues(prev: XlSetting, add: XlSetting): XlValue {
  const p = prev.value
  const v = add.value
  if (p.kind === 'list' && v.kind === 'list') return {kind: 'list', items: [...p.items, ...v.items], pos: v.pos}
  if (p.kind !== 'list' && v.kind !== 'list') return {kind: 'string', value: atomText(p) + atomText(v), pos: v.pos}
  const was = p.kind === 'list' ? 'a list' : 'a single value'
  const adds = v.kind === 'list' ? 'a list' : 'a single value'
  configFail(
    'bad-append',
    add.file,
    v.pos,
    `'+=' cannot add ${adds} to '${add.key}', which is ${was} (set at ${prev.file}:${prev.pos.line}:${prev.pos.column})`,
    add.key,
  )
}

/** The text of a single value, as xl sees it: the string, or the number as written. */
export function atomText(v: XlAtom): string {
  return v.kind === 'string' ? v.value : v.text
}

// ---------------------------------------------------------------------------------------------
// Integers, as C's strtol(s, &end, 0) reads them

export type CIntegerResult = {ok: true; value: bigint} | {ok: false; reason: 'invalid' | 'range'}

const LONG_MIN = -(2n ** 63n)
const LONG_MAX = 2n ** 63n - 1n

/**
 * Reads `s` the way xl reads integer settings: leading blanks, an optional sign, then `0x`/`0X` and
 * hex digits, or `0` and octal digits, or decimal digits; the whole string must be used, and the
 * value must fit a 64-bit long.
 */
export function parseCInteger(s: string): CIntegerResult {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(s)
  if (!m) return {ok: false, reason: 'invalid'}
  const digits = m[2] ?? ''
  let value: bigint
  if (/^0[xX]/.test(digits)) value = BigInt(`0x${digits.slice(2)}`)
  else if (digits.length > 1 && digits.startsWith('0')) value = BigInt(`0o${digits.slice(1)}`)
  else value = BigInt(digits)
  if (m[1] === '-') value = -value
  if (value < LONG_MIN || value > LONG_MAX) return {ok: false, reason: 'range'}
  return {ok: true, value}
}

function numberValue(text: string): number | null {
  const r = parseCInteger(text)
  if (!r.ok) return null
  const n = Number(r.value)
  return Number.isSafeInteger(n) ? n : null
}

// ---------------------------------------------------------------------------------------------
// Lexer

type TokenKind = 'name' | 'number' | 'string' | '=' | '+=' | ',' | '[' | ']' | ';' | 'newline' | 'eof'

interface Token {
  readonly kind: TokenKind
  readonly text: string
  readonly line: number
  readonly column: number
  /** Decoded value of a string token. */
  readonly value?: string
  /** Source text between the quotes of a string token. */
  readonly raw?: string
}

const PUNCT: Record<string, TokenKind> = {',': ',', '[': '[', ']': ']', ';': ';', '=': '='}

class Lexer {
  private i = 0
  private line = 1
  private lineStart = 0

  constructor(
    private readonly src: string,
    private readonly file: string,
    private readonly warnings: ConfigWarning[],
  ) {}

  next(): Token {
    const s = this.src
    for (;;) {
      if (this.i >= s.length) return this.token('eof', '', this.i)
      const c = s[this.i] as string
      if (c === ' ' || c === '\t') {
        this.i++
        continue
      }
      const start = this.i
      if (c === '\n') {
        this.i++
        const t = this.token('newline', '\n', start)
        this.newLine()
        return t
      }
      if (c === '#') {
        const end = s.indexOf('\n', start)
        if (end < 0) {
          this.fail('lexical', start, 'a comment on the last line needs a newline after it (xl rejects the file otherwise)')
        }
        this.i = end + 1
        const t = this.token('newline', s.slice(start, end), start)
        this.newLine()
        return t
      }
      if (c >= 'a' && c <= 'z') {
        this.i = this.scan(/[._0-9a-z]*/y, start + 1)
        return this.token('name', s.slice(start, this.i), start)
      }
      if (c >= '0' && c <= '9') {
        this.i = this.scan(/[0-9a-fx]*/y, start + 1)
        const after = s[this.i]
        if (after !== undefined && /[A-Za-z0-9_.]/.test(after)) {
          const end = this.scan(/[A-Za-z0-9_.]*/y, this.i)
          this.fail(
            'bad-number',
            start,
            `bad number ${show(s.slice(start, end))}: numbers are integers, decimal, octal with a leading 0 or hex ` +
              `with 0x and lowercase digits; other values need quotes`,
          )
        }
        return this.token('number', s.slice(start, this.i), start)
      }
      if (c === '"' || c === "'") return this.string(c, start)
      if (c === '+' && s[start + 1] === '=') {
        this.i += 2
        return this.token('+=', '+=', start)
      }
      const punct = PUNCT[c]
      if (punct) {
        this.i++
        return this.token(punct, c, start)
      }
      this.fail('lexical', start, unexpectedChar(c))
    }
  }

  private string(quote: string, start: number): Token {
    const s = this.src
    let j = start + 1
    for (;;) {
      const c = s[j]
      if (c === undefined || c === '\n') {
        this.fail(
          'unterminated',
          start,
          `unterminated string: no closing ${quote} on this line (a string cannot span lines)`,
        )
      }
      if (c === quote) break
      if (c === '\\') {
        if (s[j + 1] === undefined || s[j + 1] === '\n') {
          this.fail('unterminated', start, `unterminated string: a backslash at the end of the line does not continue it`)
        }
        j += 2
        continue
      }
      if (c === '\0') this.fail('lexical', j, 'NUL character in a string')
      j++
    }
    const raw = s.slice(start + 1, j)
    this.i = j + 1
    const value = this.dequote(raw, start + 1)
    return {...this.token('string', s.slice(start, j + 1), start), value, raw}
  }

  /** Decodes the escapes of a string's text; `at` is the offset of raw[0] in the source. */
  private dequote(raw: string, at: number): string {
    let out = ''
    let k = 0
    while (k < raw.length) {
      const c = raw[k] as string
      if (c !== '\\') {
        out += c
        k++
        continue
      }
      const e = raw[k + 1] as string
      const simple = SIMPLE_ESCAPES[e]
      if (simple !== undefined) {
        out += simple
        k += 2
        continue
      }
      if (e === 'x') {
        this.fail('bad-escape', at + k, `'\\x' escape in a string: xl rejects every hex escape`)
      }
      if (e >= '0' && e <= '7') {
        const n = octalQuirkLength(raw, k)
        if (n === 0) {
          this.fail(
            'bad-escape',
            at + k,
            `bad octal escape '\\${e}': xl needs two more digits after a backslash and a digit 0-7`,
          )
        }
        this.warn(
          at + k,
          `octal escape '${raw.slice(k, k + n)}' is dropped from the string: xl discards octal escapes instead of decoding them`,
        )
        k += n
        continue
      }
      this.fail(
        'bad-escape',
        at + k,
        `invalid escape ${escapeText(e)} in a string (xl accepts \\\\ \\" \\' \\a \\b \\f \\n \\r \\t \\v)`,
      )
    }
    return out
  }

  private scan(re: RegExp, from: number): number {
    re.lastIndex = from
    const m = re.exec(this.src)
    return from + (m ? m[0].length : 0)
  }

  private newLine(): void {
    this.line++
    this.lineStart = this.i
  }

  private token(kind: TokenKind, text: string, offset: number): Token {
    return {kind, text, line: this.line, column: offset - this.lineStart + 1}
  }

  private pos(offset: number): ConfigPos {
    return {line: this.line, column: offset - this.lineStart + 1}
  }

  private fail(code: 'lexical' | 'bad-number' | 'unterminated' | 'bad-escape', offset: number, detail: string): never {
    configFail(code, this.file, this.pos(offset), detail)
  }

  private warn(offset: number, message: string): void {
    this.warnings.push({file: this.file, ...this.pos(offset), message})
  }
}

const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  "'": "'",
  '\\': '\\',
  a: '\x07',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
  v: '\v',
}

/**
 * xl's quirk for `\d` (d = 0..7) in a string: it reads the next (up to) three characters as a
 * decimal number, C strtoul style (blanks, a sign, digits), needs at least two of them used, and then
 * drops the backslash, the digit and what it read, adding nothing to the string. Returns the length of
 * the dropped escape from the backslash at raw[k], or 0 when xl rejects it.
 */
export function octalQuirkLength(raw: string, k: number): number {
  const m = /^[ \t\v\f\r]*[+-]?[0-9]+/.exec(raw.slice(k + 2, k + 5))
  const used = m ? m[0].length : 0
  return used >= 2 ? 2 + used : 0
}

/** How to show the escape `\e` in a message: as written when printable. */
function escapeText(e: string): string {
  return /^[\x21-\x7e]$/.test(e) ? `'\\${e}'` : `backslash + ${show(e)}`
}

function unexpectedChar(c: string): string {
  const what = `unexpected character ${show(c)}`
  if (c === '\r') return `${what}: xl.cfg needs Unix line endings (LF, not CR LF)`
  if (/[A-Z]/.test(c)) return `${what}: setting names are lowercase, and text values need quotes`
  if (c === '-') return `${what}: numbers cannot be negative, names cannot contain '-', and text values need quotes`
  if ('+.():'.includes(c)) return `${what}: xl.cfg is not Python; text values need quotes and numbers are plain integers`
  return what
}

// ---------------------------------------------------------------------------------------------
// Parser: file := { [assignment] (newline | ';') } [assignment] eof

class Parser {
  private tok: Token

  constructor(
    private readonly lexer: Lexer,
    private readonly file: string,
  ) {
    this.tok = lexer.next()
  }

  parseFile(): XlSetting[] {
    const out: XlSetting[] = []
    for (;;) {
      const t = this.tok
      if (t.kind === 'eof') return out
      if (t.kind === 'newline' || t.kind === ';') {
        this.advance()
        continue
      }
      if (t.kind !== 'name') {
        if (t.kind === '=' || t.kind === '+=') this.fail(t, `expected a setting name before '${t.kind}'`)
        this.fail(t, `expected a setting name, found ${describe(t)}`)
      }
      const setting = this.assignment()
      out.push(setting)
      const end = this.tok
      if (end.kind === 'newline' || end.kind === ';') this.advance()
      else if (end.kind !== 'eof') {
        this.fail(
          end,
          `junk after the value of '${setting.key}': found ${describe(end)}; end a setting with a newline or ';'`,
        )
      }
    }
  }

  private assignment(): XlSetting {
    const name = this.tok
    this.advance()
    const op = this.tok
    if (op.kind !== '=' && op.kind !== '+=') {
      this.fail(op, `expected '=' after the setting name '${name.text}', found ${describe(op)}`)
    }
    this.advance()
    const value = this.value(op.kind)
    return {key: name.text, op: op.kind, value, pos: at(name), file: this.file}
  }

  private value(after: string): XlValue {
    const t = this.tok
    switch (t.kind) {
      case 'string':
        this.advance()
        return {kind: 'string', value: t.value ?? '', pos: at(t), raw: t.raw}
      case 'number':
        this.advance()
        return {kind: 'number', text: t.text, value: numberValue(t.text), pos: at(t)}
      case '[':
        return this.list()
      case 'name':
        return this.fail(t, `expected a value after '${after}': ${show(t.text)} is not quoted (text values need quotes)`)
      case 'newline':
      case 'eof':
      case ';':
        return this.fail(t, `expected a value after '${after}'`)
      default:
        return this.fail(t, `expected a value after '${after}', found ${describe(t)}`)
    }
  }

  private list(): XlList {
    const open = this.tok
    this.advance()
    const items: XlValue[] = []
    this.skipNewlines(open)
    for (;;) {
      const t = this.tok
      if (t.kind === ']') break
      if (t.kind === ',' && items.length === 0) this.fail(t, `expected a list element or ']' after '[', found ','`)
      items.push(this.value(items.length === 0 ? '[' : ','))
      this.skipNewlines(open)
      const sep = this.tok
      if (sep.kind === ']') break
      if (sep.kind !== ',') {
        this.fail(
          sep,
          `expected ',' or ']' after a list element, found ${describe(sep)} ` +
            `(the '[' at line ${open.line} column ${open.column} is not closed)`,
        )
      }
      this.advance()
      this.skipNewlines(open)
      if (this.tok.kind === ',') this.fail(this.tok, `expected a list element or ']' after ',', found ','`)
    }
    this.advance()
    return {kind: 'list', items, pos: at(open)}
  }

  private skipNewlines(open: Token): void {
    while (this.tok.kind === 'newline') this.advance()
    if (this.tok.kind === 'eof') {
      configFail('unterminated', this.file, at(open), `unterminated list: this '[' has no matching ']'`)
    }
  }

  private advance(): void {
    this.tok = this.lexer.next()
  }

  private fail(t: Token, detail: string): never {
    configFail('syntax', this.file, at(t), detail)
  }
}

function at(t: Token): ConfigPos {
  return {line: t.line, column: t.column}
}

function describe(t: Token): string {
  switch (t.kind) {
    case 'name':
      return `the word ${show(t.text)}`
    case 'number':
      return `the number ${t.text}`
    case 'string':
      return 'a string'
    case 'newline':
      return t.text === '\n' ? 'the end of the line' : 'a comment'
    case 'eof':
      return 'the end of the file'
    default:
      return `'${t.kind}'`
  }
}
