/**
 * Domains as libxl knows them, on top of what Xen offers: Xen has domids, uuids and state; the
 * names (xenstore `/local/domain/<domid>/name`, libxl__domain_rename) and the stored domain config
 * (libxl's userdata file `userdata-d.<domid>.<uuid>.libxl-json`, libxl_userdata_store) are the
 * toolstack's, written here once for every back end.
 *
 * Names are unique among live domains: a rename or a create checks and writes the name in one
 * store transaction. A domain that is still being built counts (its name is written right after
 * its domid is handed out, as libxl__domain_make does); store entries of a domid that is gone are
 * ignored and replaced when the domid comes round again.
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {
  HypervisorError,
  LIBXL_ERROR,
  type CreateOptions,
  type DomainInfo,
  type DomainSpec,
  type EarlyDomain,
  type Hypervisor,
  type StoreAccess,
  type WorkloadSpec,
} from '../hypervisor/index.js'
import {destroyDeviceModel} from './device-model.js'

/** The control domain's name (Xen's start-up writes it to the store). */
export const DOM0_NAME = 'Domain-0'

/** A domain as `xl list` shows it: Xen's facts and the name libxl keeps. */
export interface NamedDomainInfo extends DomainInfo {
  readonly name: string
}

/** What libxl builds a domain from: Xen's part, and the name, config and (sim only) guest workload it keeps. */
export interface LibxlDomainSpec extends DomainSpec {
  name: string
  /** The domain config as libxl JSON, stored with the domain (xl migrate/save send it along). */
  config: Record<string, unknown>
  /** The simulated guest's workload (the sim's extras; real Xen boots the guest's kernel). */
  workload?: WorkloadSpec
}

export const domainPath = (domid: number): string => `/local/domain/${domid}`
const namePath = (domid: number): string => `${domainPath(domid)}/name`

function noSuchDomain(domid: number, qualifier?: string): HypervisorError {
  return new HypervisorError('no-such-domain', `domain ${domid} does not exist`, domid, {
    rc: LIBXL_ERROR.DOMAIN_NOTFOUND,
    ...(qualifier !== undefined ? {qualifier} : {}),
  })
}

function nameInUse(name: string, domid?: number): HypervisorError {
  return new HypervisorError('name-in-use', `Domain with name "${name}" already exists.`, domid, {rc: LIBXL_ERROR.INVAL, name})
}

function isGone(e: unknown): boolean {
  return e instanceof HypervisorError && e.code === 'no-such-domain'
}

/** The domain's name ('' when it has none in the store: a domain another toolstack made half-way). */
export async function domainName(hv: Hypervisor, domid: number): Promise<string> {
  return (await hv.store.read(namePath(domid))) ?? ''
}

/** The live domains with their names, by domid (libxl_list_domain + the names xl list shows). */
export async function listDomains(hv: Hypervisor): Promise<NamedDomainInfo[]> {
  const infos = await hv.list()
  const names = await Promise.all(infos.map((d) => domainName(hv, d.domid)))
  return infos.map((d, i) => ({...d, name: names[i]!}))
}

/** One live domain with its name. */
export async function domainInfo(hv: Hypervisor, domid: number): Promise<NamedDomainInfo> {
  const info = await hv.info(domid)
  return {...info, name: await domainName(hv, domid)}
}

/**
 * Domains by qualifier, as libxl finds them (libxl_name_to_domid, xl's find_domain): all digits is
 * a domid ("" is 0, the control domain), anything else a name among the live domains.
 */
export async function resolveDomain(hv: Hypervisor, qualifier: string): Promise<number> {
  if (/^[0-9]*$/.test(qualifier)) {
    const domid = qualifier === '' ? 0 : Number(qualifier)
    if (domid === 0) return 0
    try {
      await hv.info(domid)
    } catch (e) {
      if (isGone(e)) throw noSuchDomain(domid, qualifier)
      throw e
    }
    return domid
  }
  const found = (await listDomains(hv)).find((d) => d.name === qualifier)
  if (found) return found.domid
  throw new HypervisorError('no-such-domain', `${qualifier} is an invalid domain identifier (rc=${LIBXL_ERROR.INVAL})`, undefined, {rc: LIBXL_ERROR.INVAL, qualifier})
}

/** The domids other than `self` whose store entry gives them `name` (live or not). */
async function namedIn(store: StoreAccess, name: string, self: number | undefined): Promise<number[]> {
  const out: number[] = []
  for (const entry of await store.directory('/local/domain')) {
    if (!/^[0-9]+$/.test(entry)) continue
    const domid = Number(entry)
    if (domid !== self && (await store.read(namePath(domid))) === name) out.push(domid)
  }
  return out
}

/** Whether a domid is a live domain; one being built counts (info waits until it is built). */
async function isLive(hv: Hypervisor, domid: number): Promise<boolean> {
  if (domid === 0) return true
  try {
    await hv.info(domid)
    return true
  } catch (e) {
    if (isGone(e)) return false
    throw e
  }
}

/**
 * Gives `domid` the name `name` unless a live domain other than it has that name, and runs `more`
 * in the same transaction. Which domains hold the name is asked outside the transaction (a domain
 * being built may need the store to finish its build), then the transaction checks that no other
 * domain took the name meanwhile, else all is asked again: a xenstore transaction's retry by hand.
 */
async function claimName(hv: Hypervisor, domid: number, name: string, more: (tx: StoreAccess) => Promise<boolean>): Promise<boolean> {
  for (;;) {
    const seen = await namedIn(hv.store, name, domid)
    for (const other of seen) if (await isLive(hv, other)) throw nameInUse(name, domid)
    const done = await hv.store.transaction(async (tx) => {
      const now = await namedIn(tx, name, domid)
      if (now.some((d) => !seen.includes(d))) return undefined
      if (!(await more(tx))) return false
      await tx.write(namePath(domid), name)
      return true
    })
    if (done !== undefined) return done
  }
}

/**
 * Renames a domain (libxl__domain_rename): refused when another live domain has the name. With
 * `from`, only while the domain still has that name (a guardian putting a name back after a
 * migration must not undo an operator's rename); returns whether it renamed.
 */
export async function renameDomain(hv: Hypervisor, domid: number, name: string, opts: {from?: string} = {}): Promise<boolean> {
  if (domid === 0) throw new HypervisorError('not-supported', `${DOM0_NAME} (domain 0) cannot be renamed`, 0)
  if (typeof name !== 'string' || name.includes('\0')) throw new HypervisorError('bad-request', `domain ${domid}: bad new name`, domid)
  await hv.info(domid)
  return claimName(hv, domid, name, async (tx) => opts.from === undefined || (await tx.read(namePath(domid))) === opts.from)
}

/** libxl's userdata file of the domain's config (libxl__userdata_path, userdata id "libxl-json"). */
function userdataFile(hv: Hypervisor, domid: number, uuid: string): string {
  return path.join(hv.paths.lib, `userdata-d.${domid}.${uuid}.libxl-json`)
}

function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`
  try {
    fs.writeFileSync(tmp, text, {mode: 0o600})
    fs.renameSync(tmp, file)
  } finally {
    fs.rmSync(tmp, {force: true})
  }
}

/**
 * Builds a domain as libxl does: Xen's empty domain (paused), its name and entries in the store,
 * its config stored, the sim guest's workload loaded; then unpaused unless `opts.paused` (or built
 * for a restore, which stays paused). A name in use fails the create and leaves no domain.
 * `built` settles when the whole domain is there (see Hypervisor.createEarly).
 */
export async function createDomain(hv: Hypervisor, spec: LibxlDomainSpec, opts: CreateOptions): Promise<EarlyDomain> {
  if (typeof spec.name !== 'string' || spec.name === '' || spec.name.includes('\0')) {
    throw new HypervisorError('bad-request', `cannot create domain "${spec.name}": the name is not a string`)
  }
  // A name taken now fails before any domain is made (checked again when it is written).
  for (const other of await namedIn(hv.store, spec.name, undefined)) if (await isLive(hv, other)) throw nameInUse(spec.name)

  const xen: DomainSpec = {type: spec.type, maxMemKb: spec.maxMemKb, vcpus: spec.vcpus, ...(spec.uuid ? {uuid: spec.uuid} : {})}
  const made = hv.createEarly ? await hv.createEarly(xen, {...opts, paused: true}) : {domid: await hv.create(xen, {...opts, paused: true}), built: Promise.resolve()}
  const {domid} = made
  const undo = async (): Promise<void> => {
    await made.built.catch(() => undefined)
    await hv.destroy(domid).catch(() => undefined)
    await hv.store.remove(domainPath(domid)).catch(() => undefined)
  }
  try {
    // A reused domid's old entries go first, as libxl__domain_make does.
    await claimName(hv, domid, spec.name, async (tx) => {
      await tx.remove(domainPath(domid))
      await tx.write(`${domainPath(domid)}/domid`, String(domid))
      return true
    })
  } catch (e) {
    await undo()
    throw e
  }
  const built = (async () => {
    try {
      await made.built
      const {uuid} = await hv.info(domid)
      writeFileAtomic(userdataFile(hv, domid, uuid), JSON.stringify(spec.config))
      if (spec.workload && hv.simulation && !opts.forRestore) await hv.simulation.loadWorkload(domid, spec.workload)
      if (!opts.paused && !opts.forRestore) await hv.unpause(domid)
    } catch (e) {
      await undo()
      throw e
    }
  })()
  built.catch(() => {})
  return {domid, built}
}

/** createDomain, resolved when the domain is built. */
export async function createDomainBuilt(hv: Hypervisor, spec: LibxlDomainSpec, opts: CreateOptions): Promise<number> {
  const {domid, built} = await createDomain(hv, spec, opts)
  await built
  return domid
}

/**
 * The config stored with the domain, with its name as it is now (libxl_retrieve_domain_configuration);
 * undefined for domain 0 and for a domain without one.
 */
export async function storedConfig(hv: Hypervisor, domid: number): Promise<Record<string, unknown> | undefined> {
  if (domid === 0) return undefined
  const info = await domainInfo(hv, domid)
  let text: string
  try {
    text = fs.readFileSync(userdataFile(hv, domid, info.uuid), 'utf8')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw e
  }
  const config = JSON.parse(text) as Record<string, unknown>
  const cInfo = config.c_info
  if (typeof cInfo !== 'object' || cInfo === null) return config
  return {...config, c_info: {...(cInfo as Record<string, unknown>), name: info.name}}
}

/** Replaces the stored config (a restore keeps the config its stream carried). */
export async function storeConfig(hv: Hypervisor, domid: number, config: Record<string, unknown>): Promise<void> {
  const {uuid} = await hv.info(domid)
  writeFileAtomic(userdataFile(hv, domid, uuid), JSON.stringify(config))
}

/**
 * Destroys a domain as libxl__destroy_domid does: its device model first, then the domain, then
 * what libxl keeps of it (its store entries, its userdata).
 */
export async function destroyDomain(hv: Hypervisor, domid: number): Promise<void> {
  const uuid = await hv.info(domid).then(
    (i) => i.uuid,
    () => undefined,
  )
  let failure: unknown
  if (domid !== 0) await destroyDeviceModel(hv, domid)
  try {
    await hv.destroy(domid)
  } catch (e) {
    if (!isGone(e)) throw e
    failure = e
  }
  await hv.store.remove(domainPath(domid)).catch(() => undefined)
  if (uuid !== undefined) fs.rmSync(userdataFile(hv, domid, uuid), {force: true})
  if (failure) throw failure
}
