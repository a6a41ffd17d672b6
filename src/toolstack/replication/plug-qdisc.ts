/**
 * The plug qdisc that holds a Remus primary's network output (XEN-FACTS §10.3): scripts/
 * remus-netbuf-setup redirects a vif's incoming IPv4 traffic to an ifb device whose root qdisc is a
 * `plug`; at each checkpoint the toolstack starts a new epoch after the suspend (libxl's
 * rtnl_qdisc_plug_buffer) and lets the previous epoch out once the backup has the checkpoint
 * (rtnl_qdisc_plug_release_one).
 *
 * Both the script and this module drive the qdisc with iproute2's `tc` (plug support since iproute2
 * 5.3): `tc qdisc change dev IFB root plug block | release | release_indefinite`, `release` being
 * the kernel's TCQ_PLUG_RELEASE_ONE. The kernel side is the sch_plug module. A new plug qdisc holds
 * everything until the first release; `block` moves what is held now into the previous epoch,
 * `release` lets that epoch out, `release_indefinite` stops buffering until the next `block`.
 *
 * `probePlugQdisc()` finds out whether this machine can do all that, in a throwaway network
 * namespace that is deleted again whatever happens.
 */
import * as crypto from 'node:crypto'
import {execa} from 'execa'

/** What the plug qdisc may hold, in bytes (Xen's 10 MB). */
export const PLUG_LIMIT_BYTES = 10_000_000

/** Linux network device names: at most 15 bytes (IFNAMSIZ - 1); the usual characters, no leading '-'. */
const IFNAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$/
/** Network namespace names (files under /run/netns). */
const NETNS = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$/

const TC_TIMEOUT_MS = 10_000

export function isValidDeviceName(name: string): boolean {
  return IFNAME.test(name) && name !== '.' && name !== '..'
}

function isValidNetnsName(name: string): boolean {
  return NETNS.test(name) && name !== '.' && name !== '..'
}

export type PlugQdiscErrorCode =
  | 'bad-name' // a device or namespace name we refuse to pass on
  | 'not-plug' // the device has no plug qdisc as its root
  | 'tc-failed' // tc said no

export class PlugQdiscError extends Error {
  override readonly name = 'PlugQdiscError'
  constructor(
    readonly code: PlugQdiscErrorCode,
    message: string,
    /** What tc printed, when it was tc that failed. */
    readonly stderr = '',
  ) {
    super(message)
  }
}

export interface PlugQdiscOptions {
  /** The network namespace the device lives in (`tc -netns NAME`); the caller's by default. */
  readonly netns?: string
  /** The tc program (default `tc`, found on PATH). */
  readonly tc?: string
}

/** The plug qdisc's counters, from `tc -s qdisc show`. */
export interface PlugQdiscStats {
  /** Sent on: released. */
  readonly sentBytes: number
  readonly sentPackets: number
  /** Held now. */
  readonly backlogBytes: number
  readonly backlogPackets: number
  /** Dropped because the qdisc held its limit already. */
  readonly dropped: number
}

interface TcQdiscJson {
  kind?: string
  root?: boolean
  bytes?: number
  packets?: number
  drops?: number
  backlog?: number
  qlen?: number
}

/** Picks the root plug qdisc out of `tc -s -j qdisc show dev DEV root`'s output, if there is one. */
export function parsePlugStats(json: string): PlugQdiscStats | undefined {
  let list: unknown
  try {
    list = JSON.parse(json)
  } catch {
    return undefined
  }
  if (!Array.isArray(list)) return undefined
  const q = (list as TcQdiscJson[]).find((e) => e && e.kind === 'plug' && e.root === true)
  if (!q) return undefined
  return {
    sentBytes: q.bytes ?? 0,
    sentPackets: q.packets ?? 0,
    backlogBytes: q.backlog ?? 0,
    backlogPackets: q.qlen ?? 0,
    dropped: q.drops ?? 0,
  }
}

function checkNetns(netns: string | undefined): void {
  if (netns !== undefined && !isValidNetnsName(netns)) {
    throw new PlugQdiscError('bad-name', `'${netns}' is not a network namespace name`)
  }
}

/** tc's argv prefix: the namespace option, if any. */
function tcPrefix(netns: string | undefined): string[] {
  return netns === undefined ? [] : ['-netns', netns]
}

type Run = {failed: boolean; stdout: string; stderr: string; shortMessage?: string}

/** Runs a tool (argv only, never a shell); never throws for the tool's own failure. */
async function run(file: string, args: string[]): Promise<Run> {
  const r = await execa(file, args, {reject: false, timeout: TC_TIMEOUT_MS})
  return {failed: r.failed, stdout: r.stdout, stderr: r.stderr, shortMessage: r.shortMessage}
}

/** What a failed run said. */
function said(r: Run): string {
  return (r.stderr || r.shortMessage || '').trim()
}

/** The plug qdisc at the root of one ifb device. */
export class PlugQdisc {
  readonly netns: string | undefined
  readonly #tc: string

  constructor(
    readonly dev: string,
    options: PlugQdiscOptions = {},
  ) {
    if (!isValidDeviceName(dev)) throw new PlugQdiscError('bad-name', `'${dev}' is not a network device name`)
    checkNetns(options.netns)
    this.netns = options.netns
    this.#tc = options.tc ?? 'tc'
  }

  /** The qdisc on `dev`, once its root is checked to be a plug qdisc (as libxl does at setup). */
  static async open(dev: string, options: PlugQdiscOptions = {}): Promise<PlugQdisc> {
    const q = new PlugQdisc(dev, options)
    await q.stats()
    return q
  }

  async #tcRun(args: string[], what: string): Promise<string> {
    const r = await run(this.#tc, [...tcPrefix(this.netns), ...args])
    if (r.failed) throw new PlugQdiscError('tc-failed', `${what} on ${this.dev}: ${said(r)}`, r.stderr)
    return r.stdout
  }

  #change(action: string, what: string): Promise<string> {
    return this.#tcRun(['qdisc', 'change', 'dev', this.dev, 'root', 'plug', action], what)
  }

  /** Starts a new epoch: what is held now can go with the next releaseOne (after a suspend). */
  async block(): Promise<void> {
    await this.#change('block', 'cannot start a new network buffer epoch')
  }

  /** Lets out the epoch before the current one (once its checkpoint is safe at the backup). */
  async releaseOne(): Promise<void> {
    await this.#change('release', 'cannot release the previous network buffer epoch')
  }

  /** Lets everything out and stops buffering until the next block(). */
  async releaseIndefinite(): Promise<void> {
    await this.#change('release_indefinite', 'cannot stop network buffering')
  }

  /** The counters; fails with 'not-plug' when the device's root qdisc is not a plug qdisc. */
  async stats(): Promise<PlugQdiscStats> {
    const out = await this.#tcRun(['-s', '-j', 'qdisc', 'show', 'dev', this.dev, 'root'], 'cannot read the qdisc')
    const stats = parsePlugStats(out)
    if (!stats) throw new PlugQdiscError('not-plug', `plug qdisc is not installed on ${this.dev}`)
    return stats
  }
}

// --- the probe -------------------------------------------------------------------------------------

/** Kernel pieces network buffering needs that a probe can find missing. */
export type KernelPiece = 'ifb' | 'sch_plug'

export type PlugProbeCause =
  | 'kernel' // the kernel lacks ifb and/or sch_plug (see `missing`)
  | 'no-tc' // iproute2's tc (or ip) is not installed
  | 'tc-no-plug' // this tc does not know the plug qdisc
  | 'cannot-probe' // no throwaway network namespace (not root?)
  | 'plug-failed' // a plug qdisc was made but would not take an action

export type PlugProbe =
  | {readonly ok: true; readonly tcVersion: string}
  | {
      readonly ok: false
      readonly cause: PlugProbeCause
      /** What to tell the operator: what is missing, why it matters, what to do. */
      readonly reason: string
      /** What the tools said. */
      readonly detail: string
      /** Kernel pieces found missing (cause 'kernel'); empty otherwise. */
      readonly missing: readonly KernelPiece[]
    }

export interface PlugProbeOptions {
  readonly tc?: string
  readonly ip?: string
}

const WITHOUT_IT = 'use -n with -F to run without it'

const PIECE_WHAT: Record<KernelPiece, string> = {
  ifb: 'ifb module (ifb devices)',
  sch_plug: 'sch_plug module (plug qdisc)',
}

/** "the kernel has no sch_plug module (plug qdisc): network buffering needs it; use -n with -F ..." */
export function kernelReason(missing: readonly KernelPiece[]): string {
  const what = missing.map((p) => PIECE_WHAT[p]).join(' and no ')
  return `the kernel has no ${what}: network buffering needs ${missing.length > 1 ? 'them' : 'it'}; ${WITHOUT_IT}`
}

/**
 * Whether this machine can buffer a vif's output: tc knows the plug qdisc, and, in a throwaway
 * network namespace, the kernel makes an ifb device and a plug qdisc that takes block, release
 * and release_indefinite. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for the namespace). Never
 * throws; the namespace is deleted before it returns.
 */
export async function probePlugQdisc(options: PlugProbeOptions = {}): Promise<PlugProbe> {
  const tc = options.tc ?? 'tc'
  const ip = options.ip ?? 'ip'
  const fail = (cause: PlugProbeCause, reason: string, detail: string, missing: KernelPiece[] = []): PlugProbe => ({
    ok: false,
    cause,
    reason,
    detail,
    missing,
  })

  const version = await run(tc, ['-V'])
  if (version.failed) {
    return fail('no-tc', `tc (iproute2) cannot be run: network buffering needs it; install iproute2 or ${WITHOUT_IT}`, said(version))
  }
  const tcVersion = version.stdout.trim()
  // `plug help` prints the plug qdisc's usage and sends nothing to the kernel.
  const usage = await run(tc, ['qdisc', 'add', 'dev', 'lo', 'root', 'plug', 'help'])
  if (!`${usage.stderr}${usage.stdout}`.includes('release_indefinite')) {
    return fail(
      'tc-no-plug',
      `this tc (${tcVersion}) does not know the plug qdisc: network buffering needs iproute2 5.3 or later; ${WITHOUT_IT}`,
      said(usage),
    )
  }

  const netns = `xlts-probe-${process.pid}-${crypto.randomBytes(4).toString('hex')}`
  const added = await run(ip, ['netns', 'add', netns])
  if (added.failed) {
    return fail('cannot-probe', `cannot make a network namespace to look for the plug qdisc in (run as root); ${WITHOUT_IT}`, said(added))
  }
  try {
    const missing: KernelPiece[] = []
    const details: string[] = []
    // The plug qdisc goes on the ifb when the kernel makes one, on the namespace's lo otherwise.
    let dev = 'xlts-ifb0'
    const ifb = await run(ip, ['-netns', netns, 'link', 'add', dev, 'type', 'ifb'])
    if (ifb.failed) {
      missing.push('ifb')
      details.push(`ip link add ${dev} type ifb: ${said(ifb)}`)
      dev = 'lo'
    }
    const up = await run(ip, ['-netns', netns, 'link', 'set', 'dev', dev, 'up'])
    if (up.failed) return fail('cannot-probe', `cannot bring ${dev} up in a probe namespace; ${WITHOUT_IT}`, said(up))

    const plug = await run(tc, ['-netns', netns, 'qdisc', 'add', 'dev', dev, 'root', 'plug', 'limit', String(PLUG_LIMIT_BYTES)])
    if (plug.failed) {
      if (!/qdisc kind is unknown|No such file or directory/i.test(plug.stderr)) {
        return fail('plug-failed', `cannot add a plug qdisc (tc: ${said(plug)}); ${WITHOUT_IT}`, said(plug), missing)
      }
      missing.push('sch_plug')
      details.push(`tc qdisc add dev ${dev} root plug: ${said(plug)}`)
    }
    if (missing.length) return fail('kernel', kernelReason(missing), details.join('\n'), missing)

    const q = new PlugQdisc(dev, {netns, tc})
    try {
      await q.block()
      await q.releaseOne()
      await q.releaseIndefinite()
      await q.stats()
    } catch (e) {
      const msg = (e as Error).message
      return fail('plug-failed', `the plug qdisc does not work here (${msg}); ${WITHOUT_IT}`, msg)
    }
    return {ok: true, tcVersion}
  } finally {
    await run(ip, ['netns', 'delete', netns])
  }
}
