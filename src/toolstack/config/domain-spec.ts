/**
 * From a domain config to what the hypervisor needs to build the domain (`create`, and `restore` /
 * `migrate-receive`, which build an empty domain for the stream to fill), and back from the config
 * JSON a savefile or migration stream carries to a domain config.
 */
import type {WorkloadSpec} from '../hypervisor/index.js'
import type {LibxlDomainSpec} from '../libxl/index.js'
import {configFail} from './errors.js'
import type {DomainConfig, DomainType} from './domain.js'

/** What libxl builds the domain from (name, Xen's part, the config it stores, the sim guest's workload). */
export function domainSpec(config: DomainConfig, backend: 'sim' | 'xen'): LibxlDomainSpec {
  const spec: LibxlDomainSpec = {
    name: config.c_info.name,
    uuid: config.c_info.uuid,
    type: config.c_info.type,
    maxMemKb: config.b_info.max_memkb,
    vcpus: config.b_info.avail_vcpus.length,
    config: config as unknown as Record<string, unknown>,
  }
  if (backend === 'sim') {
    const workload = simWorkload(config)
    if (workload) spec.workload = workload
  }
  return spec
}

/** The guest workload from the config's sim_* settings; undefined when there are none. */
export function simWorkload(config: DomainConfig): WorkloadSpec | undefined {
  const sim = config.sim ?? {}
  if (Object.keys(sim).length === 0) return undefined
  const memMiB = Math.floor(config.b_info.target_memkb / 1024)
  return {
    dirtyRate: sim.sim_dirty_rate ?? 0,
    workingSetMiB: Math.min(sim.sim_working_set ?? memMiB, memMiB),
    seed: sim.sim_seed ?? 0,
    nondeterminism: sim.sim_nondeterminism ?? 0,
    packetRate: sim.sim_packet_rate ?? 0,
    ...(sim.sim_disk_rate !== undefined ? {diskRate: sim.sim_disk_rate} : {}),
  }
}

const TYPES: readonly DomainType[] = ['hvm', 'pv', 'pvh']

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * A domain config from the libxl JSON a savefile or stream carries (what `create` stored and `save`
 * wrote, or what Xen's xl wrote). Checks the fields a domain is built from and fills in what libxl
 * defaults (no disks, no nics, the shutdown actions, no sim settings); other fields are kept as
 * they are. `source` names the config in errors (`<saved>`, as xl calls it).
 */
export function domainConfigFromJson(json: unknown, source = '<saved>'): DomainConfig {
  const bad = (detail: string, key?: string): never => configFail('bad-value', source, undefined, detail, key)
  if (!isObject(json)) return bad('the domain config JSON is not an object')
  const c = json.c_info
  const b = json.b_info
  if (!isObject(c)) return bad('the domain config JSON has no c_info object', 'c_info')
  if (!isObject(b)) return bad('the domain config JSON has no b_info object', 'b_info')
  if (typeof c.name !== 'string' || c.name === '') return bad('c_info.name is missing: Domain name must be specified.', 'name')
  const type = c.type ?? 'pv'
  if (typeof type !== 'string' || !TYPES.includes(type as DomainType)) return bad(`c_info.type ${JSON.stringify(type)} is not hvm, pv or pvh`, 'type')
  const kb = (key: string, dflt?: number): number => {
    const v = b[key] ?? dflt
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) return bad(`b_info.${key} ${JSON.stringify(v)} is not a positive number of kiB`, key)
    return v
  }
  const max_memkb = kb('max_memkb')
  const target_memkb = kb('target_memkb', max_memkb)
  let avail = b.avail_vcpus
  if (avail === undefined) avail = Array.from({length: typeof b.max_vcpus === 'number' ? b.max_vcpus : 1}, (_, i) => i)
  if (!Array.isArray(avail) || avail.length === 0 || !avail.every((v) => Number.isInteger(v) && (v as number) >= 0)) {
    return bad('b_info.avail_vcpus is not a non-empty list of vCPU numbers', 'avail_vcpus')
  }
  const sim = json.sim === undefined ? {} : json.sim
  if (!isObject(sim) || !Object.values(sim).every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) {
    return bad('sim is not an object of non-negative numbers', 'sim')
  }
  const uuid = typeof c.uuid === 'string' ? c.uuid : undefined
  return {
    on_poweroff: 'destroy',
    on_reboot: 'restart',
    on_watchdog: 'destroy',
    on_crash: 'destroy',
    on_soft_reset: 'soft_reset',
    ...json,
    c_info: {...c, type: type as DomainType, name: c.name, ...(uuid ? {uuid} : {})} as DomainConfig['c_info'],
    b_info: {...b, max_memkb, target_memkb, avail_vcpus: avail as number[], max_vcpus: typeof b.max_vcpus === 'number' ? b.max_vcpus : avail.length} as DomainConfig['b_info'],
    disks: Array.isArray(json.disks) ? (json.disks as DomainConfig['disks']) : [],
    nics: Array.isArray(json.nics) ? (json.nics as DomainConfig['nics']) : [],
    sim: sim as DomainConfig['sim'],
  } as DomainConfig
}
