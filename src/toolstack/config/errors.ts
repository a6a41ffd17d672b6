/**
 * The one error type of the config parsers, and the warnings they report as data. Both name the
 * file and the 1-based line and column of the character at fault, in the `file:line:column:` form
 * editors and compilers use, so an operator can jump straight to it.
 */

export type ConfigErrorCode =
  | 'lexical' // a character the xl.cfg lexer has no token for (uppercase, '-', '.', CR, ...)
  | 'syntax' // tokens in an order the xl.cfg grammar does not allow
  | 'unterminated' // a quoted string or a '[' list that never ends
  | 'bad-escape' // a backslash escape xl rejects
  | 'bad-append' // `+=` adding a list to a string or the other way round
  | 'wrong-type' // a list where a single value is needed, or the other way round
  | 'bad-number' // not an integer as C's strtol(s, NULL, 0) reads it, or `+=` on a number
  | 'out-of-range' // an integer outside the bounds of its setting
  | 'missing' // a mandatory setting is absent
  | 'bad-value' // a value outside its setting's domain (type="xyz", a malformed uuid, ...)
  | 'disk-spec' // a disk specification string xl would reject
  | 'vif-spec' // a vif specification with a value xl cannot use

/** A place in a config source. Lines and columns count from 1; columns count UTF-16 code units. */
export interface ConfigPos {
  readonly line: number
  readonly column: number
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  constructor(
    readonly code: ConfigErrorCode,
    /** The config source: a file name, or `command line` for `key=value` arguments. */
    readonly file: string,
    /** 0 when the error is about the file as a whole (a mandatory setting is missing). */
    readonly line: number,
    readonly column: number,
    /** The message without its `file:line:column:` prefix. */
    readonly detail: string,
    /** The setting the error is about, when there is one. */
    readonly key?: string,
  ) {
    super(`${where(file, line, column)}: ${detail}`)
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      file: this.file,
      line: this.line,
      column: this.column,
      key: this.key,
      message: this.message,
    }
  }
}

/** Something xl accepts but an operator should know about: an unknown vif key, a dropped escape. */
export interface ConfigWarning {
  readonly file: string
  readonly line: number
  readonly column: number
  readonly message: string
  readonly key?: string
}

export function where(file: string, line: number, column: number): string {
  return line > 0 ? `${file}:${line}:${column}` : file
}

/** `vm.cfg:3:9: warning: ...`, the way xl prints its warnings. */
export function formatWarning(w: ConfigWarning): string {
  return `${where(w.file, w.line, w.column)}: warning: ${w.message}`
}

export function configFail(
  code: ConfigErrorCode,
  file: string,
  pos: ConfigPos | undefined,
  detail: string,
  key?: string,
): never {
  throw new ConfigError(code, file, pos?.line ?? 0, pos?.column ?? 0, detail, key)
}

/** Quotes a piece of user text for a message, making control characters visible. */
export function show(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it makes visible
  return `'${text.replace(/[\0-\x1f\x7f\\']/g, c => visibleChar(c))}'`
}

function visibleChar(c: string): string {
  switch (c) {
    case '\n':
      return '\\n'
    case '\t':
      return '\\t'
    case '\r':
      return '\\r'
    case '\\':
      return '\\\\'
    case "'":
      return "\\'"
    default:
      return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`
  }
}
