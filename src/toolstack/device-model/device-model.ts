/**
 * The device-model manager: one QEMU per domain, in the domain's folder, driven over QMP.
 *
 * `startDeviceModel({folder})` spawns `qemu-system-x86_64 -machine none -nodefaults -nographic
 * -display none -qmp unix:qmp.sock,server=on,wait=off [extra args]` with the folder as its working
 * directory, writes `qemu.pid`, and resolves once QEMU's QMP greeting has come and capabilities are
 * negotiated (QEMU 7.2 with `-machine none`: 50-100 ms). `stop()` ends it: `quit` over QMP, then
 * SIGTERM, then SIGKILL, each with a timeout, and removes `qemu.pid` and `qmp.sock`.
 *
 * Never left behind:
 * - QEMU is our child, never `-daemonize`d, so its end is seen (`exited`) and the files go with it.
 * - It is started through util-linux's `setpriv --pdeathsig SIGKILL` when that is there (Debian:
 *   always), so the kernel kills it when the Node thread that spawned it ends, however it ends.
 *   (Spawn from the main thread: a worker thread's end would take its QEMUs with it.)
 * - When this process exits normally, every QEMU it still runs is SIGKILLed and its files removed.
 * - It runs in its own session (detached), so a Ctrl-C at the terminal reaches us, not QEMU: the
 *   toolstack decides when the device model goes.
 * - `qemu.pid` (pid + start time) lets a later run end a QEMU left by a toolstack that could not clean
 *   up: `reapDeviceModel(folder)`, or `reapDeviceModels(root)` for every folder below a state root.
 * One QEMU per folder: starting a second one while the first runs is refused (`in-use`).
 *
 * QEMU's stdout and stderr are read all the time (HMP `qemu-io` prints on stdout), kept as a bounded
 * tail (`output()`) and passed line by line to `onOutput` listeners.
 */
import {spawn, type ChildProcess} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {procStart, sleep} from '../process/index.js'
import {LineFramer, QmpClient, QmpConnectionError, QmpTimeoutError, type FramedLine} from '../qmp/index.js'
import {DEFAULT_QEMU, PID_FILE, QEMU_ENV, QMP_SOCKET, deviceModelArgs} from './args.js'
import {resolveBinary} from './binary.js'
import {DeviceModelError} from './errors.js'
import {
  pidFileIsLive,
  readPidFile,
  reapFolder,
  removeDeviceModelFiles,
  writePidFile,
  type ReapOptions,
  type ReapResult,
} from './pid-file.js'

/** libxl gives QEMU 60 s (LIBXL_DEVICE_MODEL_START_TIMEOUT); `-machine none` needs 0.1 s. */
export const DEFAULT_START_TIMEOUT_MS = 10_000
/** Bytes of each of stdout and stderr kept by output(). */
const OUTPUT_TAIL_BYTES = 64 * 1024
/** Longer output lines are replaced by a marker. */
const OUTPUT_LINE_MAX = 64 * 1024
/** After QEMU's exit, how long its output may take to arrive before `exited` resolves without it. */
const OUTPUT_DRAIN_MS = 200
const SETPRIV = '/usr/bin/setpriv'

export interface DeviceModelOptions {
  /** The domain's folder (must exist). QEMU's working directory; `qmp.sock` and `qemu.pid` go there. */
  readonly folder: string
  /** The guest's name (`-name guest=...`). */
  readonly name?: string
  /** The QEMU binary: a path or a name looked up in PATH (default `$XL_TS_QEMU`, else qemu-system-x86_64). */
  readonly binary?: string
  /** Appended to QEMU's arguments; relative paths in them are relative to the folder. */
  readonly extraArgs?: readonly string[]
  /** Also open the toolstack's QMP monitor (TOOLSTACK_QMP_SOCKET in the folder). */
  readonly toolstackMonitor?: boolean
  /** From spawn to a negotiated QMP connection (default 10 s). */
  readonly startTimeoutMs?: number
  /** The QMP client's default command timeout (default 10 s). */
  readonly commandTimeoutMs?: number
  /** QEMU's environment (default: ours). */
  readonly env?: NodeJS.ProcessEnv
  /** Every line QEMU prints, from the start (before start() resolves). */
  readonly onOutput?: (line: OutputLine) => void
}

export interface OutputLine {
  readonly stream: 'stdout' | 'stderr'
  readonly text: string
}

export interface DeviceModelExit {
  /** The exit status, or null when a signal ended QEMU. */
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface StopOptions {
  /** After `quit` (default 5 s). */
  readonly quitTimeoutMs?: number
  /** After SIGTERM (default 3 s). */
  readonly termTimeoutMs?: number
  /** After SIGKILL, before giving up with `stop-failed` (default 3 s). */
  readonly killTimeoutMs?: number
}

export interface StopResult extends DeviceModelExit {
  /** What ended it: `quit` over QMP, a signal, or nothing (it had exited already). */
  readonly how: 'quit' | 'sigterm' | 'sigkill' | 'exited'
  readonly ms: number
}

/** The device models this process runs, by real folder path. */
const live = new Map<string, DeviceModel>()
let exitHookInstalled = false

function killAllOnExit(): void {
  for (const dm of live.values()) dm.killNow()
}

/** The last lines of a stream, about `max` characters of them. */
class OutputTail {
  private lines: string[] = []
  private bytes = 0
  constructor(private readonly max: number) {}
  push(line: string): void {
    this.lines.push(line)
    this.bytes += line.length + 1
    while (this.bytes > this.max && this.lines.length > 1) this.bytes -= this.lines.shift()!.length + 1
  }
  text(): string {
    return this.lines.join('\n')
  }
}

export class DeviceModel {
  readonly pid: number
  /** The domain folder, absolute. */
  readonly folder: string
  readonly socketPath: string
  readonly pidFile: string
  /** What was executed: the binary and its arguments (after setpriv's, when used). */
  readonly argv: readonly string[]
  /** True when QEMU dies with us (setpriv --pdeathsig SIGKILL). */
  readonly diesWithParent: boolean
  /** Resolves when QEMU has exited and its output has been read (never rejects). */
  readonly exited: Promise<DeviceModelExit>

  private qmpClient?: QmpClient
  private exitInfo?: DeviceModelExit
  private stopping?: Promise<StopResult>
  private readonly tails = {stdout: new OutputTail(OUTPUT_TAIL_BYTES), stderr: new OutputTail(OUTPUT_TAIL_BYTES)}
  private readonly outputListeners = new Set<(line: OutputLine) => void>()

  /** @internal use startDeviceModel() */
  constructor(
    private readonly child: ChildProcess,
    key: string,
    init: {folder: string; argv: readonly string[]; diesWithParent: boolean; onOutput?: (line: OutputLine) => void},
  ) {
    this.pid = child.pid!
    this.folder = init.folder
    this.socketPath = path.join(init.folder, QMP_SOCKET)
    this.pidFile = path.join(init.folder, PID_FILE)
    this.argv = init.argv
    this.diesWithParent = init.diesWithParent
    if (init.onOutput) this.outputListeners.add(init.onOutput)
    this.readOutput('stdout')
    this.readOutput('stderr')
    this.exited = new Promise((resolve) => {
      let drain: NodeJS.Timeout | undefined
      const done = () => {
        clearTimeout(drain)
        child.off('close', done)
        if (live.get(key) === this) {
          removeDeviceModelFiles(this.folder)
          live.delete(key)
        }
        resolve(this.exitInfo!)
      }
      child.once('exit', (code, signal) => {
        this.exitInfo = {code, signal}
        // Its last words may still be in the pipes: wait for them to close, unless something QEMU
        // started holds them open.
        drain = setTimeout(done, OUTPUT_DRAIN_MS)
        child.once('close', done)
      })
    })
  }

  /** The QMP connection (negotiated; the only one QEMU accepts on this socket). */
  get qmp(): QmpClient {
    return this.qmpClient!
  }

  /** @internal */
  attach(qmp: QmpClient): void {
    this.qmpClient = qmp
  }

  /** True until QEMU has exited. */
  get running(): boolean {
    return this.exitInfo === undefined
  }

  /** How QEMU exited, once it has. */
  get exit(): DeviceModelExit | undefined {
    return this.exitInfo
  }

  /** The last 64 Ki characters or so of QEMU's stdout or stderr, as lines joined with `\n`. */
  output(stream: 'stdout' | 'stderr' = 'stderr'): string {
    return this.tails[stream].text()
  }

  /** Calls `listener` with every line QEMU prints from now on, until the returned function is called. */
  onOutput(listener: (line: OutputLine) => void): () => void {
    this.outputListeners.add(listener)
    return () => this.outputListeners.delete(listener)
  }

  private readOutput(stream: 'stdout' | 'stderr'): void {
    const framer = new LineFramer(OUTPUT_LINE_MAX)
    const emit = (items: FramedLine[]) => {
      for (const item of items) {
        const text = 'line' in item ? item.line : `[a line of more than ${OUTPUT_LINE_MAX} bytes, dropped]`
        this.tails[stream].push(text)
        for (const listener of [...this.outputListeners]) {
          try {
            listener({stream, text})
          } catch {
            // a listener's failure is its own
          }
        }
      }
    }
    const pipe = this.child[stream]!
    pipe.on('data', (chunk: Buffer) => emit(framer.push(chunk)))
    pipe.on('end', () => emit(framer.flush()))
    pipe.on('error', () => {})
  }

  /** Resolves true when QEMU exits within `ms` (once `exited` has resolved: its output read, files gone). */
  private async exitsWithin(ms: number): Promise<boolean> {
    let t: NodeJS.Timeout | undefined
    const timedOut = new Promise<false>((resolve) => (t = setTimeout(() => resolve(false), ms)))
    const exited = await Promise.race([this.exited.then(() => true), timedOut])
    clearTimeout(t)
    if (exited || !this.exitInfo) return exited
    await this.exited // it did exit in time; its pipes are still draining
    return true
  }

  private signal(sig: NodeJS.Signals): void {
    if (this.exitInfo) return
    try {
      this.child.kill(sig)
    } catch {
      // gone in between
    }
  }

  /**
   * Ends QEMU: `quit` over QMP, then SIGTERM, then SIGKILL, waiting for its exit after each; closes
   * the QMP connection and removes `qemu.pid` and `qmp.sock`. Called again, returns the same result.
   * Rejects with `stop-failed` only if QEMU is still there after SIGKILL.
   */
  stop(options: StopOptions = {}): Promise<StopResult> {
    this.stopping ??= this.stopNow(options)
    return this.stopping
  }

  private async stopNow(options: StopOptions): Promise<StopResult> {
    const t0 = performance.now()
    let how: StopResult['how'] | undefined = this.exitInfo ? 'exited' : undefined
    const qmp = this.qmpClient
    if (!how && qmp?.isOpen) {
      const quitTimeoutMs = options.quitTimeoutMs ?? 5_000
      // The reply may not come: QEMU can close the socket as it exits.
      qmp.execute('quit', undefined, {timeoutMs: quitTimeoutMs}).catch(() => {})
      if (await this.exitsWithin(quitTimeoutMs)) how = 'quit'
    }
    if (!how) {
      this.signal('SIGTERM')
      if (await this.exitsWithin(options.termTimeoutMs ?? 3_000)) how = 'sigterm'
    }
    if (!how) {
      this.signal('SIGKILL')
      if (await this.exitsWithin(options.killTimeoutMs ?? 3_000)) how = 'sigkill'
    }
    await qmp?.close()
    if (how === 'exited') await this.exited
    if (!how) {
      throw new DeviceModelError('stop-failed', this.folder, `QEMU pid ${this.pid} (${this.folder}) is still there after SIGKILL`, {
        pid: this.pid,
      })
    }
    return {how, ...this.exitInfo!, ms: performance.now() - t0}
  }

  /** @internal SIGKILL and file removal, synchronous: for process exit. */
  killNow(): void {
    this.signal('SIGKILL')
    removeDeviceModelFiles(this.folder)
  }
}

/** The real path of an existing folder, or a `bad-folder` error. */
function checkFolder(folder: string): string {
  try {
    if (!fs.statSync(folder).isDirectory()) throw new Error('not a directory')
    return fs.realpathSync(folder)
  } catch (err) {
    throw new DeviceModelError('bad-folder', folder, `device model folder ${folder}: ${(err as Error).message}`, {cause: err})
  }
}

/**
 * With node:child_process, not execa (the card's package): QEMU is started by the simulated
 * domain's own process (domain-main, bundled by scripts/bundle.mjs), which loads no execa, and this
 * module is in all three bundles (domain, helper, guardian). With execa bundled in (esbuild then
 * needs a createRequire banner for cross-spawn's require()s), each of them starts 9-12 ms slower
 * although few ever start a QEMU (measured, each bundle at a bad argv: domain 70 -> 82 ms, median
 * of 31 runs; helper 77 -> 86, guardian 74 -> 83, 21 runs); the domain's start is on every
 * migration's path. Loaded from node_modules when QEMU starts, execa costs 67-77 ms (cold, 7 runs)
 * where QEMU's own spawn to QMP ready takes 19 ms (median of 7, `-machine none`, QEMU 7.2).
 */
function spawnQemu(binary: string, args: readonly string[], folder: string, env: NodeJS.ProcessEnv) {
  const diesWithParent = resolveBinary(SETPRIV, env) !== undefined
  const argv = [binary, ...args]
  const [file, ...rest] = diesWithParent ? [SETPRIV, '--pdeathsig', 'SIGKILL', '--', ...argv] : argv
  const child = spawn(file!, rest, {cwd: folder, env, detached: true, stdio: ['ignore', 'pipe', 'pipe']})
  return {child, argv, diesWithParent}
}

/**
 * Starts the device model of the domain in `options.folder`; resolves when it answers on QMP.
 * Rejects with a DeviceModelError (and leaves no process and no files): `bad-folder`, `not-found`,
 * `in-use` (a QEMU already runs there), `spawn`, `exited` (with QEMU's stderr), `timeout`, `not-qmp`.
 */
export async function startDeviceModel(options: DeviceModelOptions): Promise<DeviceModel> {
  const folder = path.resolve(options.folder)
  const key = checkFolder(folder)
  const env = options.env ?? process.env
  const wanted = options.binary ?? env[QEMU_ENV] ?? DEFAULT_QEMU
  const binary = resolveBinary(wanted, env)
  if (!binary) {
    throw new DeviceModelError('not-found', folder, `${wanted} not found (PATH or ${QEMU_ENV}); Debian's qemu-system-x86 provides it (scripts/setup installs it)`)
  }
  const running = live.get(key)
  if (running) {
    throw new DeviceModelError('in-use', folder, `a device model already runs for ${folder} (QEMU pid ${running.pid})`, {pid: running.pid})
  }
  const prior = readPidFile(folder)
  if (pidFileIsLive(prior)) {
    throw new DeviceModelError('in-use', folder, `a QEMU (pid ${prior.pid}) already runs for ${folder}; reapDeviceModel() ends it`, {pid: prior.pid})
  }
  removeDeviceModelFiles(folder) // stale ones

  const {child, argv, diesWithParent} = spawnQemu(binary, deviceModelArgs(options), folder, env)
  if (child.pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once('error', resolve))
    throw new DeviceModelError('spawn', folder, `cannot start ${binary}: ${err.message}`, {cause: err})
  }
  child.on('error', () => {}) // later errors (a failed kill) show as the exit
  const start = procStart(child.pid)
  if (start !== undefined) writePidFile(folder, {pid: child.pid, start})
  const dm = new DeviceModel(child, key, {folder, argv, diesWithParent, ...(options.onOutput ? {onOutput: options.onOutput} : {})})
  live.set(key, dm)
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.on('exit', killAllOnExit)
  }
  try {
    dm.attach(await connectWhenReady(dm, options))
    return dm
  } catch (err) {
    await dm.stop({quitTimeoutMs: 0, termTimeoutMs: 0}).catch(() => {})
    throw err
  }
}

/** Connects to QEMU's QMP socket as soon as it listens; fails as soon as QEMU exits. */
async function connectWhenReady(dm: DeviceModel, options: DeviceModelOptions): Promise<QmpClient> {
  const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS
  const deadline = Date.now() + timeoutMs
  const label = `QEMU pid ${dm.pid}`
  const details = () => ({pid: dm.pid, stderr: dm.output('stderr')})
  const exitedError = async () => {
    await dm.exited // with all it said
    const e = dm.exit!
    const how = e.signal ? `signal ${e.signal}` : `status ${e.code}`
    const said = dm.output('stderr').trim()
    return new DeviceModelError('exited', dm.folder, `QEMU pid ${dm.pid} exited (${how}) before it answered on QMP${said ? `: ${said}` : ''}`, details())
  }
  for (let wait = 5; ; wait = Math.min(wait * 2, 50)) {
    if (!dm.running) throw await exitedError()
    const left = deadline - Date.now()
    if (left <= 0) break
    try {
      return await QmpClient.connect(dm.socketPath, {
        timeoutMs: left,
        label,
        ...(options.commandTimeoutMs === undefined ? {} : {commandTimeoutMs: options.commandTimeoutMs}),
      })
    } catch (err) {
      if (!dm.running) throw await exitedError()
      if (err instanceof QmpTimeoutError) break
      const notYet = err instanceof QmpConnectionError && err.code === 'connect' && (err.errno === 'ENOENT' || err.errno === 'ECONNREFUSED')
      if (!notYet) {
        // QEMU closing on us is QEMU exiting (a bad -drive, say): say what it said.
        if (await Promise.race([dm.exited.then(() => true), sleep(OUTPUT_DRAIN_MS * 2).then(() => false)])) throw await exitedError()
        const code = err instanceof QmpConnectionError && err.code === 'not-qmp' ? 'not-qmp' : 'exited'
        throw new DeviceModelError(code, dm.folder, `QEMU pid ${dm.pid}: ${(err as Error).message}`, {...details(), cause: err})
      }
    }
    await Promise.race([sleep(Math.min(wait, Math.max(1, deadline - Date.now()))), dm.exited])
  }
  throw new DeviceModelError('timeout', dm.folder, `QEMU pid ${dm.pid} did not answer on QMP within ${timeoutMs} ms`, details())
}

/**
 * Ends the device model of `folder`, whoever started it: this process's with stop(); another's (a
 * toolstack that died) found by `qemu.pid`, with SIGTERM then SIGKILL. Removes `qemu.pid` and
 * `qmp.sock` either way. `how` says what there was.
 */
export async function reapDeviceModel(folder: string, options: ReapOptions = {}): Promise<ReapResult> {
  const abs = path.resolve(folder)
  let key = abs
  try {
    key = fs.realpathSync(abs)
  } catch {
    // gone: nothing of ours can run there
  }
  const dm = live.get(key)
  if (dm) {
    await dm.stop(options)
    return {folder: abs, how: 'stopped', pid: dm.pid, removed: removeDeviceModelFiles(abs)}
  }
  return reapFolder(abs, options)
}

/**
 * reapDeviceModel() for every folder at or below `root` (up to `maxDepth` levels down, default 3:
 * `<root>/domains/<domid>/`) that holds a `qemu.pid` or a `qmp.sock`. Symbolic links are not followed.
 */
export async function reapDeviceModels(root: string, options: ReapOptions & {readonly maxDepth?: number} = {}): Promise<ReapResult[]> {
  const folders: string[] = []
  const walk = (dir: string, depth: number) => {
    let entries: fs.Dirent[]
    try {
      entries = fs.readdirSync(dir, {withFileTypes: true})
    } catch {
      return
    }
    if (entries.some((e) => !e.isDirectory() && (e.name === PID_FILE || e.name === QMP_SOCKET))) folders.push(dir)
    if (depth <= 0) return
    for (const e of entries) if (e.isDirectory()) walk(path.join(dir, e.name), depth - 1)
  }
  walk(path.resolve(root), options.maxDepth ?? 3)
  const results: ReapResult[] = []
  for (const folder of folders) results.push(await reapDeviceModel(folder, options))
  return results
}
