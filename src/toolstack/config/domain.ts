/**
 * From a parsed xl.cfg to the domain config JSON libxl keeps for a domain (`xl list -l`, the config
 * in a savefile or migration stream): libxl_domain_config with libxl's field names and encodings
 * (enums as lowercase names, defbools as "True"/"False", bitmaps as lists of set bits, fields at
 * their default left out), for the settings this toolstack uses so far, plus our simulator's
 * settings in `sim`.
 *
 * The rules are xl's (parse_config_data): `type`, or the deprecated `builder`, picks the guest type
 * and a prefix of the name will do (`type="h"` is hvm); PV is the default; `name` is mandatory;
 * `memory` and `maxmem` are MiB, one defaulting to the other and both to 32 MiB (libxl's default);
 * `vcpus` defaults to 1 and `maxvcpus` to `vcpus`; `cmdline`, else `root` and `extra`, make the
 * kernel command line. Where xl prints a warning and ignores a malformed number, this is an error.
 */
import {randomUUID} from 'node:crypto'
import {getAtomList, getInt, getSetting, getString} from './access.js'
import {configFail, show, type ConfigWarning} from './errors.js'
import {parseDiskSpec, type DiskSpec} from './disk.js'
import {parseVifSpec, VIF_COLO_KEYS, type VifSpec} from './vif.js'
import {mergeConfigs, parseOverrides, type ParsedConfig, type XlSetting} from './xl-cfg.js'

export type DomainType = 'hvm' | 'pv' | 'pvh'
export type ShutdownAction =
  | 'destroy'
  | 'restart'
  | 'restart_rename'
  | 'preserve'
  | 'coredump_destroy'
  | 'coredump_restart'
  | 'soft_reset'
export type LibxlDefbool = 'True' | 'False'

export interface LibxlDiskJson {
  pdev_path?: string
  vdev: string
  backend?: Exclude<DiskSpec['backend'], 'unknown'>
  format: Exclude<DiskSpec['format'], 'unknown'>
  script?: string
  backend_domname?: string
  removable?: 1
  readwrite?: 1
  is_cdrom?: 1
  direct_io_safe?: true
  discard_enable?: LibxlDefbool
  specification?: Exclude<DiskSpec['specification'], 'unknown'>
  colo_enable?: LibxlDefbool
  colo_host?: string
  colo_port?: number
  colo_export?: string
  active_disk?: string
  hidden_disk?: string
  trusted?: LibxlDefbool
  grant_usage?: LibxlDefbool
}

export type LibxlNicJson = Omit<VifSpec, 'trusted'> & {trusted?: LibxlDefbool}

/** Settings of the simulated host (`hypervisor/sim`), kept out of libxl's structures. */
export interface SimSettings {
  /** Pages the guest workload dirties per second. */
  sim_dirty_rate?: number
  /** Size of the memory the workload writes to, MiB. */
  sim_working_set?: number
  /** Seed of the workload's PRNG. */
  sim_seed?: number
  /** How often host-local randomness makes primary and secondary diverge (0 = never). */
  sim_nondeterminism?: number
  /** Packets the guest emits per second. */
  sim_packet_rate?: number
  /** Disk writes per second, to the first COLO disk through the device model. */
  sim_disk_rate?: number
}

export interface DomainConfig {
  c_info: {
    type: DomainType
    name: string
    uuid: string
    pool_name?: string
  }
  b_info: {
    max_vcpus: number
    avail_vcpus: number[]
    max_memkb: number
    target_memkb: number
    kernel?: string
    ramdisk?: string
    cmdline?: string
    bootloader?: string
    'type.hvm'?: Record<string, never>
    'type.pv'?: Record<string, never>
    'type.pvh'?: Record<string, never>
  }
  disks: LibxlDiskJson[]
  nics: LibxlNicJson[]
  on_poweroff: ShutdownAction
  on_reboot: ShutdownAction
  on_watchdog: ShutdownAction
  on_crash: ShutdownAction
  on_soft_reset: ShutdownAction
  sim: SimSettings
}

export interface DomainConfigOptions {
  /** Makes the uuid when the config has none (xl makes a random one). */
  uuid?: () => string
  /** Warnings of the config, its overrides, disks, vifs and the builder are pushed here. */
  warnings?: ConfigWarning[]
}

/** Integers go up to this many MiB of memory: anything in kiB must stay a safe integer. */
const MAX_MIB = Math.floor(Number.MAX_SAFE_INTEGER / 1024)
/** More vCPUs than any Xen accepts; keeps avail_vcpus small when a config is wrong. */
const MAX_VCPUS = 4096
const DEFAULT_MEMKB = 32 * 1024

const ACTIONS: Record<string, ShutdownAction> = {
  destroy: 'destroy',
  restart: 'restart',
  'rename-restart': 'restart_rename',
  preserve: 'preserve',
  'coredump-destroy': 'coredump_destroy',
  'coredump-restart': 'coredump_restart',
  'soft-reset': 'soft_reset',
}

/**
 * Builds the domain config. `overrides` are `key=value` arguments given after the config file
 * (or an already parsed config): they are read with the same grammar and applied after the file.
 */
export function toDomainConfig(
  parsed: ParsedConfig,
  overrides: readonly string[] | ParsedConfig = [],
  options: DomainConfigOptions = {},
): DomainConfig {
  const cfg = isArgs(overrides)
    ? overrides.length === 0
      ? parsed
      : mergeConfigs(parsed, parseOverrides(overrides))
    : mergeConfigs(parsed, overrides)
  const warnings: ConfigWarning[] = [...cfg.warnings]
  const warn = (s: XlSetting, message: string): void => {
    warnings.push({file: s.file, ...s.value.pos, message, key: s.key})
  }

  const type = domainType(cfg)
  const name = getString(cfg, 'name')
  if (name === undefined) configFail('missing', cfg.file, undefined, 'Domain name must be specified.', 'name')
  if (name === '') failAt(cfg, 'name', 'bad-value', 'the domain name must not be empty')

  const c_info: DomainConfig['c_info'] = {type, name, uuid: uuidOf(cfg, options)}
  const pool = getString(cfg, 'pool')
  if (pool !== undefined) c_info.pool_name = pool

  // memory
  const memory = getInt(cfg, 'memory', {min: 0, max: MAX_MIB})
  const maxmem = getInt(cfg, 'maxmem', {min: 0, max: MAX_MIB})
  const max_memkb = maxmem !== undefined ? maxmem * 1024 : memory !== undefined ? memory * 1024 : DEFAULT_MEMKB
  const target_memkb = memory !== undefined ? memory * 1024 : max_memkb
  if (target_memkb > max_memkb) {
    failAt(cfg, 'memory', 'out-of-range', `memory (${memory} MiB) is more than maxmem (${maxmem} MiB)`)
  }

  // vcpus
  const vcpus = Math.max(1, getInt(cfg, 'vcpus', {min: 0, max: MAX_VCPUS}) ?? 1)
  const max_vcpus = getInt(cfg, 'maxvcpus', {min: 0, max: MAX_VCPUS}) || vcpus
  if (max_vcpus < vcpus) failAt(cfg, 'maxvcpus', 'out-of-range', `maxvcpus (${max_vcpus}) is less than vcpus (${vcpus})`)

  const b_info: DomainConfig['b_info'] = {
    max_vcpus,
    avail_vcpus: Array.from({length: vcpus}, (_, i) => i),
    max_memkb,
    target_memkb,
  }
  for (const key of ['kernel', 'ramdisk', 'bootloader'] as const) {
    const v = getString(cfg, key)
    if (v !== undefined) b_info[key] = v
  }
  const cmdline = kernelCmdline(cfg, warn)
  if (cmdline !== undefined) b_info.cmdline = cmdline
  b_info[`type.${type}`] = {}

  const disks = (getAtomList(cfg, 'disk') ?? []).map(item => {
    const file = (getSetting(cfg, 'disk') as XlSetting).file
    return diskToJson(parseDiskSpec(item.kind === 'string' ? item.value : item.text, {origin: {file, value: item, key: 'disk'}, warnings}))
  })
  const nics = (getAtomList(cfg, 'vif') ?? []).map((item, i) => {
    const file = (getSetting(cfg, 'vif') as XlSetting).file
    const spec = item.kind === 'string' ? item.value : item.text
    return nicToJson(parseVifSpec(spec, {origin: {file, value: item, key: 'vif'}, devid: i, warnings}).nic)
  })

  const config: DomainConfig = {
    c_info,
    b_info,
    disks,
    nics,
    on_poweroff: action(cfg, 'on_poweroff', 'destroy'),
    on_reboot: action(cfg, 'on_reboot', 'restart'),
    on_watchdog: action(cfg, 'on_watchdog', 'destroy'),
    on_crash: action(cfg, 'on_crash', 'destroy'),
    on_soft_reset: action(cfg, 'on_soft_reset', 'soft-reset'),
    sim: simSettings(cfg),
  }
  options.warnings?.push(...warnings)
  return config
}

function isArgs(x: readonly string[] | ParsedConfig): x is readonly string[] {
  return Array.isArray(x)
}

/** type= (a prefix of hvm, pv or pvh), or the deprecated builder= (a prefix of hvm or generic). */
function domainType(cfg: ParsedConfig): DomainType {
  let type: DomainType | undefined
  const t = getString(cfg, 'type')
  if (t !== undefined) {
    if ('hvm'.startsWith(t)) type = 'hvm'
    else if ('pv'.startsWith(t)) type = 'pv'
    else if ('pvh'.startsWith(t)) type = 'pvh'
    else failAt(cfg, 'type', 'bad-value', `Invalid domain type ${show(t)} (expected hvm, pv or pvh)`)
  }
  const b = getString(cfg, 'builder')
  if (b !== undefined) {
    let builder: DomainType
    if ('hvm'.startsWith(b)) builder = 'hvm'
    else if ('generic'.startsWith(b)) builder = 'pv'
    else return failAt(cfg, 'builder', 'bad-value', `Invalid domain type ${show(b)} for builder (expected hvm or generic)`)
    if (type !== undefined && type !== builder) failAt(cfg, 'builder', 'bad-value', `Contradicting "builder" and "type" options specified.`)
    type = builder
  }
  return type ?? 'pv'
}

function uuidOf(cfg: ParsedConfig, options: DomainConfigOptions): string {
  const u = getString(cfg, 'uuid')
  if (u === undefined) return (options.uuid ?? randomUUID)()
  if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(u)) {
    failAt(cfg, 'uuid', 'bad-value', `Failed to parse UUID: ${show(u)}`)
  }
  return u.toLowerCase()
}

function kernelCmdline(cfg: ParsedConfig, warn: (s: XlSetting, message: string) => void): string | undefined {
  const cmdline = getString(cfg, 'cmdline')
  const root = getString(cfg, 'root')
  const extra = getString(cfg, 'extra')
  if (cmdline !== undefined) {
    if (root !== undefined || extra !== undefined) {
      warn(getSetting(cfg, 'cmdline') as XlSetting, 'ignoring root= and extra= in favour of cmdline=')
    }
    return cmdline
  }
  if (root !== undefined && extra !== undefined) return `root=${root} ${extra}`
  if (root !== undefined) return `root=${root}`
  return extra
}

function action(cfg: ParsedConfig, key: string, dflt: string): ShutdownAction {
  const v = getString(cfg, key) ?? dflt
  const a = ACTIONS[v]
  if (!a) failAt(cfg, key, 'bad-value', `Unknown ${key} action ${show(v)} specified (expected ${Object.keys(ACTIONS).join(', ')})`)
  return a
}

function simSettings(cfg: ParsedConfig): SimSettings {
  const sim: SimSettings = {}
  for (const key of ['sim_dirty_rate', 'sim_working_set', 'sim_seed', 'sim_packet_rate', 'sim_disk_rate'] as const) {
    const v = getInt(cfg, key, {min: 0})
    if (v !== undefined) sim[key] = v
  }
  // A probability is not an integer, and xl.cfg numbers are: allow a quoted decimal as well.
  const s = getSetting(cfg, 'sim_nondeterminism')
  if (s) {
    const text = getString(cfg, 'sim_nondeterminism') as string
    const n = s.value.kind === 'number' ? getInt(cfg, 'sim_nondeterminism', {min: 0}) : /^[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : NaN
    if (n === undefined || !Number.isFinite(n)) {
      failAt(cfg, 'sim_nondeterminism', 'bad-number', `'sim_nondeterminism' = ${JSON.stringify(text)} is not a non-negative number`)
    }
    sim.sim_nondeterminism = n
  }
  return sim
}

function failAt(cfg: ParsedConfig, key: string, code: 'bad-value' | 'out-of-range' | 'bad-number', detail: string): never {
  const s = getSetting(cfg, key)
  configFail(code, s?.file ?? cfg.file, s?.value.pos, detail, key)
}

const defbool = (b: boolean | undefined): LibxlDefbool | undefined => (b === undefined ? undefined : b ? 'True' : 'False')

/** A disk as libxl writes it in JSON: defaults left out. */
export function diskToJson(d: DiskSpec): LibxlDiskJson {
  const j: LibxlDiskJson = {
    pdev_path: d.pdev_path,
    vdev: d.vdev,
    backend: d.backend === 'unknown' ? undefined : d.backend,
    format: d.format === 'unknown' ? 'raw' : d.format,
    script: d.script,
    backend_domname: d.backend_domname,
    removable: d.removable ? 1 : undefined,
    readwrite: d.readwrite ? 1 : undefined,
    is_cdrom: d.is_cdrom ? 1 : undefined,
    direct_io_safe: d.direct_io_safe ? true : undefined,
    discard_enable: defbool(d.discard_enable),
    specification: d.specification === 'unknown' ? undefined : d.specification,
    colo_enable: defbool(d.colo_enable),
    colo_host: d.colo_host,
    colo_port: d.colo_port,
    colo_export: d.colo_export,
    active_disk: d.active_disk,
    hidden_disk: d.hidden_disk,
    trusted: defbool(d.trusted),
    grant_usage: defbool(d.grant_usage),
  }
  return dropUndefined(j)
}

/** A nic as libxl writes it in JSON. */
export function nicToJson(n: VifSpec): LibxlNicJson {
  const {trusted, ...rest} = n
  const j: LibxlNicJson = {...rest, trusted: defbool(trusted)}
  for (const k of VIF_COLO_KEYS) if (j[k] === undefined) delete j[k]
  return dropUndefined(j)
}

function dropUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k]
  return o
}
