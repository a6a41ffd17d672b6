/**
 * Property: any config, written with any spacing, comments, separators, quotes and escapes the
 * grammar allows, parses to the settings it was written from (the last assignment of a name wins,
 * `+=` appends); formatXlConfig writes them back as text that parses to the same settings and is
 * itself a fixed point of parse + format. Positions of every setting point at its name and value.
 */
import fc from 'fast-check'
import {describe, expect, it} from 'vitest'
import {formatXlConfig, parseXlConfig, type ParsedConfig, type XlValue} from '../src/toolstack/config/index.js'

/** A value without positions: {s} string, {n} number token, or a list. */
type Model = {s: string} | {n: string} | Model[]

interface Stmt {
  key: string
  op: '=' | '+='
  value: Model
}

const isList = (m: Model): m is Model[] => Array.isArray(m)
const atomText = (m: {s: string} | {n: string}): string => ('s' in m ? m.s : m.n)

function plain(v: XlValue): Model {
  if (v.kind === 'list') return v.items.map(plain)
  return v.kind === 'string' ? {s: v.value} : {n: v.text}
}

function effective(cfg: ParsedConfig): [string, Model][] {
  return [...cfg.settings].map(([k, s]) => [k, plain(s.value)])
}

/** What the settings must be after the statements, by xl's rules. */
function expected(stmts: Stmt[]): [string, Model][] {
  const m = new Map<string, Model>()
  for (const {key, op, value} of stmts) {
    const prev = m.get(key)
    let v = value
    if (op === '+=' && prev !== undefined) {
      if (isList(prev) && isList(value)) v = [...prev, ...value]
      else if (!isList(prev) && !isList(value)) v = {s: atomText(prev) + atomText(value)}
    }
    m.delete(key)
    m.set(key, v)
  }
  return [...m]
}

// ---- generators

const special = fc.constantFrom('"', "'", '\\', '\n', '\t', '\r', '#', '[', ']', ',', ';', '=', ' ', '\x07', '\b', '\f', '\v', 'é', '€', '😀')
const char = fc.oneof(special, fc.string({unit: 'grapheme-ascii', minLength: 1, maxLength: 1}))
const str = fc.string({unit: char, maxLength: 12}).filter(s => !s.includes('\0')).map(s => ({s}))
const num = fc.oneof(
  fc.nat().map(n => ({n: String(n)})),
  fc.nat().map(n => ({n: `0x${n.toString(16)}`})),
  fc.nat().map(n => ({n: `0${n.toString(8)}`})),
  fc.stringMatching(/^[0-9][0-9a-fx]{0,6}$/).map(n => ({n})),
)
const {value} = fc.letrec<{value: Model}>(tie => ({
  value: fc.oneof({depthSize: 'small', withCrossShrink: true}, str, num, fc.array(tie('value'), {maxLength: 4})),
}))
const key = fc.oneof(fc.constantFrom('name', 'memory', 'disk', 'vif', 'a.b', 'x_1'), fc.stringMatching(/^[a-z][._0-9a-z]{0,8}$/))
const stmt = fc.record({key, op: fc.constantFrom<'=' | '+='>('=', '=', '+='), value})

/** Statements where `+=` never mixes a list with a single value (that is an error, tested elsewhere). */
const stmts = fc.array(stmt, {maxLength: 8}).map(list => {
  const kinds = new Map<string, boolean>()
  return list.map(s => {
    const prev = kinds.get(s.key)
    const op = s.op === '+=' && prev !== undefined && prev !== isList(s.value) ? ('=' as const) : s.op
    kinds.set(s.key, isList(s.value))
    return {...s, op}
  })
})

// ---- writing a config with random layout

function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function render(list: Stmt[], seed: number): string {
  const r = prng(seed)
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T
  const blank = () => pick(['', '', ' ', '\t', '  \t'])
  const comment = () => `#${pick(['', ' note', ' x = [ "y", ', " it's ", ' \\ ', ' ;;'])}\n`
  const gap = () => pick(['', ' ', '\n', ` ${comment()}`, '\n\n  ', `\n${comment()}  `, '\t'])

  const quote = (s: string): string => {
    const q = r() < 0.5 ? '"' : "'"
    let out = q
    for (const c of s) {
      if (c === q || c === '\\') out += `\\${c}`
      else if (c === '\n') out += '\\n'
      else if (c === '\t') out += r() < 0.5 ? c : '\\t'
      else if (c === '\r') out += r() < 0.5 ? c : '\\r'
      else if (c === '\x07') out += r() < 0.5 ? c : '\\a'
      else if (c === '\b') out += r() < 0.5 ? c : '\\b'
      else if (c === '\f') out += r() < 0.5 ? c : '\\f'
      else if (c === '\v') out += r() < 0.5 ? c : '\\v'
      else if (c === '"' || c === "'") out += r() < 0.5 ? c : `\\${c}`
      else out += c
    }
    return out + q
  }
  const val = (v: Model): string => {
    if (!isList(v)) return 's' in v ? quote(v.s) : v.n
    if (v.length === 0) return `[${gap()}]`
    const items = v.map(item => val(item) + gap())
    return `[${gap()}${items.join(`,${gap()}`)}${r() < 0.5 ? `,${gap()}` : ''}]`
  }

  let text = ''
  list.forEach((s, i) => {
    if (r() < 0.3) text += pick(['\n', comment(), ';', ' ;\n', `${blank()}${comment()}`])
    text += `${blank()}${s.key}${blank()}${s.op}${blank()}${val(s.value)}${blank()}`
    const last = i === list.length - 1
    text += last && r() < 0.3 ? '' : pick(['\n', ';', ` ${comment()}`, ';\n', `;${blank()}`])
  })
  if (r() < 0.3) text += comment()
  return text
}

describe('round trip', () => {
  it('written configs parse to their settings, and format + parse keeps them', () => {
    fc.assert(
      fc.property(stmts, fc.integer(), fc.integer({min: 10, max: 120}), (list, seed, listWidth) => {
        const text = render(list, seed)
        const cfg = parseXlConfig(text, {file: 'gen.cfg'})
        const want = expected(list)
        expect(effective(cfg)).toEqual(want)
        expect(cfg.assignments.map(a => [a.key, a.op])).toEqual(list.map(s => [s.key, s.op]))

        // every assignment's name and value are where the positions say
        const lines = text.split('\n')
        for (const a of cfg.assignments) {
          const at = (p: {line: number; column: number}) => (lines[p.line - 1] ?? '').slice(p.column - 1)
          expect(at(a.pos).startsWith(a.key)).toBe(true)
          const v = a.value
          const head = at(v.pos)
          if (v.kind === 'list') expect(head.startsWith('[')).toBe(true)
          else if (v.kind === 'number') expect(head.startsWith(v.text)).toBe(true)
          else expect(head[0] === '"' || head[0] === "'").toBe(true)
        }

        const written = formatXlConfig(cfg, {listWidth})
        const again = parseXlConfig(written, {file: 'written.cfg'})
        expect(effective(again)).toEqual(want)
        expect(again.warnings).toEqual([])
        expect(formatXlConfig(again, {listWidth})).toBe(written)
      }),
      {numRuns: 1500},
    )
  })

  it('values built in code format to text that parses back to them', () => {
    const entries = fc.uniqueArray(fc.tuple(key, value), {selector: ([k]) => k, maxLength: 8})
    fc.assert(
      fc.property(entries, list => {
        const input = list.map(([k, v]) => [k, toInput(v)] as const)
        const cfg = parseXlConfig(formatXlConfig(input))
        expect(effective(cfg)).toEqual(list)
      }),
      {numRuns: 500},
    )
  })
})

type Input = {kind: 'string'; value: string} | {kind: 'number'; text: string} | {kind: 'list'; items: Input[]}

function toInput(m: Model): Input {
  if (isList(m)) return {kind: 'list', items: m.map(toInput)}
  return 's' in m ? {kind: 'string', value: m.s} : {kind: 'number', text: m.n}
}
