/**
 * The simulated Xen host: a state folder of domain folders, each domain a process of its own
 * (domain-main.ts) that owns the guest memory file under /dev/shm and serves a control socket.
 * This class is the toolstack's side: it allocates domids and names under the host lock, starts
 * and stops domain processes, talks to them, and reaps the ones that died.
 */
import {spawn} from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {entryPointFile, nodeProgramEnv} from '../../entry-points.js'
import {DirtyBitmap} from '../index.js'
import {HypervisorError, LIBXL_ERROR} from '../index.js'
import type {
  CpuPolicy,
  CreateOptions,
  EarlyDomain,
  DomainInfo,
  DomainSpec,
  GuestMemory,
  HostPaths,
  HvmParam,
  IntegrityReport,
  Hypervisor,
  LogDirty,
  SimulationExtras,
  TscInfo,
} from '../index.js'
import {parseFrame} from './frame.js'
import {checkWorkload, decodeContext} from './context.js'
import {simGuestDiskKeys} from '../index.js'
import {ConnectionLost, ControlClient} from './client.js'
import {DOMID_FIRST_RESERVED, HostLayout, type DomainRecord, type LaunchSpec} from './layout.js'
import {withLock} from './lock.js'
import {SIM_VIF_DEVID, defaultVifName, withdrawVif} from './netback.js'
import {SimStore} from './store.js'
import {DISK_BLOCK_BYTES} from './workload.js'
import {checksumMemoryFile, FileGuestMemory, verifyMemoryFile} from './memory.js'
import {PAGE_SIZE, SPECIAL_PAGES} from './page.js'
import {isAlive, killHard, procStart, selfIdentity, waitGone} from '../../process/index.js'
import type {OpName, Ops, RuntimeInfo} from './protocol.js'

const READY_TIMEOUT_MS = 60_000
/** A domain folder without a domain process after this long, its creator gone, is debris. */
const UNFINISHED_STALE_MS = 60_000
const GUEST_TYPES = new Set(['hvm', 'pv', 'pvh'])
const MIN_PAGES = 2 * SPECIAL_PAGES
const MAX_VCPUS = 512
/** What Xen's start-up writes for the control domain. */
const DOM0_NAME = 'Domain-0'
const DOM0_UUID = '00000000-0000-0000-0000-000000000000'
const DOM0_MEM_KB = 4 * 1024 * 1024

/** The sim's own view of a domain beyond DomainInfo (tests, `xl-ts sim`). */
export type SimRuntime = RuntimeInfo

export interface LogDirtyRound {
  bitmap: DirtyBitmap
  /** The log-dirty epoch the bitmap covers (a new one starts at enable and at every clean). */
  epoch: number
  /** Page writes the guest made in that epoch up to this answer. */
  writes: number
}

function noSuchDomain(domid: number, qualifier?: string): HypervisorError {
  return new HypervisorError('no-such-domain', `domain ${domid} does not exist`, domid, {
    rc: LIBXL_ERROR.DOMAIN_NOTFOUND,
    ...(qualifier !== undefined ? {qualifier} : {}),
  })
}

function dom0Refuses(what: string): HypervisorError {
  return new HypervisorError('not-supported', `domain 0 cannot be ${what} on the simulated host`, 0)
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code
}

function readJson<T>(file: string): T | undefined {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return undefined
    throw e
  }
  try {
    return JSON.parse(text) as T
  } catch {
    return undefined
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2), {mode: 0o600})
  fs.renameSync(tmp, file)
}

/** The domain program in dist/ (its bundle when current: entry-points.ts), also when this module runs from src/ (tests). */
export function domainProgram(): string {
  const file = entryPointFile('domain-main')
  if (fs.existsSync(file)) return file
  throw new HypervisorError('backend-failure', `the simulated domain program ${file} is missing: run npm run build`)
}

function tail(file: string, lines = 12): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

interface CachedClient {
  readonly rec: DomainRecord
  readonly client: Promise<ControlClient>
  /** Set once connected. */
  open?: ControlClient
}

export class SimHypervisor implements Hypervisor {
  readonly backend = 'sim' as const
  readonly layout: HostLayout
  readonly hostId: string
  /**
   * Control connections, one per domain, with the record they were opened from. While a connection
   * is open the domain process that listens on it is alive, so requests on it skip re-reading the
   * record (a file and /proc read each, 0.05-0.15 ms, many times per checkpoint).
   */
  private readonly clients = new Map<number, CachedClient>()

  readonly store: SimStore
  readonly paths: HostPaths

  constructor(root: string) {
    this.layout = new HostLayout(root)
    this.layout.checkSocketPath()
    this.hostId = this.initRoot()
    this.store = new SimStore(this.root)
    // What Xen's start-up writes for the control domain (xen-init-dom0).
    this.store.seed({'/local': '', '/local/domain': '', '/local/domain/0': '', '/local/domain/0/name': DOM0_NAME, '/local/domain/0/domid': '0'})
    this.paths = {lib: this.layout.libDir, run: this.layout.runDir, log: this.layout.logDir}
    for (const dir of [this.paths.lib, this.paths.run, this.paths.log, this.layout.netDir]) fs.mkdirSync(dir, {recursive: true, mode: 0o700})
  }

  readonly simulation: SimulationExtras = {
    checksum: (domid) => this.checksum(domid),
    memoryChecksum: (domid) => this.memoryChecksum(domid),
    verifyIntegrity: (domid) => this.verifyIntegrity(domid),
    diskBlockBytes: DISK_BLOCK_BYTES,
    diskImage: (domid) => this.diskImage(domid),
    verifyDiskView: (domid, patterns) => this.verifyDiskView(domid, patterns),
    loadWorkload: async (domid, workload) => {
      const rec = this.access(domid)
      checkWorkload(workload, rec.pages, domid)
      await this.request(domid, rec, 'load-workload', {workload: {...workload}})
    },
    guestCounters: async (domid) => {
      const r = await this.runtime(domid)
      return {step: r.step, frames: r.frames}
    },
    frameInfo: (frame) => {
      try {
        const f = parseFrame(frame)
        return {step: f.step, seq: f.seq}
      } catch {
        return undefined
      }
    },
  }

  connectionEnv(): Record<string, string> {
    return {XL_TS_BACKEND: 'sim', XL_TS_ROOT: this.root}
  }

  get root(): string {
    return this.layout.root
  }

  // ---- the state folder ---------------------------------------------------------------------------

  private initRoot(): string {
    const {root} = this.layout
    try {
      const created = fs.mkdirSync(root, {recursive: true, mode: 0o700})
      if (created !== undefined) fs.chmodSync(root, 0o700)
      fs.mkdirSync(this.layout.domainsDir, {recursive: true, mode: 0o700})
    } catch (e) {
      throw new HypervisorError('backend-failure', `cannot use ${root} as the simulated host's state folder: ${(e as Error).message}`)
    }
    const hostFile = this.layout.hostFile
    for (let attempt = 0; attempt < 50; attempt++) {
      const host = readJson<{hostId?: unknown}>(hostFile)
      if (host && typeof host.hostId === 'string' && /^[0-9a-f]{16}$/.test(host.hostId)) return host.hostId
      if (host === undefined && !fs.existsSync(hostFile)) {
        const tmp = `${hostFile}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`
        const hostId = crypto.randomBytes(8).toString('hex')
        fs.writeFileSync(tmp, JSON.stringify({hostId, createdAt: new Date().toISOString(), hostname: os.hostname()}, null, 2) + '\n', {mode: 0o600})
        try {
          fs.linkSync(tmp, hostFile)
          return hostId
        } catch (e) {
          if (errno(e) !== 'EEXIST') throw e
        } finally {
          fs.rmSync(tmp, {force: true})
        }
      }
      // Someone else is writing it, or it is damaged: look again.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5)
    }
    throw new HypervisorError('backend-failure', `${hostFile} is not a simulated host's identity (delete it to start afresh)`)
  }

  private domids(): number[] {
    let names: string[]
    try {
      names = fs.readdirSync(this.layout.domainsDir)
    } catch (e) {
      if (errno(e) === 'ENOENT') return []
      throw e
    }
    return names.filter((n) => /^[1-9][0-9]*$/.test(n)).map(Number)
  }

  private readRecord(domid: number): DomainRecord | undefined {
    return readJson<DomainRecord>(this.layout.recordFile(domid))
  }

  /** Removes everything a domain left behind; kills its process if it still runs. */
  private reap(domid: number, rec?: {pid: number; pidStart: number; memPath?: string}): void {
    if (rec) killHard(rec.pid, rec.pidStart)
    const pidLine = readPidFile(this.layout.pidFile(domid))
    if (pidLine) killHard(pidLine.pid, pidLine.start)
    // Its device model ends with it (qemu-xen exits when its domain is destroyed).
    const dm = readPidFile(this.layout.deviceModelPidFile(domid))
    if (dm) killHard(dm.pid, dm.start)
    this.dropClient(domid)
    fs.rmSync(rec?.memPath ?? HostLayout.memPath(this.hostId, domid), {force: true})
    fs.rmSync(HostLayout.memPath(this.hostId, domid), {force: true})
    fs.rmSync(path.join(this.layout.netDir, defaultVifName(domid, SIM_VIF_DEVID)), {force: true})
    fs.rmSync(this.layout.domainDir(domid), {recursive: true, force: true})
  }

  /**
   * A folder without a domain record is a domain being built. It is debris (and reaped) when the
   * domain process died, or when it never started and its creator is gone or gave up long ago.
   * Returns whether it is still being built.
   */
  private unfinished(domid: number): boolean {
    const dir = this.layout.domainDir(domid)
    const pid = readPidFile(this.layout.pidFile(domid))
    const launch = readJson<LaunchSpec>(this.layout.launchFile(domid))
    if (this.readRecord(domid)) return false
    let age = 0
    try {
      age = Date.now() - fs.statSync(dir).mtimeMs
    } catch {
      return false
    }
    let stale: boolean
    if (pid) stale = !isAlive(pid.pid, pid.start)
    else if (launch) stale = !isAlive(launch.creator.pid, launch.creator.start) || age > UNFINISHED_STALE_MS
    else stale = age > UNFINISHED_STALE_MS / 6
    if (stale && !this.readRecord(domid)) {
      this.reap(domid)
      return false
    }
    return true
  }

  /**
   * Waits while `domid` is being built (createEarly: its folder is there, its record not yet, its
   * process or creator alive), at most as long as a build may take. A domain that is built, gone or
   * never was returns at once: access() then says which.
   */
  private async whileBuilding(domid: number): Promise<void> {
    if (!Number.isInteger(domid) || domid <= 0 || domid >= DOMID_FIRST_RESERVED) return
    const until = Date.now() + READY_TIMEOUT_MS
    while (!this.readRecord(domid) && this.unfinished(domid) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 2))
    }
  }

  /** The record of a live domain; reaps a dead one and throws no-such-domain. */
  private access(domid: number): DomainRecord {
    if (!Number.isInteger(domid) || domid <= 0 || domid >= DOMID_FIRST_RESERVED) throw noSuchDomain(domid)
    const rec = this.readRecord(domid)
    if (!rec) throw noSuchDomain(domid)
    if (!isAlive(rec.pid, rec.pidStart)) {
      this.reap(domid, rec)
      throw noSuchDomain(domid)
    }
    return rec
  }

  // ---- talking to domain processes ----------------------------------------------------------------

  private dropClient(domid: number): void {
    const c = this.clients.get(domid)
    if (!c) return
    this.clients.delete(domid)
    c.client.then((cl) => cl.close()).catch(() => undefined)
  }

  private async client(domid: number, rec: DomainRecord): Promise<ControlClient> {
    const cached = this.clients.get(domid)
    if (cached && cached.rec.pid === rec.pid && cached.rec.pidStart === rec.pidStart) {
      const c = await cached.client.catch(() => undefined)
      if (c && !c.closed) return c
      if (this.clients.get(domid) === cached) this.clients.delete(domid)
    }
    const entry: CachedClient = {rec, client: ControlClient.connect(this.layout.socketPath(domid), domid)}
    this.clients.set(domid, entry)
    entry.client.then(
      (c) => (entry.open = c),
      () => {
        if (this.clients.get(domid) === entry) this.clients.delete(domid)
      },
    )
    return entry.client
  }

  /**
   * The record behind an open control connection, or undefined. A connection that broke since is
   * found out by the request itself (ConnectionLost), which then checks the process as access() does.
   */
  private connectedRecord(domid: number): DomainRecord | undefined {
    const c = this.clients.get(domid)
    return c?.open && !c.open.closed ? c.rec : undefined
  }

  /**
   * Sends a request. If the domain process is dead, or alive but its socket is gone or refuses
   * connections, the domain is reaped and the answer is no-such-domain.
   */
  private async request<K extends OpName>(domid: number, rec: DomainRecord, op: K, args: Ops[K]['args'], timeoutMs?: number): Promise<Ops[K]['result']> {
    for (let attempt = 0; ; attempt++) {
      let client: ControlClient
      try {
        client = await this.client(domid, rec)
      } catch (e) {
        if (e instanceof ConnectionLost) this.lost(domid, rec, e)
        throw e
      }
      try {
        return await client.request(op, args, timeoutMs)
      } catch (e) {
        if (!(e instanceof ConnectionLost)) throw e
        this.dropClient(domid)
        if (e.notSent && attempt < 3) continue
        // Lost with the request in flight: it may or may not have been carried out, so it is not sent again.
        if (!isAlive(rec.pid, rec.pidStart)) this.lost(domid, rec, e)
        try {
          ;(await ControlClient.connect(this.layout.socketPath(domid), domid)).close()
        } catch (e2) {
          if (e2 instanceof ConnectionLost) this.lost(domid, rec, e2)
          throw e2
        }
        throw new HypervisorError('backend-failure', `domain ${domid}: control connection lost during ${op}`, domid)
      }
    }
  }

  /** The domain's socket failed: a dead process, or one that no longer serves its socket, is reaped. */
  private lost(domid: number, rec: DomainRecord, e: ConnectionLost): void {
    const refused = e.errno === 'ECONNREFUSED' || e.errno === 'ENOENT'
    if (!isAlive(rec.pid, rec.pidStart) || refused) {
      this.reap(domid, rec)
      throw noSuchDomain(domid)
    }
    throw new HypervisorError('backend-failure', e.message, domid)
  }

  private async call<K extends OpName>(domid: number, op: K, args: Ops[K]['args'], what: string, timeoutMs?: number): Promise<Ops[K]['result']> {
    if (domid === 0) throw dom0Refuses(what)
    return this.request(domid, this.connectedRecord(domid) ?? this.access(domid), op, args, timeoutMs)
  }

  // ---- the port -----------------------------------------------------------------------------------

  private dom0(): DomainInfo {
    return {
      domid: 0,
      uuid: DOM0_UUID,
      type: 'pv',
      maxMemKb: DOM0_MEM_KB,
      currentMemKb: DOM0_MEM_KB,
      vcpus: os.availableParallelism(),
      pages: DOM0_MEM_KB / 4,
      state: {running: true, blocked: false, paused: false, shutdown: false, dying: false},
      cpuTimeNs: Math.round(os.uptime() * 1e7),
    }
  }

  private toInfo(rec: DomainRecord, rt: RuntimeInfo): DomainInfo {
    const stopped = rt.paused || rt.suspended || rt.dying
    return {
      domid: rec.domid,
      uuid: rec.uuid,
      type: rec.type,
      maxMemKb: rec.maxMemKb,
      currentMemKb: rec.maxMemKb,
      vcpus: rec.vcpus,
      pages: rec.pages,
      state: {
        running: rt.running,
        blocked: !stopped && !rt.running,
        paused: rt.paused,
        shutdown: rt.suspended,
        ...(rt.suspended ? {shutdownReason: 2} : {}),
        dying: rt.dying,
      },
      cpuTimeNs: rt.cpuTimeNs,
    }
  }

  /** DomainInfo of a live domain, or undefined (reaping it) when it is gone. */
  private async probe(domid: number): Promise<DomainInfo | undefined> {
    const rec = this.readRecord(domid)
    if (!rec) {
      this.unfinished(domid)
      return undefined
    }
    if (!isAlive(rec.pid, rec.pidStart)) {
      this.reap(domid, rec)
      return undefined
    }
    try {
      return this.toInfo(rec, await this.request(domid, rec, 'info', {}))
    } catch (e) {
      if (e instanceof HypervisorError && e.code === 'no-such-domain') return undefined
      throw e
    }
  }

  async list(): Promise<DomainInfo[]> {
    const infos = await Promise.all(this.domids().map((d) => this.probe(d)))
    const live = infos.filter((i): i is DomainInfo => i !== undefined).sort((a, b) => a.domid - b.domid)
    return [this.dom0(), ...live]
  }

  async info(domid: number): Promise<DomainInfo> {
    if (domid === 0) return this.dom0()
    // Over an open connection the domain is built and its process alive: only its record is read
    // again, for a name that may have changed.
    let rec = this.connectedRecord(domid) ? this.readRecord(domid) : undefined
    if (!rec) {
      await this.whileBuilding(domid)
      rec = this.access(domid)
    }
    return this.toInfo(rec, await this.request(domid, rec, 'info', {}))
  }

  private checkSpec(spec: DomainSpec): number {
    const bad = (why: string): never => {
      throw new HypervisorError('bad-request', `cannot create a domain: ${why}`)
    }
    if (!GUEST_TYPES.has(spec.type)) bad(`unknown guest type ${JSON.stringify(spec.type)}`)
    if (!Number.isSafeInteger(spec.maxMemKb) || spec.maxMemKb % 4 !== 0) bad(`maxMemKb ${spec.maxMemKb} is not a whole number of 4 KiB pages`)
    const pages = spec.maxMemKb / 4
    if (pages < MIN_PAGES) bad(`maxMemKb ${spec.maxMemKb} is below the ${MIN_PAGES * 4} KiB a simulated guest needs`)
    if (pages > 0xffffffff) bad(`maxMemKb ${spec.maxMemKb} is too large`)
    if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > MAX_VCPUS) bad(`${spec.vcpus} vCPUs (1..${MAX_VCPUS})`)
    if (spec.uuid !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(spec.uuid)) bad(`bad uuid ${spec.uuid}`)
    const shm = fs.statfsSync(path.dirname(HostLayout.memPath(this.hostId, 1)))
    const free = shm.bavail * shm.bsize
    if (free < pages * PAGE_SIZE) {
      throw new HypervisorError('backend-failure', `cannot create a domain: ${pages * PAGE_SIZE} bytes of guest memory do not fit in /dev/shm (${free} free)`)
    }
    return pages
  }

  async create(spec: DomainSpec, opts: CreateOptions): Promise<number> {
    const {domid, built} = await this.createEarly(spec, opts)
    await built
    return domid
  }

  async createEarly(spec: DomainSpec, opts: CreateOptions): Promise<EarlyDomain> {
    const pages = this.checkSpec(spec)
    const forRestore = opts.forRestore === true
    const me = selfIdentity()
    const domid = await withLock(this.layout.lockDir, () => {
      const domid = this.allocateDomid()
      const launch: LaunchSpec = {
        version: 1,
        hostId: this.hostId,
        root: this.root,
        domid,
        uuid: (spec.uuid ?? crypto.randomUUID()).toLowerCase(),
        type: spec.type,
        maxMemKb: spec.maxMemKb,
        vcpus: spec.vcpus,
        pages,
        memPath: HostLayout.memPath(this.hostId, domid),
        socketPath: this.layout.socketPath(domid),
        paused: opts.paused || forRestore,
        forRestore,
        creator: {pid: me.pid, start: me.start},
        createdAt: Date.now(),
      }
      writeJsonAtomic(this.layout.launchFile(domid), launch)
      return domid
    })
    const built = this.start(domid).catch((e: unknown) => {
      this.reap(domid)
      throw e
    })
    // Whoever awaits `built` sees the failure; an early domain whose caller gave up must not turn it
    // into an unhandled rejection.
    built.catch(() => {})
    return {domid, built}
  }

  /** Under the host lock: the next free domid after the rover (as Xen hands them out), its folder made. */
  private allocateDomid(): number {
    const max = DOMID_FIRST_RESERVED - 1
    let next = Number(readText(this.layout.roverFile) ?? '1')
    if (!Number.isInteger(next) || next < 1 || next > max) next = 1
    for (let k = 0; k < max; k++) {
      const domid = ((next - 1 + k) % max) + 1
      try {
        fs.mkdirSync(this.layout.domainDir(domid), {mode: 0o700})
      } catch (e) {
        if (errno(e) === 'EEXIST') continue
        throw e
      }
      fs.writeFileSync(this.layout.roverFile, `${(domid % max) + 1}\n`, {mode: 0o600})
      return domid
    }
    throw new HypervisorError('backend-failure', `no free domain id on the simulated host ${this.root}`)
  }

  /**
   * Starts the domain process and waits until it serves its control socket.
   *
   * With node:child_process, not execa (the card's package): on migrate-receive this runs after the
   * sender's header and before the first page can move (the domain's start is most of the ~50 ms
   * between them: bench/README.md, migrate), in a CLI that has not loaded execa: 47-55 ms more
   * (measured after oclif has loaded, 7 runs). And this module is in the helper's and the
   * guardian's bundles, which execa would make 9 ms slower to start (device-model.ts, spawnQemu).
   * The domain is detached and outlives us, so execa would need `cleanup: false` as well.
   */
  private async start(domid: number): Promise<void> {
    const program = domainProgram()
    const logFile = this.layout.logFile(domid)
    const logFd = fs.openSync(logFile, 'a', 0o600)
    const env = {...nodeProgramEnv()}
    delete env.NODE_OPTIONS
    let child
    try {
      child = spawn(process.execPath, [program, this.layout.domainDir(domid)], {
        detached: true,
        stdio: ['ignore', logFd, logFd, 'pipe'],
        env,
      })
    } finally {
      fs.closeSync(logFd)
    }
    const pipe = child.stdio[3] as NodeJS.ReadableStream & {destroy(): void}
    try {
      await new Promise<void>((resolve, reject) => {
        let said = ''
        const timer = setTimeout(() => reject(new HypervisorError('backend-failure', `domain ${domid} did not start within ${READY_TIMEOUT_MS} ms:\n${tail(logFile)}`, domid)), READY_TIMEOUT_MS)
        const done = (e?: Error): void => {
          clearTimeout(timer)
          child.off('exit', onExit)
          child.off('error', done)
          if (e) reject(e)
          else resolve()
        }
        const onExit = (code: number | null, signal: string | null): void => {
          // A domain that gives up says why on the pipe (its folder, log included, is gone then).
          const why = /^failed: (.*)$/m.exec(said)?.[1]
          done(new HypervisorError('backend-failure', `domain ${domid} failed to start (${signal ?? `exit ${code}`}): ${why ?? `\n${tail(logFile)}`}`, domid))
        }
        child.once('exit', onExit)
        child.once('error', done)
        pipe.on('data', (chunk: Buffer) => {
          said += chunk.toString()
          if (said.includes('ready\n')) done()
        })
      })
    } catch (e) {
      if (child.pid !== undefined) {
        const start = procStart(child.pid)
        if (start !== undefined) killHard(child.pid, start)
      }
      throw e
    } finally {
      pipe.destroy()
      child.unref()
    }
    if (!this.readRecord(domid)) throw new HypervisorError('backend-failure', `domain ${domid} started without a domain record`, domid)
  }

  async destroy(domid: number): Promise<void> {
    if (domid === 0) throw dom0Refuses('destroyed')
    const rec = this.access(domid)
    try {
      await this.request(domid, rec, 'destroy', {}, 5000)
    } catch (e) {
      if (!(e instanceof HypervisorError) || e.code === 'bad-request') throw e
      // no answer, or gone already: make sure below
    }
    await this.finish(domid, rec)
  }

  /** Waits for the domain process to end (kills it after a grace period) and removes its leftovers. */
  private async finish(domid: number, rec: DomainRecord): Promise<void> {
    if (!(await waitGone(rec.pid, rec.pidStart, 5000))) {
      killHard(rec.pid, rec.pidStart)
      await waitGone(rec.pid, rec.pidStart, 2000)
      // Killed, it could not take its vif out of the store itself.
      await withdrawVif(this.store, domid, SIM_VIF_DEVID).catch(() => undefined)
    }
    this.reap(domid, rec)
  }

  async pause(domid: number): Promise<void> {
    await this.call(domid, 'pause', {}, 'paused')
  }

  async unpause(domid: number): Promise<void> {
    await this.call(domid, 'unpause', {}, 'unpaused')
  }

  async shutdown(domid: number): Promise<void> {
    if (domid === 0) throw dom0Refuses('shut down')
    const rec = this.access(domid)
    let gone: boolean
    try {
      gone = (await this.request(domid, rec, 'shutdown', {})).gone
    } catch (e) {
      if (!(e instanceof HypervisorError && e.code === 'no-such-domain')) throw e
      gone = true
    }
    if (gone) await this.finish(domid, rec)
  }

  async suspend(domid: number): Promise<void> {
    await this.call(domid, 'suspend', {}, 'suspended')
  }

  async resume(domid: number, opts: {cancel: boolean}): Promise<void> {
    await this.call(domid, 'resume', {cancel: opts.cancel}, 'resumed')
  }

  logDirty(domid: number): LogDirty {
    const op = (action: 'enable' | 'disable') => async (): Promise<void> => {
      await this.call(domid, 'log-dirty', {action}, 'put in log-dirty mode')
    }
    return {
      enable: op('enable'),
      disable: op('disable'),
      peek: async () => (await this.logDirtyRound(domid, 'peek')).bitmap,
      clean: async () => (await this.logDirtyRound(domid, 'clean')).bitmap,
    }
  }

  /** PEEK or CLEAN with the epoch and write count the answer covers (tests check exactness with them). */
  async logDirtyRound(domid: number, action: 'peek' | 'clean'): Promise<LogDirtyRound> {
    const r = await this.call(domid, 'log-dirty', {action}, 'put in log-dirty mode')
    const bits = new Uint8Array(Buffer.from(r.bitmap ?? '', 'base64'))
    return {bitmap: new DirtyBitmap(r.pages ?? 0, bits), epoch: r.epoch ?? 0, writes: r.writes ?? 0}
  }

  async openMemory(domid: number): Promise<GuestMemory> {
    if (domid === 0) throw dom0Refuses('mapped')
    const rec = this.access(domid)
    return FileGuestMemory.open(rec.memPath, rec.pages, domid)
  }

  async getVcpuContext(domid: number): Promise<Buffer> {
    return Buffer.from((await this.call(domid, 'get-context', {}, 'inspected')).data, 'base64')
  }

  async setVcpuContext(domid: number, context: Buffer): Promise<void> {
    await this.call(domid, 'set-context', {data: context.toString('base64')}, 'changed')
  }

  async getHvmParams(domid: number): Promise<HvmParam[]> {
    const r = await this.call(domid, 'get-hvm-params', {}, 'inspected')
    return r.params.map((p) => ({index: p.index, value: BigInt(p.value)}))
  }

  async setHvmParams(domid: number, params: readonly HvmParam[]): Promise<void> {
    await this.call(domid, 'set-hvm-params', {params: params.map((p) => ({index: p.index, value: String(p.value)}))}, 'changed')
  }

  async getTscInfo(domid: number): Promise<TscInfo> {
    const t = await this.call(domid, 'get-tsc', {}, 'inspected')
    return {mode: t.mode, khz: t.khz, nsec: BigInt(t.nsec), incarnation: t.incarnation}
  }

  async setTscInfo(domid: number, tsc: TscInfo): Promise<void> {
    await this.call(domid, 'set-tsc', {mode: tsc.mode, khz: tsc.khz, nsec: String(tsc.nsec), incarnation: tsc.incarnation}, 'changed')
  }

  async getCpuPolicy(domid: number): Promise<CpuPolicy> {
    const p = await this.call(domid, 'get-cpu-policy', {}, 'inspected')
    return {cpuid: p.cpuid.map((l) => ({...l})), msrs: p.msrs.map((m) => ({index: m.index, value: BigInt(m.value)}))}
  }

  async setCpuPolicy(domid: number, policy: CpuPolicy): Promise<void> {
    await this.call(
      domid,
      'set-cpu-policy',
      {cpuid: policy.cpuid.map((l) => ({...l})), msrs: policy.msrs.map((m) => ({index: m.index, value: String(m.value)}))},
      'changed',
    )
  }


  // ---- the sim's own (not on the port) ------------------------------------------------------------

  /** The domain process's view: steps, writes, frames, perturbations, pause/suspend flags. */
  async runtime(domid: number): Promise<SimRuntime> {
    return this.call(domid, 'info', {}, 'inspected')
  }

  /** The image the guest's disk writes land in (its first COLO disk's target), once libxl gave it a device model. */
  async diskImage(domid: number): Promise<string | undefined> {
    this.access(domid)
    return this.store.read(simGuestDiskKeys(domid).image)
  }

  /**
   * Checks the guest's disk as its device model shows it (a COLO secondary: through its active and
   * hidden disks): block i (DISK_BLOCK_BYTES) must hold byte patterns[i] all over (256: skipped).
   */
  async verifyDiskView(domid: number, patterns: readonly number[]): Promise<{blocks: number; mismatches: number[]}> {
    return this.call(domid, 'disk-verify', {patterns: [...patterns]}, 'inspected', 60_000)
  }

  /** Where the domain's memory lives (/dev/shm/xl-ts-<hostid>-<domid>). */
  memoryPath(domid: number): string {
    return this.access(domid).memPath
  }

  /** The domain record (pid, paths, launch parameters). */
  record(domid: number): DomainRecord {
    return this.access(domid)
  }

  /** Runs `fn` with the guest held still (not paused by the controller: a held guest just does not step). */
  private async held<T>(domid: number, fn: (rec: DomainRecord) => Promise<T> | T): Promise<T> {
    const rec = this.access(domid)
    await this.request(domid, rec, 'hold', {on: true})
    try {
      return await fn(rec)
    } finally {
      await this.request(domid, rec, 'hold', {on: false}).catch(() => undefined)
    }
  }

  /**
   * Checks every page: header, body and tail consistent with its pfn and generation, special pages
   * zero, and no generation newer than the vCPU context's step. The guest is held still meanwhile.
   */
  async verifyIntegrity(domid: number): Promise<IntegrityReport> {
    if (domid === 0) throw dom0Refuses('checked')
    return this.held(domid, async (rec) => {
      const ctx = decodeContext(Buffer.from((await this.request(domid, rec, 'get-context', {})).data, 'base64'), rec.pages, domid)
      return verifyMemoryFile(rec.memPath, rec.pages, domid, ctx.hasWorkload ? ctx.step : undefined)
    })
  }

  /** sha256 (hex) of the memory file alone (a Remus backup's vCPU state waits for the failover). */
  async memoryChecksum(domid: number): Promise<string> {
    if (domid === 0) throw dom0Refuses('checksummed')
    return this.held(domid, async (rec) => checksumMemoryFile(rec.memPath, rec.pages, Buffer.alloc(0)))
  }

  /** sha256 (hex) over the memory file followed by the vCPU context; the guest is held still meanwhile. */
  async checksum(domid: number): Promise<string> {
    if (domid === 0) throw dom0Refuses('checksummed')
    return this.held(domid, async (rec) => {
      const ctx = Buffer.from((await this.request(domid, rec, 'get-context', {})).data, 'base64')
      return checksumMemoryFile(rec.memPath, rec.pages, ctx)
    })
  }

  /** Runs `n` guest steps now (the domain must be paused or suspended). Returns the step count after. */
  async runSteps(domid: number, n: number): Promise<number> {
    return (await this.call(domid, 'run-steps', {n}, 'stepped')).step
  }

  /** Makes the guest pause itself (controller pause) once its step count reaches `step`; null cancels. */
  async stopAtStep(domid: number, step: number | null): Promise<number> {
    return (await this.call(domid, 'stop-at', {step}, 'stopped')).step
  }

  /** Starts (clearing it) or stops the write log: every pfn the guest writes, per log-dirty epoch. */
  async setWriteLog(domid: number, enable: boolean): Promise<void> {
    await this.call(domid, 'write-log', {enable}, 'logged')
  }

  async readWriteLog(domid: number): Promise<Map<number, Uint32Array>> {
    const r = await this.call(domid, 'write-log-read', {}, 'logged')
    const out = new Map<number, Uint32Array>()
    for (const e of r.epochs) {
      const b = Buffer.from(e.pfns, 'base64')
      const pfns = new Uint32Array(b.length / 4)
      for (let i = 0; i < pfns.length; i++) pfns[i] = b.readUInt32LE(i * 4)
      out.set(e.epoch, pfns)
    }
    return out
  }

  /** Closes cached control connections (they never keep the process alive anyway). */
  close(): void {
    for (const domid of [...this.clients.keys()]) this.dropClient(domid)
  }
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim()
  } catch {
    return undefined
  }
}

function readPidFile(file: string): {pid: number; start: number} | undefined {
  const t = readText(file)
  if (!t) return undefined
  const [pid, start] = t.split(' ').map(Number)
  if (!pid || start === undefined || Number.isNaN(start)) return undefined
  return {pid, start}
}
