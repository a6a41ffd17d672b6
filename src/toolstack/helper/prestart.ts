/**
 * Starting our save/restore helper before its argv is known: a Node program takes ~40 ms of CPU to
 * start, and a migration's fixed cost is where it would otherwise start (the sender after the xl
 * header, the receiver once its domain exists, both at the same moment on the same cores). A
 * prestarted helper is spawned while the toolstack waits anyway (the sender for the receiver's
 * banner, the receiver for the sender's header), with its stream fds and its callback channel
 * already in place, and waits on its stdin:
 *
 *   argv:  <our helper> --await-argv --save-domain|--restore-domain
 *   stdin: u32 length (little endian), then JSON: the helper's argv and the changes to its
 *          environment (argv.ts: AwaitedStart); after it the callback protocol's replies, as for a
 *          helper started with its argv.
 *   stdin closed before that: the helper was not needed; it exits 0 without a word.
 *
 * Only our own helper run by this Node is prestarted: a `LIBXL_SAVE_HELPER` program knows only
 * Xen's argv and is started with it when it is needed, as libxl does. A prestarted helper that
 * died meanwhile is not used: the start falls back to a fresh one.
 */
import type {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs'

import {nodeProgramEnv} from '../entry-points.js'
import {blockingFd, fdFlags, spawnWithFds, type ChildStdio} from '../fd/index.js'
import {procStart} from '../process/index.js'
import {AWAIT_ARGV_FLAG, encodeAwaitedStart} from './argv.js'


export interface BlockingFd {
  readonly fd: number
  readonly original: number
  readonly reopened: boolean
  close(): void
}

/**
 * `fd` as Xen's helper expects it, blocking: a non-blocking pipe (our stdout under oclif) gets a
 * blocking description of its own (see blockingFd). A socket cannot be reopened: it is passed as it
 * is and `warnings` says so.
 */
export function blockingForHelper(fd: number, what: string, ensure: boolean, warnings: string[]): BlockingFd {
  const asIs = {fd, original: fd, reopened: false, close: () => {}}
  if (!ensure) return asIs
  try {
    if (!fdFlags(fd).nonBlocking) return asIs
    const b = blockingFd(fd, what)
    return {fd: b.fd, original: fd, reopened: b.reopened, close: () => b.close()}
  } catch (err) {
    warnings.push(`${what} (fd ${fd}) is non-blocking and stays so: ${err instanceof Error ? err.message : String(err)}`)
    return asIs
  }
}

/** What file or pipe an fd is, and which end (another fd of it, a reopen of it, is the same): device, inode, access. */
function fileOf(fd: number | undefined): string | undefined {
  if (fd === undefined || fd < 0) return undefined
  try {
    const st = fs.fstatSync(fd)
    return `${st.dev}:${st.ino}:${fdFlags(fd).access}`
  } catch {
    return `fd ${fd}`
  }
}

/** The helper process as spawned: the fds it got for ours, in order (stream, back channel). */
export interface SpawnedHelper {
  readonly child: ChildProcess
  readonly childFds: readonly number[]
  readonly strays: readonly number[]
  readonly reopened: readonly number[]
  readonly warnings: readonly string[]
}

export interface HelperSpawnOptions {
  readonly file: string
  /** The stream fd, then the back channel fd if any (ours). */
  readonly fds: readonly number[]
  readonly env?: NodeJS.ProcessEnv
  readonly stderr?: ChildStdio
  readonly ownSession?: boolean
  readonly ensureBlocking?: boolean
}

/** Spawns a helper with our fds passed in (blocking), stdin and stdout the callback channel. */
export function spawnHelperProcess(opts: HelperSpawnOptions, argsFor: (childFds: readonly number[]) => readonly string[]): SpawnedHelper {
  const warnings: string[] = []
  const blocking = opts.fds.map((fd, i) => blockingForHelper(fd, i === 0 ? 'stream fd' : 'back channel fd', opts.ensureBlocking ?? true, warnings))
  try {
    const spawned = spawnWithFds(opts.file, argsFor, {
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: opts.stderr ?? 'inherit',
      pass: blocking.map((b) => b.fd),
      // A helper run by this Node (ours, unless the caller named another script) starts without
      // what only costs Node start-up time; any other program gets the environment as given.
      ...(opts.file === process.execPath ? {env: nodeProgramEnv(opts.env ?? process.env)} : opts.env ? {env: opts.env} : {}),
      ...(opts.ownSession ? {ownSession: true} : {}),
    })
    return {...spawned, reopened: blocking.filter((b) => b.reopened).map((b) => b.original), warnings}
  } finally {
    // The child has its own copies now.
    for (const b of blocking) b.close()
  }
}

export interface PrestartOptions {
  readonly mode: 'save' | 'restore'
  /** Our helper's program: this Node and the script (resolveHelperCommand without LIBXL_SAVE_HELPER). */
  readonly file: string
  readonly script: string
  /** The stream fd, and the back channel's for COLO. */
  readonly ioFd: number
  readonly backFd?: number
  readonly env?: NodeJS.ProcessEnv
  readonly stderr?: ChildStdio
  readonly ownSession?: boolean
  readonly ensureBlocking?: boolean
  /** Until it is taken, it does not keep this process alive (started before anyone will dispose of it). */
  readonly background?: boolean
}

/** A helper started ahead of its argv (see the top of this file); used once, or disposed of. */
export class PrestartedHelper {
  #state: 'waiting' | 'taken' | 'disposed' = 'waiting'
  /** The stream's and the back channel's file, as when started (the fds may be closed since). */
  readonly #files: readonly (string | undefined)[]

  private constructor(
    readonly opts: PrestartOptions,
    readonly spawned: SpawnedHelper,
  ) {
    this.#files = [fileOf(opts.ioFd), fileOf(opts.backFd)]
    // Until it is taken, nobody else listens: a helper that dies meanwhile must not raise.
    spawned.child.once('error', () => {})
    spawned.child.stdin?.on('error', () => {})
    if (opts.background) this.#hold(false)
  }

  /** Whether the child and its pipes keep this process alive. */
  #hold(hold: boolean): void {
    const c = this.spawned.child
    for (const h of [c, c.stdin, c.stdout, c.stderr] as ({ref?: () => void; unref?: () => void} | null)[]) {
      if (hold) h?.ref?.()
      else h?.unref?.()
    }
  }

  static start(opts: PrestartOptions): PrestartedHelper {
    const fds = opts.backFd === undefined || opts.backFd < 0 ? [opts.ioFd] : [opts.ioFd, opts.backFd]
    const mode = opts.mode === 'save' ? '--save-domain' : '--restore-domain'
    const spawned = spawnHelperProcess({...opts, file: opts.file, fds}, () => [opts.script, AWAIT_ARGV_FLAG, mode])
    return new PrestartedHelper(opts, spawned)
  }

  get pid(): number | undefined {
    return this.spawned.child.pid
  }

  /**
   * Still waiting for its argv: not taken, not disposed of, not dead. Its exit may not have reached
   * our event loop yet (we may have been stopped meanwhile): a zombie counts as dead.
   */
  get waiting(): boolean {
    const c = this.spawned.child
    if (this.#state !== 'waiting' || c.pid === undefined || c.exitCode !== null || c.signalCode !== null || !c.stdin?.writable) return false
    return procStart(c.pid) !== undefined
  }

  /**
   * The waiting helper, for a start of this mode with these fds and this program; undefined when
   * it does not fit or is gone (then it is disposed of). Gives it `argsFor(its fds)` and the
   * environment `env` at once (what differs from the one it was started with).
   */
  take(
    want: {
      mode: 'save' | 'restore'
      ioFd: number
      backFd?: number
      file: string
      args: readonly string[]
      env?: NodeJS.ProcessEnv
      stderr?: ChildStdio
      ownSession?: boolean
    },
    argsFor: (childFds: readonly number[]) => readonly string[],
  ): SpawnedHelper | undefined {
    const o = this.opts
    const fits =
      want.mode === o.mode &&
      fileOf(want.ioFd) === this.#files[0] &&
      fileOf(want.backFd) === this.#files[1] &&
      want.file === o.file &&
      want.args.length === 1 &&
      want.args[0] === o.script &&
      (want.stderr ?? 'inherit') === (o.stderr ?? 'inherit') &&
      !!want.ownSession === !!o.ownSession
    if (!fits || !this.waiting) {
      this.dispose()
      return undefined
    }
    this.#state = 'taken'
    if (o.background) this.#hold(true)
    const before = nodeProgramEnv(o.env ?? process.env)
    const after = nodeProgramEnv(want.env ?? process.env)
    const env: Record<string, string | null> = {}
    for (const [k, v] of Object.entries(after)) if (v !== undefined && before[k] !== v) env[k] = v
    for (const k of Object.keys(before)) if (after[k] === undefined) env[k] = null
    this.spawned.child.stdin!.write(encodeAwaitedStart({argv: [...argsFor(this.spawned.childFds)], env}))
    return this.spawned
  }

  /** Not needed after all: its stdin closes and it exits without a word (a no-op once taken). */
  dispose(): void {
    if (this.#state !== 'waiting') return
    this.#state = 'disposed'
    const c = this.spawned.child
    c.stdin?.end()
    c.stdout?.resume()
    c.stderr?.resume()
  }
}
