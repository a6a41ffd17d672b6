/**
 * The save/restore helper's argv (XEN-FACTS §5.1; libxl_save_callout.c run_helper, and main() of
 * libxl_save_helper.c):
 *
 *   <helper> --save-domain    <io_fd> <recv_fd>      <domid> <xcflags> <cbflags> <stream_type>
 *   <helper> --restore-domain <io_fd> <send_back_fd> <domid> <store_evtchn> <store_domid>
 *                             <console_evtchn> <console_domid> <cbflags> <stream_type>
 *
 * The fds are numbers as the helper sees them (`%d`; -1 for no back channel), the rest decimal
 * `%lu`. These functions build the arguments after argv[0] and parse them back; the parser is strict
 * (decimal digits only, ranges checked) where Xen's helper uses atoi/strtoul and asserts the count.
 */

export const SAVE_MODE = '--save-domain'
export const RESTORE_MODE = '--restore-domain'

/** xc_domain_save flags (tools/include/xenguest.h). */
export const XCFLAGS = {
  LIVE: 1 << 0,
  DEBUG: 1 << 1,
} as const

/** xc_stream_type_t, which is libxl_checkpointed_stream passed straight through. */
export const STREAM_TYPE = {
  PLAIN: 0,
  REMUS: 1,
  COLO: 2,
} as const
export type HelperStreamType = (typeof STREAM_TYPE)[keyof typeof STREAM_TYPE]
export type HelperStreamTypeName = keyof typeof STREAM_TYPE

export function streamTypeName(t: number): HelperStreamTypeName | undefined {
  return t === 0 ? 'PLAIN' : t === 1 ? 'REMUS' : t === 2 ? 'COLO' : undefined
}

export interface SaveHelperArgs {
  readonly mode: 'save'
  /** The stream fd, as the helper sees it. */
  readonly ioFd: number
  /** The back channel fd as the helper sees it (COLO), -1 for none. */
  readonly recvFd: number
  readonly domid: number
  readonly xcflags: number
  readonly cbflags: number
  readonly streamType: HelperStreamType
}

export interface RestoreHelperArgs {
  readonly mode: 'restore'
  readonly ioFd: number
  /** The back channel fd as the helper sees it (COLO), -1 for none. */
  readonly sendBackFd: number
  readonly domid: number
  readonly storeEvtchn: number
  readonly storeDomid: number
  readonly consoleEvtchn: number
  readonly consoleDomid: number
  readonly cbflags: number
  readonly streamType: HelperStreamType
}

export type HelperArgs = SaveHelperArgs | RestoreHelperArgs

export class HelperArgvError extends Error {
  override readonly name = 'HelperArgvError'
  constructor(
    readonly detail: string,
    readonly argv: readonly string[],
  ) {
    super(`bad save/restore helper arguments (${argv.join(' ')}): ${detail}`)
  }
}

const U32_MAX = 0xffffffff
const DOMID_MAX = 0xffff // domid_t for store_domid / console_domid

function fdArg(fd: number, what: string, allowNone: boolean): string {
  if (!Number.isInteger(fd) || fd < (allowNone ? -1 : 0) || fd > 0x7fffffff) {
    throw new RangeError(`${what} ${fd} is not ${allowNone ? '-1 or ' : ''}a file descriptor`)
  }
  return String(fd)
}

function numArg(v: number, what: string, max = U32_MAX): string {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${what} ${v} is not in 0..${max}`)
  return String(v)
}

function streamTypeArg(t: number): string {
  if (streamTypeName(t) === undefined) throw new RangeError(`stream type ${t} is not 0 (plain), 1 (Remus) or 2 (COLO)`)
  return String(t)
}

/** The arguments after argv[0], mode first. */
export function buildHelperArgv(args: HelperArgs): string[] {
  if (args.mode === 'save') {
    return [
      SAVE_MODE,
      fdArg(args.ioFd, 'io_fd', false),
      fdArg(args.recvFd, 'recv_fd', true),
      numArg(args.domid, 'domid'),
      numArg(args.xcflags, 'xcflags'),
      numArg(args.cbflags, 'cbflags'),
      streamTypeArg(args.streamType),
    ]
  }
  return [
    RESTORE_MODE,
    fdArg(args.ioFd, 'io_fd', false),
    fdArg(args.sendBackFd, 'send_back_fd', true),
    numArg(args.domid, 'domid'),
    numArg(args.storeEvtchn, 'store_evtchn'),
    numArg(args.storeDomid, 'store_domid', DOMID_MAX),
    numArg(args.consoleEvtchn, 'console_evtchn'),
    numArg(args.consoleDomid, 'console_domid', DOMID_MAX),
    numArg(args.cbflags, 'cbflags'),
    streamTypeArg(args.streamType),
  ]
}

/** Parses the arguments after argv[0] (i.e. `process.argv.slice(2)` in a Node helper). */
export function parseHelperArgv(argv: readonly string[]): HelperArgs {
  const bad = (detail: string): never => {
    throw new HelperArgvError(detail, argv)
  }
  const mode = argv[0]
  const want = mode === SAVE_MODE ? 7 : mode === RESTORE_MODE ? 10 : bad(`first argument must be ${SAVE_MODE} or ${RESTORE_MODE}, got ${JSON.stringify(mode ?? '')}`)
  if (argv.length !== want) bad(`${mode} takes ${want - 1} numbers, got ${argv.length - 1}`)
  const names =
    mode === SAVE_MODE
      ? ['io_fd', 'recv_fd', 'domid', 'xcflags', 'cbflags', 'stream_type']
      : ['io_fd', 'send_back_fd', 'domid', 'store_evtchn', 'store_domid', 'console_evtchn', 'console_domid', 'cbflags', 'stream_type']
  const n = names.map((name, i) => {
    const s = argv[i + 1]!
    const isFd = i < 2
    if (!(isFd ? /^-?\d+$/ : /^\d+$/).test(s)) bad(`${name} ${JSON.stringify(s)} is not a decimal number`)
    const v = Number(s)
    if (isFd) {
      if (v < (i === 1 ? -1 : 0) || v > 0x7fffffff) bad(`${name} ${s} is not ${i === 1 ? '-1 or ' : ''}a file descriptor`)
    } else if (v > U32_MAX) {
      bad(`${name} ${s} does not fit 32 bits`)
    }
    return v
  })
  const streamType = n[n.length - 1]!
  if (streamTypeName(streamType) === undefined) bad(`stream_type ${streamType} is not 0, 1 or 2`)
  if (mode === SAVE_MODE) {
    return {mode: 'save', ioFd: n[0]!, recvFd: n[1]!, domid: n[2]!, xcflags: n[3]!, cbflags: n[4]!, streamType: streamType as HelperStreamType}
  }
  if (n[4]! > DOMID_MAX) bad(`store_domid ${n[4]} is not a domid`)
  if (n[6]! > DOMID_MAX) bad(`console_domid ${n[6]} is not a domid`)
  return {
    mode: 'restore',
    ioFd: n[0]!,
    sendBackFd: n[1]!,
    domid: n[2]!,
    storeEvtchn: n[3]!,
    storeDomid: n[4]!,
    consoleEvtchn: n[5]!,
    consoleDomid: n[6]!,
    cbflags: n[7]!,
    streamType: streamType as HelperStreamType,
  }
}

/**
 * Our own addition, for a helper started before its argv is known (prestart.ts): the argv is
 * `--await-argv --save-domain|--restore-domain`, and what it runs with comes on stdin as a u32
 * length (little endian) and JSON: `{"argv": [Xen's argv], "env": {NAME: value, or null to unset}}`
 * (the environment as it would have been given to a helper started now).
 */
/**
 * The stream offset at which the helper's part of the stream (the libxc image header) starts,
 * decimal, in the helper's environment. Our helper counts its offsets from there, so the records its
 * errors name carry offsets in the whole stream (file offsets for a savefile), on a pipe as well.
 * Xen's helper ignores it.
 */
export const STREAM_OFFSET_ENV = 'XL_TS_STREAM_OFFSET'

export const AWAIT_ARGV_FLAG = '--await-argv'
/** The most bytes a waiting helper accepts (Xen's argv is a few dozen, the changed variables few). */
export const MAX_AWAITED_BYTES = 64 * 1024

export interface AwaitedStart {
  readonly argv: string[]
  readonly env: Record<string, string | null>
}

export function encodeAwaitedStart(start: AwaitedStart): Buffer {
  const body = Buffer.from(JSON.stringify(start))
  if (body.length > MAX_AWAITED_BYTES) throw new RangeError(`an awaited start of ${body.length} bytes is more than ${MAX_AWAITED_BYTES}`)
  const head = Buffer.alloc(4)
  head.writeUInt32LE(body.length)
  return Buffer.concat([head, body])
}

/** Decodes the awaited start's JSON (the bytes after the length); throws HelperArgvError. */
export function decodeAwaitedStart(body: Buffer): AwaitedStart {
  const bad = (why: string): never => {
    throw new HelperArgvError(why, [AWAIT_ARGV_FLAG])
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    return bad('the start on stdin is not JSON')
  }
  const o = parsed as {argv?: unknown; env?: unknown}
  if (typeof o !== 'object' || o === null || !Array.isArray(o.argv) || !o.argv.every((a) => typeof a === 'string')) return bad('the start on stdin has no argv of strings')
  if (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env)) return bad('the start on stdin has no env object')
  const env: Record<string, string | null> = {}
  for (const [k, v] of Object.entries(o.env)) {
    if (v !== null && typeof v !== 'string') bad(`the start on stdin sets ${k} to something not a string`)
    env[k] = v as string | null
  }
  return {argv: o.argv as string[], env}
}
