/**
 * A simulated domain: one process per domain, started detached by the host (`node domain-main.js
 * <domain folder>`). It owns the guest memory file, runs the guest workload, keeps the log-dirty
 * bitmap and serves the control socket. Single-threaded: a page write and its dirty bit happen in
 * one synchronous step, and control requests (clean swaps the bitmap) run between steps.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'

import {HypervisorError, type HypervisorErrorCode} from '../index.js'
import {
  decodeContext,
  defaultCpuPolicy,
  defaultHvmParams,
  defaultTscInfo,
  emptyGuestState,
  encodeContext,
  initialGuestState,
  checkWorkload,
} from './context.js'
import {HostLayout, type DomainRecord, type LaunchSpec} from './layout.js'
import {SIM_VIF_DEVID, SimNetback, defaultVifName, publishVif, withdrawVif} from './netback.js'
import {fillPage, PAGE_SIZE, SPECIAL_PAGES} from './page.js'
import {isAlive, killHard, procStart, waitGone} from '../../process/index.js'
import {encodeMessage, MessageDecoder, PROTOCOL_VERSION, type Ops, type Request, type RuntimeInfo, type WireCpuPolicy} from './protocol.js'
import {deviceModelPidKey, deviceModelXsPath} from '../index.js'
import {GuestDiskLink, readGuestDiskKeys} from './guest-disk-link.js'
import {SimStore} from './store.js'
import {GuestCpu, DISK_BLOCK_BYTES, diskWriteOffset, type GuestOutput} from './workload.js'

const TICK_MS = 4
/** Steps run per slice at most: 20 ms of guest time, then the event loop gets a turn. */
const SLICE_SECONDS = 0.02
/** More than this far behind, the guest drops the backlog (counted in droppedSteps). */
const BACKLOG_SECONDS = 1
/** How long going away waits for the store to take the vif's backend directory out. */
const WITHDRAW_TIMEOUT_MS = 1000
const INIT_CHUNK_PAGES = 1024

const folder = process.argv[2]
if (!folder) {
  process.stderr.write('usage: domain-main <domain folder>\n')
  process.exit(2)
}
process.umask(0o077)

const log = (msg: string): void => {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`)
}

const launch = JSON.parse(fs.readFileSync(path.join(folder, 'launch.json'), 'utf8')) as LaunchSpec
const domid = launch.domid
const pages = launch.pages
fs.writeFileSync(path.join(folder, 'pid'), `${process.pid} ${procStart(process.pid) ?? 0}\n`)
log(`domain ${domid}: ${pages} pages, ${launch.forRestore ? 'built for restore' : 'booting'}`)

class DomainFault extends Error {
  constructor(
    readonly code: HypervisorErrorCode,
    message: string,
  ) {
    super(message)
  }
}
const fault = (code: HypervisorErrorCode, message: string): never => {
  throw new DomainFault(code, `domain ${domid}: ${message}`)
}

// ---- guest memory -------------------------------------------------------------------------------
/**
 * A start that cannot go on: says why in the log and on the readiness pipe, where the creator reads
 * it (the domain folder, log included, goes with us).
 */
function tellCreatorWhy(why: string): void {
  log(why)
  try {
    fs.writeSync(3, `failed: ${why.replaceAll('\n', ' ')}\n`)
  } catch {
    // no readiness pipe
  }
}

let memFd: number
try {
  memFd = fs.openSync(launch.memPath, 'w+', 0o600)
  fs.ftruncateSync(memFd, pages * PAGE_SIZE)
} catch (e) {
  tellCreatorWhy(`cannot create its memory ${launch.memPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
  process.exit(1)
}
if (!launch.forRestore) {
  const t0 = performance.now()
  const chunk = Buffer.alloc(INIT_CHUNK_PAGES * PAGE_SIZE)
  const pattern = Buffer.alloc(16)
  const firstSpecial = pages - SPECIAL_PAGES
  for (let base = 0; base < pages; base += INIT_CHUNK_PAGES) {
    const n = Math.min(INIT_CHUNK_PAGES, pages - base)
    for (let i = 0; i < n; i++) {
      const pfn = base + i
      if (pfn >= firstSpecial) chunk.fill(0, i * PAGE_SIZE, (i + 1) * PAGE_SIZE)
      else fillPage(chunk, i * PAGE_SIZE, pfn, 0, pattern)
    }
    let done = 0
    while (done < n * PAGE_SIZE) done += fs.writeSync(memFd, chunk, done, n * PAGE_SIZE - done, base * PAGE_SIZE + done)
  }
  log(`memory initialised in ${(performance.now() - t0).toFixed(0)} ms`)
}

// ---- state --------------------------------------------------------------------------------------
const guest = new GuestCpu(launch.forRestore ? emptyGuestState() : initialGuestState(undefined, pages))
let paused = launch.paused || launch.forRestore
let suspended = false
let shutdownPending = false
let dying = false
let stopAt: number | null = null
let droppedSteps = 0
const hvmParams = new Map<number, bigint>(defaultHvmParams(pages, launch.type).map((p) => [p.index, p.value]))
let tsc = defaultTscInfo()
let tscSetAt = process.hrtime.bigint()
let cpuPolicy = defaultCpuPolicy()

const logDirty = {enabled: false, bits: new Uint8Array(0), epoch: 0, writes: 0}
const writeLog = {enabled: false, epochs: new Map<number, {pfns: Uint32Array; n: number}>()}

/**
 * The device model libxl started for this domain (its pid and start time, once seen in xenstore):
 * it ends with the domain, as qemu-xen ends when its domain is destroyed.
 */
let deviceModel: {pid: number; start: number} | undefined
/** The guest's disk, linked to the device model once libxl says where it takes the guest's I/O. */
let disk: GuestDiskLink | undefined
const store = new SimStore(launch.root)

/** The guest's NIC as dom0's interface (netback.ts): set before the domain is ready. */
let netback: SimNetback | undefined
/** Connections holding the guest still (checksum, integrity check): released when they close. */
const holders = new Map<net.Socket, number>()

// ---- the guest's output -------------------------------------------------------------------------
const pageBuf = Buffer.alloc(PAGE_SIZE)
const pattern = Buffer.alloc(16)
const output: GuestOutput = {
  writePage(pfn, gen) {
    fillPage(pageBuf, 0, pfn, gen, pattern)
    fs.writeSync(memFd, pageBuf, 0, PAGE_SIZE, pfn * PAGE_SIZE)
    if (logDirty.enabled) {
      logDirty.bits[pfn >>> 3]! |= 1 << (pfn & 7)
      logDirty.writes++
    }
    if (writeLog.enabled) {
      let e = writeLog.epochs.get(logDirty.epoch)
      if (!e) writeLog.epochs.set(logDirty.epoch, (e = {pfns: new Uint32Array(1024), n: 0}))
      if (e.n === e.pfns.length) {
        const grown = new Uint32Array(e.pfns.length * 2)
        grown.set(e.pfns)
        e.pfns = grown
      }
      e.pfns[e.n++] = pfn
    }
  },
  diskWrite(index, pattern) {
    // A guest without a device model has no disk to write: the request goes nowhere.
    if (disk) disk.queue.push(diskWriteOffset(index, disk.bytes), DISK_BLOCK_BYTES, pattern)
  },
  frame(frame) {
    netback?.emit(frame)
  },
}

// ---- running ------------------------------------------------------------------------------------
let timer: NodeJS.Timeout | NodeJS.Immediate | undefined
let baseTime = 0
let baseStep = 0

const busy = (): boolean => guest.state.hasWorkload && (guest.state.dirtyRate > 0 || guest.state.packetRate > 0)
/** The guest executes (or would, if it had work): not paused, not shut down, has a context. */
/** Not stopped by the controller, a shutdown or a missing context (what xl list shows as r or b). */
const mayRun = (): boolean => !paused && !suspended && !dying && guest.state.hasWorkload
const executing = (): boolean => mayRun() && holders.size === 0

function cancelTimer(): void {
  if (timer === undefined) return
  clearTimeout(timer as NodeJS.Timeout)
  clearImmediate(timer as NodeJS.Immediate)
  timer = undefined
}

/** Call after any state change: starts or stops the clock and acts on a pending shutdown. */
function reschedule(): void {
  if (shutdownPending && executing()) {
    // The guest acts on the request once it runs; the answer to the request at hand goes out first.
    cancelTimer()
    setImmediate(() => teardown('shutdown (poweroff)'))
    return
  }
  if (!executing() || !busy()) {
    cancelTimer()
    return
  }
  if (timer === undefined) {
    baseTime = performance.now()
    baseStep = guest.step
    timer = setTimeout(tick, TICK_MS)
  }
}

function tick(): void {
  timer = undefined
  if (!executing() || !busy()) return
  // Blocked on its disk: runs again when a request completes (onProgress reschedules).
  if (disk?.queue.backlogged) return
  const rate = guest.state.stepRate
  const now = performance.now()
  let due = baseStep + Math.floor(((now - baseTime) * rate) / 1000) - guest.step
  const backlog = Math.ceil(rate * BACKLOG_SECONDS)
  if (due > backlog) {
    droppedSteps += due - backlog
    baseTime = now
    baseStep = guest.step + backlog
    due = backlog
  }
  let n = Math.min(due, Math.max(1, Math.ceil(rate * SLICE_SECONDS)))
  if (stopAt !== null) n = Math.min(n, stopAt - guest.step)
  if (n > 0) guest.run(n, output, Math.random)
  if (stopAt !== null && guest.step >= stopAt) {
    log(`stopped at step ${guest.step}`)
    stopAt = null
    paused = true
    return
  }
  timer = due - n > 0 ? setImmediate(tick) : setTimeout(tick, TICK_MS)
}

// ---- requests -----------------------------------------------------------------------------------
function requireStopped(what: string): void {
  if (executing()) fault('bad-state', `is running: pause or suspend it before ${what}`)
}

function runtimeInfo(): RuntimeInfo {
  const cpu = process.cpuUsage()
  return {
    pid: process.pid,
    paused,
    suspended,
    shutdownPending,
    dying,
    hasContext: guest.state.hasWorkload,
    busy: busy(),
    running: mayRun() && busy(),
    cpuTimeNs: (cpu.user + cpu.system) * 1000,
    step: guest.step,
    writes: guest.state.writes,
    frames: guest.state.frames,
    perturbations: guest.state.perturbations,
    droppedSteps,
    stepRate: guest.state.stepRate,
    logDirty: logDirty.enabled,
    writeLog: writeLog.enabled,
    stopAt,
    holds: holders.size,
    framesDropped: netback?.dropped ?? 0,
    ...(disk ? {disk: disk.queue.stats()} : {}),
  }
}

/** Suspend and pause answer once the guest's disk requests are done (QEMU's stop drains too). */
function afterDiskDrained(): Promise<{}> | {} {
  return disk && disk.queue.pending > 0 ? disk.queue.drained().then(() => ({})) : {}
}

function u64(text: string, what: string): bigint {
  let v: bigint
  try {
    v = BigInt(text)
  } catch {
    return fault('bad-request', `${what} ${JSON.stringify(text)} is not an integer`)
  }
  if (v < 0n || v >= 1n << 64n) fault('bad-request', `${what} ${v} is out of range`)
  return v
}

function u32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) fault('bad-request', `${what} ${String(v)} is not a u32`)
  return v as number
}

function checkPolicy(p: WireCpuPolicy): void {
  if (!Array.isArray(p.cpuid) || !Array.isArray(p.msrs)) fault('bad-request', 'CPU policy needs cpuid and msrs lists')
  for (const l of p.cpuid) for (const k of ['leaf', 'subleaf', 'a', 'b', 'c', 'd'] as const) u32(l[k], `cpuid ${k}`)
  for (const m of p.msrs) {
    u32(m.index, 'msr index')
    u64(m.value, 'msr value')
  }
}

type Handler<K extends keyof Ops> = (args: Ops[K]['args'], socket: net.Socket) => Ops[K]['result'] | Promise<Ops[K]['result']>
const handlers: {[K in keyof Ops]: Handler<K>} = {
  hello: () => ({protocol: PROTOCOL_VERSION, domid, pid: process.pid}),
  info: () => runtimeInfo(),
  pause: () => {
    paused = true
    reschedule()
    return afterDiskDrained()
  },
  unpause: async () => {
    await diskBeforeRunning()
    paused = false
    reschedule()
    return {}
  },
  suspend: () => {
    if (suspended) fault('bad-state', 'is already suspended')
    suspended = true
    log(`suspended at step ${guest.step}`)
    reschedule()
    return afterDiskDrained()
  },
  resume: async ({cancel}) => {
    if (!suspended) fault('bad-state', 'is not suspended (shutdown reason is not suspend)')
    await diskBeforeRunning()
    suspended = false
    log(`resumed (${cancel ? 'suspend cancelled' : 'new context'}) at step ${guest.step}`)
    reschedule()
    return {}
  },
  shutdown: () => {
    shutdownPending = true
    const goes = executing()
    reschedule()
    return {gone: goes}
  },
  destroy: () => ({}),
  'load-workload': ({workload}) => {
    if (launch.forRestore || guest.state.step > 0 || !paused) fault('bad-state', 'loads a workload only when built and not yet run')
    checkWorkload(workload, pages, domid)
    guest.load(initialGuestState(workload, pages))
    log(`workload loaded: ${JSON.stringify(workload)}`)
    return {}
  },
  'log-dirty': ({action}) => {
    switch (action) {
      case 'enable':
        if (logDirty.enabled) fault('bad-state', 'log-dirty mode is already enabled')
        logDirty.enabled = true
        logDirty.bits = new Uint8Array(Math.ceil(pages / 8))
        logDirty.epoch++
        logDirty.writes = 0
        return {}
      case 'disable':
        logDirty.enabled = false
        logDirty.bits = new Uint8Array(0)
        return {}
      case 'peek':
      case 'clean': {
        if (!logDirty.enabled) fault('bad-state', 'log-dirty mode is not enabled')
        const {bits, epoch, writes} = logDirty
        const bitmap = Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength).toString('base64')
        if (action === 'clean') {
          logDirty.bits = new Uint8Array(bits.length)
          logDirty.epoch++
          logDirty.writes = 0
        }
        return {bitmap, pages, epoch, writes}
      }
      default:
        return fault('bad-request', `unknown log-dirty action ${String(action)}`)
    }
  },
  'get-context': () => ({data: encodeContext(guest.save(), tsc.khz).toString('base64')}),
  'set-context': ({data}) => {
    requireStopped('setting its vCPU context')
    const state = decodeContext(Buffer.from(data, 'base64'), pages, domid)
    guest.load(state)
    log(`vCPU context set: step ${state.step}`)
    reschedule()
    return {}
  },
  'get-hvm-params': () => ({params: [...hvmParams].sort((a, b) => a[0] - b[0]).map(([index, value]) => ({index, value: String(value)}))}),
  'set-hvm-params': ({params}) => {
    const checked = params.map((p) => [u32(p.index, 'HVM param index'), u64(p.value, `HVM param ${p.index}`)] as const)
    for (const [i, v] of checked) hvmParams.set(i, v)
    return {}
  },
  'get-tsc': () => ({
    mode: tsc.mode,
    khz: tsc.khz,
    nsec: String(tsc.nsec + (process.hrtime.bigint() - tscSetAt)),
    incarnation: tsc.incarnation,
  }),
  'set-tsc': (t) => {
    tsc = {mode: u32(t.mode, 'TSC mode'), khz: u32(t.khz, 'TSC khz'), nsec: u64(t.nsec, 'TSC nsec'), incarnation: u32(t.incarnation, 'TSC incarnation')}
    tscSetAt = process.hrtime.bigint()
    return {}
  },
  'get-cpu-policy': () => ({
    cpuid: cpuPolicy.cpuid.map((l) => ({...l})),
    msrs: cpuPolicy.msrs.map((m) => ({index: m.index, value: String(m.value)})),
  }),
  'set-cpu-policy': (p) => {
    checkPolicy(p)
    cpuPolicy = {cpuid: p.cpuid.map((l) => ({...l})), msrs: p.msrs.map((m) => ({index: m.index, value: BigInt(m.value)}))}
    return {}
  },
  hold: ({on}, socket) => {
    const n = (holders.get(socket) ?? 0) + (on ? 1 : -1)
    if (n > 0) holders.set(socket, n)
    else holders.delete(socket)
    reschedule()
    return {}
  },
  'run-steps': async ({n}) => {
    requireStopped('running steps by hand')
    await diskBeforeRunning()
    if (!guest.state.hasWorkload) fault('bad-state', 'has no vCPU context yet')
    if (!Number.isSafeInteger(n) || n < 0) fault('bad-request', `cannot run ${n} steps`)
    guest.run(n, output, Math.random)
    return {step: guest.step}
  },
  'stop-at': ({step}) => {
    if (step !== null && (!Number.isSafeInteger(step) || step < 0)) fault('bad-request', `bad stop step ${step}`)
    stopAt = step
    if (stopAt !== null && guest.step >= stopAt) {
      stopAt = null
      paused = true
      reschedule()
    }
    return {step: guest.step}
  },
  'disk-verify': async ({patterns}) => {
    if (!disk) return fault('bad-state', 'has no device-model disk')
    if (!Array.isArray(patterns) || patterns.length > Math.floor(disk.bytes / DISK_BLOCK_BYTES)) fault('bad-request', 'patterns do not fit the disk')
    const mismatches: number[] = []
    for (let i = 0; i < patterns.length; i++) {
      const p = patterns[i]!
      if (p > 255) continue
      if (!(await disk.io.verify(disk.keys.drive, p, i * DISK_BLOCK_BYTES, DISK_BLOCK_BYTES))) mismatches.push(i)
    }
    return {blocks: patterns.length, mismatches}
  },
  'write-log': ({enable}) => {
    writeLog.enabled = enable
    writeLog.epochs.clear()
    return {}
  },
  'write-log-read': () => ({
    epochs: [...writeLog.epochs]
      .sort((a, b) => a[0] - b[0])
      .map(([epoch, e]) => ({epoch, pfns: Buffer.from(e.pfns.buffer, 0, e.n * 4).toString('base64')})),
  }),
}

function handle(req: Request, socket: net.Socket): void {
  const id = req.id
  const failed = (e: unknown): unknown => {
    if (e instanceof DomainFault || e instanceof HypervisorError) return {id, ok: false, code: e.code, message: e.message}
    log(`request ${req.op} failed: ${(e as Error).stack ?? String(e)}`)
    return {id, ok: false, code: 'backend-failure', message: `domain ${domid}: ${req.op} failed: ${(e as Error).message}`}
  }
  const reply = (answer: unknown): void => {
    if (req.op === 'destroy' && (answer as {ok: boolean}).ok) {
      socket.write(encodeMessage(answer), () => teardown('destroy'))
      setTimeout(() => teardown('destroy'), 200).unref()
      return
    }
    if (!socket.destroyed) socket.write(encodeMessage(answer))
  }
  try {
    if (dying) fault('no-such-domain', 'is being destroyed')
    const h = handlers[req.op] as Handler<keyof Ops> | undefined
    if (!h) fault('bad-request', `unknown control request ${JSON.stringify(req.op)}`)
    const result = h!(req as never, socket)
    if (result instanceof Promise) result.then((r) => reply({id, ok: true, ...r}), (e: unknown) => reply(failed(e)))
    else reply({id, ok: true, ...result})
  } catch (e) {
    reply(failed(e))
  }
}

// ---- teardown -----------------------------------------------------------------------------------
let tornDown = false
function teardown(reason: string, code = 0): void {
  if (tornDown) return
  tornDown = true
  dying = true
  cancelTimer()
  log(`going away (${reason})`)
  netback?.close()
  server.close()
  const rm = (f: () => void): void => {
    try {
      f()
    } catch {
      // already gone
    }
  }
  rm(() => fs.closeSync(memFd))
  rm(() => fs.unlinkSync(launch.memPath))
  rm(() => fs.unlinkSync(launch.socketPath))
  const gone = (): void => {
    rm(() => fs.rmSync(folder!, {recursive: true, force: true}))
    // The vif leaves the store with its domain (libxl's device removal on Xen); bounded, as the store may be busy.
    const withdrawn = netback ? Promise.race([withdrawVif(store, domid, SIM_VIF_DEVID), new Promise((r) => setTimeout(r, WITHDRAW_TIMEOUT_MS))]) : Promise.resolve()
    withdrawn
      .catch((e: unknown) => log(`vif backend: ${(e as Error).message}`))
      .finally(() => setImmediate(() => process.exit(code)))
  }
  for (const w of watches) void w.close()
  void disk?.close()
  void endDeviceModel()
    .catch((e: unknown) => log(`device model: ${(e as Error).message}`))
    .finally(gone)
}

/** Ends the device model that xenstore named for this domain, if it still runs (SIGTERM, then SIGKILL). */
async function endDeviceModel(): Promise<void> {
  const dm = deviceModel
  if (!dm || !isAlive(dm.pid, dm.start)) return
  try {
    process.kill(dm.pid, 'SIGTERM')
  } catch {
    return
  }
  if (!(await waitGone(dm.pid, dm.start, 1000))) killHard(dm.pid, dm.start)
  log(`device model: QEMU ${dm.pid} ended with its domain`)
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => teardown(sig))
process.on('uncaughtException', (e) => {
  log(`fatal: ${e.stack ?? String(e)}`)
  teardown('crash', 1)
})

// ---- the control socket -------------------------------------------------------------------------
const server = net.createServer((socket) => {
  const decoder = new MessageDecoder()
  socket.on('data', (chunk: Buffer) => {
    let msgs: unknown[]
    try {
      msgs = decoder.push(chunk)
    } catch (e) {
      log(`bad control stream: ${(e as Error).message}`)
      socket.destroy()
      return
    }
    for (const m of msgs) handle(m as Request, socket)
  })
  socket.on('error', () => socket.destroy())
  socket.on('close', () => {
    if (holders.delete(socket)) reschedule()
  })
})
server.on('error', (e) => {
  log(`control socket: ${e.message}`)
  teardown('control socket failed', 1)
})

try {
  fs.unlinkSync(launch.socketPath)
} catch {
  // not there: good
}
function listen(): void {
  server.listen(launch.socketPath, () => {
    fs.chmodSync(launch.socketPath, 0o600)
    const record: DomainRecord = {...launch, pid: process.pid, pidStart: procStart(process.pid) ?? 0, readyAt: Date.now()}
    const recordPath = path.join(folder!, 'domain.json')
    fs.writeFileSync(`${recordPath}.tmp`, JSON.stringify(record, null, 2))
    fs.renameSync(`${recordPath}.tmp`, recordPath)
    try {
      fs.writeSync(3, 'ready\n')
      fs.closeSync(3)
    } catch {
      // started without a readiness pipe, or the creator is gone
    }
    log(`ready: control socket ${launch.socketPath}, ${paused ? 'paused' : 'running'}`)
    reschedule()
  })
}

// ---- the device model -----------------------------------------------------------------------------
// A guest blocked on its disk runs again as soon as a request completes.
const onDiskProgress = (): void => {
  if (timer === undefined && !disk?.queue.backlogged) reschedule()
}
/** The guest's NIC: its interface serves the frames, its backend directory names it in the store. */
async function startNetback(): Promise<SimNetback> {
  const ifname = defaultVifName(domid, SIM_VIF_DEVID)
  const dir = new HostLayout(launch.root).netDir
  fs.mkdirSync(dir, {recursive: true, mode: 0o700})
  const nb = await SimNetback.listen(ifname, path.join(dir, ifname))
  try {
    await publishVif(store, domid, SIM_VIF_DEVID)
  } catch (e) {
    nb.close()
    throw e
  }
  return nb
}
/** Notes the device model xenstore names (libxl's device-model-pid), so it ends with the domain. */
async function noteDeviceModel(): Promise<void> {
  const text = await store.read(deviceModelPidKey(domid)).catch(() => undefined)
  const pid = text && /^[1-9]\d*$/.test(text) ? Number(text) : undefined
  if (pid === undefined || deviceModel?.pid === pid) return
  const start = procStart(pid)
  if (start === undefined) return
  deviceModel = {pid, start}
  // The host ends it too when it reaps this domain after a crash.
  fs.writeFileSync(path.join(folder!, 'device-model.pid'), `${pid} ${start}\n`)
  log(`device model: QEMU ${pid}`)
}

/** A guest that writes its disk runs only once its device model takes the writes (if it has one). */
async function diskBeforeRunning(): Promise<void> {
  if (guest.state.diskEvery > 0 && !disk) await linkDisk()
}

let linking: Promise<void> | undefined
/**
 * Links the guest's disk to its device model when libxl has said where it takes the guest's I/O
 * (xenstore, sim-guest-disk/). Before the guest runs (unpause, resume) this is awaited, as Xen
 * has QEMU's ioreq server registered before libxl unpauses the domain.
 */
function linkDisk(): Promise<void> {
  if (disk || dying) return Promise.resolve()
  linking ??= (async () => {
    await noteDeviceModel()
    const keys = await readGuestDiskKeys(store, domid).catch(() => undefined)
    if (!keys) return
    try {
      const link = await GuestDiskLink.open(keys, onDiskProgress, () => {
        if (disk !== link) return
        log(`device model: QEMU ${keys.pid} is gone; the guest's disk with it`)
        disk = undefined
        reschedule()
      })
      if (dying) return void link.close()
      disk = link
      log(`device model: QEMU ${keys.pid} takes the guest's disk I/O (drive ${keys.drive}, ${link.bytes} bytes)`)
      reschedule()
    } catch (e) {
      log(`device model: cannot reach QEMU ${keys.pid} for the guest's disk: ${(e as Error).message}`)
    }
  })().finally(() => (linking = undefined))
  return linking
}

const watches: {close(): Promise<void>}[] = []
for (const key of [`/local/domain/${domid}/image`, deviceModelXsPath(domid)]) {
  store.watch(key, () => void linkDisk()).then(
    (w) => (dying ? void w.close() : watches.push(w)),
    (e: unknown) => log(`xenstore watch on ${key}: ${(e as Error).message}`),
  )
}
startNetback().then(
  (nb) => {
    if (dying) return void nb.close()
    netback = nb
    listen()
  },
  (e: unknown) => {
    tellCreatorWhy(`cannot set up its vif: ${(e as Error).message}`)
    teardown('devices failed', 1)
  },
)
