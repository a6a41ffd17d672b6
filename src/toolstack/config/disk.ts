/**
 * Disk specification strings, xl-disk-configuration(5): `disk = [ 'DISKSPEC', ... ]`.
 *
 * A spec is a comma-separated series of `key=value` parameters, flags and positional parameters
 * (target, format, vdev, access, in that order), plus the deprecated `prefix:` forms (`phy:`,
 * `raw:`, `tap:aio:`, ...). `target=` takes the whole rest of the spec, commas included.
 *
 * xl splits a spec with a flex scanner: at each point the rule matching the longest text wins, the
 * earlier rule on a tie, and the deprecated-prefix rules count the rest of the line as matched so
 * they beat a positional parameter. The scanner below applies the same rules in the same order, so
 * odd specs split the same way (`colo,` is the flag, `colocated,` a positional parameter).
 *
 * Where this is stricter than xl: `colo-port` must be a decimal port number (xl takes whatever atoi
 * makes of it, as long as that is not 0); an empty `vdev=` is refused here rather than later by
 * libxl; and a `target=` followed by what reads as another parameter is refused, since xl would
 * silently make that parameter part of the path.
 */
import {configFail, show, type ConfigWarning} from './errors.js'
import {originFile, specPos, type SpecOptions, type SpecOrigin} from './spec-origin.js'

export type DiskFormat = 'unknown' | 'qcow' | 'qcow2' | 'vhd' | 'raw' | 'empty' | 'qed'
export type DiskBackend = 'unknown' | 'phy' | 'tap' | 'qdisk' | 'standalone'
export type DiskSpecification = 'unknown' | 'xen' | 'virtio'

/** A parsed disk: the fields of libxl's libxl_device_disk that a spec can set, under libxl's names. */
export interface DiskSpec {
  /** The spec as given. */
  readonly spec: string
  /** The target: a path, or what `script` makes of it. Absent for an empty removable drive. */
  readonly pdev_path?: string
  readonly vdev: string
  readonly backend: DiskBackend
  /** `raw` unless given; `empty` for a cdrom without target. */
  readonly format: DiskFormat
  readonly script?: string
  /** `backend=`: the backend domain's name. */
  readonly backend_domname?: string
  readonly removable: 0 | 1
  readonly readwrite: 0 | 1
  readonly is_cdrom: 0 | 1
  readonly direct_io_safe: boolean
  /** `discard` / `no-discard`; absent = libxl's default. */
  readonly discard_enable?: boolean
  readonly specification: DiskSpecification
  /** `colo` / `no-colo`; absent = default (off). */
  readonly colo_enable?: boolean
  readonly colo_host?: string
  readonly colo_port?: number
  readonly colo_export?: string
  readonly active_disk?: string
  readonly hidden_disk?: string
  readonly trusted?: boolean
  readonly grant_usage?: boolean
}

/** Parameter names and flags of the spec language (used to spot parameters swallowed by `target=`). */
const KEYS = [
  'format', 'devtype', 'access', 'backend', 'backendtype', 'specification', 'vdev', 'script', 'colo-host',
  'colo-port', 'colo-export', 'active-disk', 'hidden-disk', 'target', 'grant_usage',
]
const FLAGS = ['cdrom', 'direct-io-safe', 'discard', 'no-discard', 'colo', 'no-colo', 'trusted', 'untrusted']

const FORMATS: Record<string, DiskFormat> = {
  '': 'raw',
  raw: 'raw',
  qcow: 'qcow',
  qcow2: 'qcow2',
  vhd: 'vhd',
  empty: 'empty',
  qed: 'qed',
}
const BACKENDS: Record<string, DiskBackend> = {phy: 'phy', tap: 'tap', qdisk: 'qdisk', standalone: 'standalone'}
const SPECIFICATIONS: Record<string, DiskSpecification> = {xen: 'xen', virtio: 'virtio'}

type StringField = 'pdev_path' | 'vdev' | 'script' | 'backend_domname' | 'colo_host' | 'colo_export' | 'active_disk' | 'hidden_disk'

interface Work {
  pdev_path?: string
  vdev?: string
  backend: DiskBackend
  format: DiskFormat
  script?: string
  backend_domname?: string
  removable: 0 | 1
  readwrite: 0 | 1
  is_cdrom: 0 | 1
  direct_io_safe: boolean
  discard_enable?: boolean
  specification: DiskSpecification
  colo_enable?: boolean
  colo_host?: string
  colo_port?: number
  colo_export?: string
  active_disk?: string
  hidden_disk?: string
  trusted?: boolean
  grant_usage?: boolean
}

/** One scanner rule: how much text it matches at an offset (with its trailing context) and its action. */
interface Rule {
  match(s: string, i: number): {len: number; take: number} | null
  act(p: DiskParser, text: string, at: number): void
}

export function parseDiskSpec(spec: string, options: SpecOptions = {}): DiskSpec {
  return new DiskParser(spec, options.origin, options.warnings).run()
}

class DiskParser {
  readonly d: Work = {
    backend: 'unknown',
    format: 'unknown',
    removable: 0,
    readwrite: 1,
    is_cdrom: 0,
    direct_io_safe: false,
    specification: 'unknown',
  }
  accessSet = false
  hadPrefix = false

  constructor(
    readonly spec: string,
    private readonly origin: SpecOrigin | undefined,
    private readonly warnings: ConfigWarning[] | undefined,
  ) {}

  run(): DiskSpec {
    const s = this.spec
    let i = 0
    while (i < s.length) {
      let best: {rule: Rule; len: number; take: number} | undefined
      for (const rule of RULES) {
        const m = rule.match(s, i)
        if (m && (!best || m.len > best.len)) best = {rule, ...m}
      }
      if (!best) this.fail(i, `bad disk syntax near ${show(s.slice(i, lineEnd(s, i)))}`)
      best.rule.act(this, s.slice(i, i + best.take), i)
      i += best.take
    }
    return this.finish()
  }

  private finish(): DiskSpec {
    const d = this.d
    if (d.format === 'unknown') d.format = 'raw'
    if (d.is_cdrom) {
      d.removable = 1
      d.readwrite = 0
      if (!d.pdev_path) d.format = 'empty'
    }
    if (d.vdev === undefined || d.vdev === '') this.fail(0, 'no vdev specified')
    if (d.pdev_path === undefined && !d.removable) this.fail(0, 'no target specified (and device not removable)')
    if (d.colo_enable) {
      const missing = (
        [
          ['colo-host', d.colo_host],
          ['colo-port', d.colo_port],
          ['colo-export', d.colo_export],
          ['active-disk', d.active_disk],
          ['hidden-disk', d.hidden_disk],
        ] as const
      )
        .filter(([, v]) => v === undefined || v === '')
        .map(([k]) => k)
      if (missing.length > 0) {
        this.warn(0, `colo is set but ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} missing: COLO will not replicate this disk`)
      }
    }
    return {spec: this.spec, ...d, vdev: d.vdev}
  }

  // ---- actions, as xl's scanner performs them

  saveString(what: string, field: StringField, value: string, at: number): void {
    const cur = this.d[field]
    if (cur !== undefined && cur !== '') this.fail(at, `${what} respecified: ${show(value)} (already ${show(cur)})`)
    this.d[field] = value
  }

  setFormat(value: string, at: number): void {
    const f = FORMATS[value]
    if (!f) this.fail(at, `unknown value for format: ${show(value)}`)
    if (this.d.format !== 'unknown' && this.d.format !== f) this.fail(at, `format respecified: ${show(value)} (already ${this.d.format})`)
    this.d.format = f
  }

  setAccess(value: string, at: number): void {
    if (value === 'r' || value === 'ro') this.d.readwrite = 0
    else if (value === 'rw' || value === 'w' || value === '') this.d.readwrite = 1
    else this.fail(at, `unknown value for access: ${show(value)}`)
  }

  setBackend(value: string, at: number): void {
    const b = BACKENDS[value]
    if (!b) this.fail(at, `unknown value for backendtype: ${show(value)}`)
    if (this.d.backend !== 'unknown' && this.d.backend !== b) this.fail(at, `backendtype respecified: ${show(value)} (already ${this.d.backend})`)
    this.d.backend = b
  }

  setSpecification(value: string, at: number): void {
    const v = SPECIFICATIONS[value]
    if (!v) this.fail(at, `unknown value for specification: ${show(value)}`)
    if (this.d.specification !== 'unknown' && this.d.specification !== v) {
      this.fail(at, `specification respecified: ${show(value)} (already ${this.d.specification})`)
    }
    this.d.specification = v
  }

  setColoPort(value: string, at: number): void {
    const port = /^[0-9]+$/.test(value) ? Number(value) : NaN
    if (!(port >= 1 && port <= 65535)) this.fail(at, `unknown value for colo_port: ${show(value)} (expected a port number, 1-65535)`)
    this.d.colo_port = port
  }

  setTarget(value: string, at: number): void {
    // Report a parameter that the greedy target= would swallow, rather than make it part of the path.
    for (let k = value.indexOf(','); k >= 0; k = value.indexOf(',', k + 1)) {
      const rest = value.slice(k + 1).replace(/^[ \t\n]+/, '')
      const param = paramAt(rest)
      if (param !== undefined) {
        const off = at + value.length - rest.length
        this.fail(
          off,
          `target= must be the last parameter: it takes the rest of the spec, so ${show(param)} would become part of the target`,
        )
      }
    }
    this.saveString('target', 'pdev_path', value, at)
  }

  /** `<vdev>:<devtype>`, the old way to write a cdrom. False (and nothing done) without a colon. */
  vdevAndDevtype(text: string, at: number): boolean {
    const colon = text.lastIndexOf(':')
    if (colon < 0) return false
    this.saveString('vdev', 'vdev', text.slice(0, colon), at)
    const type = text.slice(colon + 1)
    if (type === 'cdrom') this.d.is_cdrom = 1
    else if (type === 'disk') this.d.is_cdrom = 0
    else this.fail(at + colon + 1, `unknown deprecated type: ${show(type)}`)
    return true
  }

  positional(text: string, at: number): void {
    const d = this.d
    if (d.pdev_path === undefined) this.saveString('target', 'pdev_path', text, at)
    else if (!this.hadPrefix && d.format === 'unknown') {
      if (d.pdev_path === '' && this.vdevAndDevtype(text, at)) d.format = 'empty'
      else this.setFormat(text, at)
    } else if (d.vdev === undefined) {
      if (!this.vdevAndDevtype(text, at)) this.saveString('vdev', 'vdev', text, at)
    } else if (!this.accessSet) {
      this.accessSet = true
      this.setAccess(text, at)
    } else this.fail(at, `too many positional parameters: ${show(text)}`)
  }

  fail(offset: number, problem: string): never {
    configFail('disk-spec', originFile(this.origin), specPos(this.origin, offset), `${problem} in disk spec ${show(this.spec)}`, this.origin?.key)
  }

  private warn(offset: number, problem: string): void {
    const w = {file: originFile(this.origin), ...specPos(this.origin, offset), message: `${problem} (disk spec ${show(this.spec)})`, key: this.origin?.key}
    this.warnings?.push(w)
  }
}

function paramAt(rest: string): string | undefined {
  for (const k of KEYS) if (rest.startsWith(`${k}=`)) return rest.slice(0, endOfParam(rest))
  for (const f of FLAGS) if (rest.startsWith(f) && (rest.length === f.length || rest[f.length] === ',')) return f
  return undefined
}

function endOfParam(s: string): number {
  const c = s.indexOf(',')
  return c < 0 ? s.length : c
}

/** End of the text a flex `.*` matches from i: up to the next newline. */
function lineEnd(s: string, i: number): number {
  const n = s.indexOf('\n', i)
  return n < 0 ? s.length : n
}

function stripComma(t: string): string {
  return t.endsWith(',') ? t.slice(0, -1) : t
}

function sticky(re: RegExp, s: string, i: number): string | null {
  const y = new RegExp(re.source, 'y')
  y.lastIndex = i
  const m = y.exec(s)
  return m ? m[0] : null
}

/** `key=[^,]*,?`: the value runs to the next comma; the comma is eaten. */
function keyValue(key: string, set: (p: DiskParser, value: string, at: number) => void): Rule {
  return {
    match(s, i) {
      if (!s.startsWith(`${key}=`, i)) return null
      const end = s.indexOf(',', i)
      const len = end < 0 ? s.length - i : end - i + 1
      return {len, take: len}
    },
    act(p, text, at) {
      set(p, stripComma(text).slice(key.length + 1), at + key.length + 1)
    },
  }
}

/** `word,?`: a fixed word and an optional comma. */
function word(w: string, act: (p: DiskParser) => void): Rule {
  return {
    match(s, i) {
      if (!s.startsWith(w, i)) return null
      const len = w.length + (s[i + w.length] === ',' ? 1 : 0)
      return {len, take: len}
    },
    act: p => act(p),
  }
}

/** A deprecated `prefix:`: matches the prefix, but counts the rest of the line as matched. */
function prefix(re: RegExp, act: (p: DiskParser, name: string, at: number) => void): Rule {
  return {
    match(s, i) {
      const m = sticky(re, s, i)
      if (m === null) return null
      return {len: lineEnd(s, i + m.length) - i, take: m.length}
    },
    act(p, text, at) {
      p.hadPrefix = true
      act(p, text.slice(0, -1), at)
    },
  }
}

const RULES: Rule[] = [
  {
    // blanks before a parameter are skipped
    match(s, i) {
      const m = sticky(/[ \t\n]+/, s, i)
      if (m === null) return null
      const j = i + m.length
      return {len: j < s.length ? lineEnd(s, j) - i : m.length, take: m.length}
    },
    act() {},
  },
  keyValue('format', (p, v, at) => p.setFormat(v, at)),
  word('cdrom', p => (p.d.is_cdrom = 1)),
  word('devtype=cdrom', p => (p.d.is_cdrom = 1)),
  word('devtype=disk', p => (p.d.is_cdrom = 0)),
  keyValue('devtype', (p, v, at) => p.fail(at, `unknown value for devtype: ${show(v)}`)),
  keyValue('access', (p, v, at) => p.setAccess(v, at)),
  keyValue('backend', (p, v, at) => p.saveString('backend', 'backend_domname', v, at)),
  keyValue('backendtype', (p, v, at) => p.setBackend(v, at)),
  keyValue('specification', (p, v, at) => p.setSpecification(v, at)),
  keyValue('vdev', (p, v, at) => p.saveString('vdev', 'vdev', v, at)),
  keyValue('script', (p, v, at) => p.saveString('script', 'script', v, at)),
  word('direct-io-safe', p => (p.d.direct_io_safe = true)),
  word('discard', p => (p.d.discard_enable = true)),
  word('no-discard', p => (p.d.discard_enable = false)),
  word('colo', p => (p.d.colo_enable = true)),
  word('no-colo', p => (p.d.colo_enable = false)),
  keyValue('colo-host', (p, v, at) => p.saveString('colo-host', 'colo_host', v, at)),
  keyValue('colo-port', (p, v, at) => p.setColoPort(v, at)),
  keyValue('colo-export', (p, v, at) => p.saveString('colo-export', 'colo_export', v, at)),
  keyValue('active-disk', (p, v, at) => p.saveString('active-disk', 'active_disk', v, at)),
  keyValue('hidden-disk', (p, v, at) => p.saveString('hidden-disk', 'hidden_disk', v, at)),
  word('trusted', p => (p.d.trusted = true)),
  word('untrusted', p => (p.d.trusted = false)),
  word('grant_usage=1', p => (p.d.grant_usage = true)),
  word('grant_usage=0', p => (p.d.grant_usage = false)),
  {
    // target= takes the rest of the line, commas and all
    match(s, i) {
      if (!s.startsWith('target=', i)) return null
      const len = lineEnd(s, i) - i
      return {len, take: len}
    },
    act(p, text, at) {
      p.setTarget(stripComma(text).slice('target='.length), at + 'target='.length)
    },
  },
  {
    // any other key=value
    match(s, i) {
      const m = sticky(/[a-z][-a-z0-9]*=[^,],?/, s, i)
      return m === null ? null : {len: m.length, take: m.length}
    },
    act(p, _text, at) {
      const end = p.spec.indexOf(',', at)
      p.fail(at, `unknown parameter ${show(p.spec.slice(at, end < 0 ? p.spec.length : end))}`)
    },
  },
  prefix(/(raw|qcow2?|vhd):/, (p, name, at) => p.setFormat(name, at)),
  prefix(/(iscsi|e?nbd|drbd):/, (p, name, at) => p.saveString('script', 'script', `block-${name}`, at)),
  prefix(/tapdisk:/, () => {}),
  prefix(/tap2?:/, () => {}),
  prefix(/aio:/, () => {}),
  prefix(/ioemu:/, () => {}),
  prefix(/file:/, () => {}),
  prefix(/phy:/, () => {}),
  {
    // any other word followed by ':' and not by a letter or digit: an unknown prefix
    match(s, i) {
      const m = sticky(/[a-z][a-z0-9]*:/, s, i)
      if (m === null) return null
      const j = i + m.length
      const next = s[j]
      if (next !== undefined && !/[a-z0-9]/.test(next)) return {len: lineEnd(s, j + 1) - i, take: m.length}
      return {len: m.length, take: m.length}
    },
    act(p, text, at) {
      p.fail(at, `unknown deprecated disk prefix ${show(text)}`)
    },
  },
  {
    // a positional parameter: text without '=' or ',', then an optional comma (or just a comma)
    match(s, i) {
      const run = (sticky(/[^=,]*/, s, i) ?? '').length
      if (s[i + run] === ',') return {len: run + 1, take: run + 1}
      return run > 0 ? {len: run, take: run} : null
    },
    act(p, text, at) {
      p.positional(stripComma(text), at)
    },
  },
]
