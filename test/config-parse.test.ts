/**
 * The xl.cfg grammar as an operator meets it: what parses, to what values, at which line:column, and
 * the typed accessors an engine uses. The rules are xl's (libxlutil's lexer and grammar); every
 * accepted text here is also accepted by xl with the same values.
 */
import {describe, expect, it} from 'vitest'
import {
  ConfigError,
  getBool,
  getInt,
  getList,
  getString,
  getStringList,
  mergeConfigs,
  parseCInteger,
  parseOverrides,
  parseXlConfig,
  type ParsedConfig,
  type XlValue,
} from '../src/toolstack/config/index.js'

/** Values without positions: strings as themselves, numbers as {n: text}, lists as arrays. */
function plain(v: XlValue): unknown {
  if (v.kind === 'list') return v.items.map(plain)
  return v.kind === 'string' ? v.value : {n: v.text}
}

function settings(cfg: ParsedConfig): Record<string, unknown> {
  return Object.fromEntries([...cfg.settings].map(([k, s]) => [k, plain(s.value)]))
}

function errorOf(f: () => unknown): ConfigError {
  try {
    f()
  } catch (e) {
    if (e instanceof ConfigError) return e
    throw e
  }
  throw new Error('expected a ConfigError')
}

describe('xl.cfg values', () => {
  it('reads strings, numbers and lists, with their positions', () => {
    const cfg = parseXlConfig(`name = "vm1"\nmemory = 512\ndisk = [ 'a', "b" ]\n`, {file: 'vm.cfg'})
    expect(settings(cfg)).toEqual({name: 'vm1', memory: {n: '512'}, disk: ['a', 'b']})
    const disk = cfg.settings.get('disk')
    expect(disk?.pos).toEqual({line: 3, column: 1})
    expect(disk?.value.pos).toEqual({line: 3, column: 8})
    expect(disk?.file).toBe('vm.cfg')
    const items = disk?.value.kind === 'list' ? disk.value.items : []
    expect(items.map(i => i.pos)).toEqual([
      {line: 3, column: 10},
      {line: 3, column: 15},
    ])
  })

  it('keeps numbers as written and reads them as C does: hex, octal with a leading 0', () => {
    const cfg = parseXlConfig('a = 0x1f\nb = 010\nc = 0\nd = 12ab\ne = 08\n')
    const v = (k: string) => cfg.settings.get(k)?.value
    expect(v('a')).toMatchObject({kind: 'number', text: '0x1f', value: 31})
    expect(v('b')).toMatchObject({kind: 'number', text: '010', value: 8})
    expect(v('c')).toMatchObject({kind: 'number', text: '0', value: 0})
    // xl lexes these as numbers too and only fails when they are read as integers
    expect(v('d')).toMatchObject({kind: 'number', text: '12ab', value: null})
    expect(v('e')).toMatchObject({kind: 'number', text: '08', value: null})
  })

  it('separates settings by newlines or semicolons, and allows empty statements', () => {
    const cfg = parseXlConfig(';\nname="h0"; type="hvm"\n\n;;memory=8;\nvcpus=1')
    expect(settings(cfg)).toEqual({name: 'h0', type: 'hvm', memory: {n: '8'}, vcpus: {n: '1'}})
  })

  it('skips comments, also inside lists and right after a value', () => {
    const cfg = parseXlConfig('# header\nname = "x" # the name\ndisk = [ # disks\n  "a", # first\n  "b"\n] # end\n')
    expect(settings(cfg)).toEqual({name: 'x', disk: ['a', 'b']})
  })

  it('lets lists span lines, end with a comma, be empty and nest', () => {
    const cfg = parseXlConfig('a = [\n  1,\n  "two",\n]\nb = []\nc = [ [1, 2], [], ["x", [3]] ]\nd = [ 1\n , 2 ]\n')
    expect(settings(cfg)).toEqual({
      a: [{n: '1'}, 'two'],
      b: [],
      c: [[{n: '1'}, {n: '2'}], [], ['x', [{n: '3'}]]],
      d: [{n: '1'}, {n: '2'}],
    })
  })

  it('decodes the escapes xl decodes, in single and double quotes', () => {
    const cfg = parseXlConfig(String.raw`a = "q\"s\'b\\n\nt\tr\r"` + '\n' + String.raw`b = 'it\'s "x"'` + '\n' + String.raw`c = "\a\b\f\v"` + '\n')
    expect(getString(cfg, 'a')).toBe(`q"s'b\\n\nt\tr\r`)
    expect(getString(cfg, 'b')).toBe(`it's "x"`)
    expect(getString(cfg, 'c')).toBe('\x07\b\f\v')
  })

  it('keeps raw tabs and other bytes inside quotes', () => {
    expect(getString(parseXlConfig('a = "x\ty é"\n'), 'a')).toBe('x\ty é')
  })

  it("drops octal escapes with a warning, as xl's string reader does", () => {
    const cfg = parseXlConfig(String.raw`path = "/a\101b"` + '\n', {file: 'vm.cfg'})
    expect(getString(cfg, 'path')).toBe('/ab')
    expect(cfg.warnings).toEqual([
      {
        file: 'vm.cfg',
        line: 1,
        column: 11,
        message: String.raw`octal escape '\101' is dropped from the string: xl discards octal escapes instead of decoding them`,
      },
    ])
  })

  it('reads the last setting of a file without a final newline', () => {
    expect(settings(parseXlConfig('a = 1\nb = [2]'))).toEqual({a: {n: '1'}, b: [{n: '2'}]})
    expect(settings(parseXlConfig(''))).toEqual({})
    expect(settings(parseXlConfig('# only a comment\n'))).toEqual({})
  })
})

describe('repeated settings', () => {
  it('keeps the last value, ordered by the last assignment', () => {
    const cfg = parseXlConfig('memory = 512\nname = "a"\nmemory = 1024\n')
    expect(settings(cfg)).toEqual({name: 'a', memory: {n: '1024'}})
    expect([...cfg.settings.keys()]).toEqual(['name', 'memory'])
    expect(cfg.settings.get('memory')?.pos.line).toBe(3)
    expect(cfg.assignments.map(a => a.key)).toEqual(['memory', 'name', 'memory'])
  })

  it('+= appends strings to strings and lists to lists', () => {
    const cfg = parseXlConfig('extra = "console=hvc0"\nextra += " quiet"\ndisk = [ "a" ]\ndisk += [ "b", "c" ]\nnew += [ 1 ]\n')
    expect(settings(cfg)).toEqual({extra: 'console=hvc0 quiet', disk: ['a', 'b', 'c'], new: [{n: '1'}]})
    expect(cfg.settings.get('disk')?.op).toBe('+=')
  })
})

describe('overrides from the command line', () => {
  it('are read with the same grammar and applied after the file', () => {
    const file = parseXlConfig('memory = 512\ndisk = [ "a" ]\nname = "vm"\n', {file: 'vm.cfg'})
    const over = parseOverrides(['memory=2048', 'disk+=["b"]', 'extra="quiet"'])
    const cfg = mergeConfigs(file, over)
    expect(settings(cfg)).toEqual({name: 'vm', memory: {n: '2048'}, disk: ['a', 'b'], extra: 'quiet'})
    expect(cfg.settings.get('memory')).toMatchObject({file: 'command line', pos: {line: 1, column: 1}})
    expect(cfg.settings.get('extra')).toMatchObject({file: 'command line', pos: {line: 3, column: 1}})
  })
})

describe('accessors', () => {
  const cfg = parseXlConfig(
    [
      'name = "vm"',
      'memory = "0x400"',
      'vcpus = 2',
      'pae = 1',
      'acpi = 0',
      'hap = 7',
      'disk = [ "a", 2 ]',
      'nested = [ [ "x" ] ]',
      'big = 99999999999999999999',
      'pad = " 12"',
      '',
    ].join('\n'),
    {file: 'vm.cfg'},
  )

  it('read strings, integers, booleans and lists; absent is undefined', () => {
    expect(getString(cfg, 'name')).toBe('vm')
    expect(getString(cfg, 'vcpus')).toBe('2')
    expect(getInt(cfg, 'memory')).toBe(1024)
    expect(getInt(cfg, 'vcpus', {min: 1, max: 8})).toBe(2)
    expect(getInt(cfg, 'pad')).toBe(12)
    expect(getBool(cfg, 'pae')).toBe(true)
    expect(getBool(cfg, 'acpi')).toBe(false)
    expect(getBool(cfg, 'hap')).toBe(true)
    expect(getStringList(cfg, 'disk')).toEqual(['a', '2'])
    expect(getList(cfg, 'nested')).toHaveLength(1)
    for (const f of [getString, getInt, getBool, getList, getStringList]) expect(f(cfg, 'absent')).toBeUndefined()
  })

  it("name the setting's line:column when the type is wrong", () => {
    expect(errorOf(() => getString(cfg, 'disk')).message).toBe("vm.cfg:7:8: 'disk' is a list but should be a single value")
    expect(errorOf(() => getList(cfg, 'name')).message).toBe("vm.cfg:1:8: 'name' is a single value but should be a list")
    expect(errorOf(() => getInt(cfg, 'name')).message).toBe(
      `vm.cfg:1:8: 'name' = "vm" is not a number (decimal, octal with a leading 0, or hex with 0x)`,
    )
    expect(errorOf(() => getBool(cfg, 'disk')).code).toBe('wrong-type')
    expect(errorOf(() => getStringList(cfg, 'nested')).message).toBe(
      "vm.cfg:8:12: element 0 of 'nested' is a list but should be a single value",
    )
    expect(errorOf(() => getInt(cfg, 'big')).message).toBe(`vm.cfg:9:7: 'big' = "99999999999999999999" is out of range`)
    expect(errorOf(() => getInt(cfg, 'vcpus', {min: 4})).message).toBe("vm.cfg:3:9: 'vcpus' = 2 is smaller than the minimum 4")
    expect(errorOf(() => getInt(cfg, 'vcpus', {max: 1})).message).toBe("vm.cfg:3:9: 'vcpus' = 2 is greater than the maximum 1")
  })

  it('parseCInteger follows strtol(s, NULL, 0)', () => {
    expect(parseCInteger('42')).toEqual({ok: true, value: 42n})
    expect(parseCInteger('-0x10')).toEqual({ok: true, value: -16n})
    expect(parseCInteger('0777')).toEqual({ok: true, value: 511n})
    expect(parseCInteger('0')).toEqual({ok: true, value: 0n})
    expect(parseCInteger('9223372036854775807')).toEqual({ok: true, value: 2n ** 63n - 1n})
    expect(parseCInteger('9223372036854775808')).toEqual({ok: false, reason: 'range'})
    for (const bad of ['', '08', '0x', '1 ', '1.5', '12ab', 'ten']) expect(parseCInteger(bad)).toEqual({ok: false, reason: 'invalid'})
  })
})
