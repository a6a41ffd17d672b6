/**
 * xl-ts-save-helper: our libxl-save-helper. Same argv (`--save-domain io_fd recv_fd domid xcflags
 * cbflags stream_type`, `--restore-domain io_fd send_back_fd domid store_evtchn store_domid
 * console_evtchn console_domid cbflags stream_type`), same callback protocol on stdin/stdout, so the
 * toolstack drives it or Xen's own binary alike. It runs the libxc-level engines against the
 * Hypervisor of the host named by the inherited XL_TS_BACKEND / XL_TS_ROOT.
 *
 * Exit status as libxl-save-helper's: 0 after `complete` was answered (success or failure is in
 * complete's retval), 255 when it cannot start (bad argv, no hypervisor), 254 when the toolstack
 * closes the channel under it.
 */
import {constants as osConstants} from 'node:os'

import {SyncFdSource, fdPosition, isSeekable, kernelCopy, kernelCopyUnavailable, moveRunsOrFail, readExactSync, runPairs, runsEndAt, sleepSync, writeAllSync, type KernelCopy} from '../fd/index.js'
import {type Hypervisor} from '../hypervisor/index.js'
import {createHypervisor} from '../backends/index.js'
import type {RestoreCallbacks} from '../restore/index.js'
import {PRECOPY_ENV, parseTuning, policyFor, type PrecopyTuning} from '../save/index.js'
import type {SaveCallbacks, SaveEvent} from '../save/index.js'
import {encodeLibxcRecord, type FileRun, type StreamType} from '../stream/index.js'
import {testHooks} from '../test-hooks.js'
import {AWAIT_ARGV_FLAG, HelperArgvError, STREAM_OFFSET_ENV, MAX_AWAITED_BYTES, XCFLAGS, decodeAwaitedStart, parseHelperArgv, streamTypeName, type RestoreHelperArgs, type SaveHelperArgs} from '../helper/index.js'
import {dirtyListReader} from './dirty-list.js'
import {HelperSide} from './helper-side.js'
import {ProgressGate} from './progress-gate.js'
import {XTL} from '../helper/index.js'

const EXIT_CANNOT_START = 255
const QUIRK_LINE = 'the secondary puts a 16-byte record header before its dirty pfn list (Xen 4.18+): reading the list after it'

function errnoOf(err: unknown): number {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  const n = code ? (osConstants.errno as Record<string, number>)[code] : undefined
  return n ?? 0
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function streamTypeOf(n: number): Exclude<StreamType, 'unknown'> {
  const name = streamTypeName(n)
  return name === 'REMUS' ? 'remus' : name === 'COLO' ? 'colo' : 'plain'
}

async function save(side: HelperSide, hv: Hypervisor, a: SaveHelperArgs): Promise<void> {
  const streamType = streamTypeOf(a.streamType)
  const {suspend, switchQemuLogdirty, ...announced} = side.callbacks('save', a.cbflags)
  const callbacks: SaveCallbacks = {
    ...announced,
    // libxc cannot save without it: installed whether announced or not.
    suspend: suspend ?? (() => side.call({type: 'suspend'})),
    ...(switchQemuLogdirty ? {switchQemuLogdirty: (enable: boolean) => switchQemuLogdirty(a.domid, enable ? 1 : 0)} : {}),
  }

  const readDirty = a.recvFd >= 0 ? dirtyListReader(a.recvFd, () => side.log(XTL.WARN, QUIRK_LINE)) : undefined
  const readSecondaryDirty = async (): Promise<number[]> => {
    const pfns = readDirty!()
    // A negative control a test entry may install: drop the secondary's set B, to show that the copy then diverges (issue 7).
    if (testHooks().coloIgnoreSecondaryDirty) return []
    return pfns
  }

  const gate = new ProgressGate()
  const onEvent = (e: SaveEvent): void => {
    if (e.kind === 'pages') {
      if (gate.pass(e.prefix, e.done, e.total, performance.now())) side.progress(e.prefix, e.done, e.total)
    }
    else if (e.kind === 'milestone') side.progress(e.what, 0, 0)
    else if (e.kind === 'round') side.log(XTL.DETAIL, `precopy round ${e.iteration}: ${e.sent} pages sent in ${e.ms.toFixed(0)} ms, ${e.dirty} dirty`)
    else side.log(XTL.DETAIL, `checkpoint ${e.number}: ${e.primary} pages dirty here, ${e.secondary} on the secondary, ${e.sent} sent`)
  }

  const tuning: PrecopyTuning = process.env[PRECOPY_ENV] ? parseTuning(process.env[PRECOPY_ENV]) : {}
  const throttle = tuning.bandwidthMiBps ? new Throttle(tuning.bandwidthMiBps * 1024 * 1024) : undefined
  // Small writes keep a pipe's reader streaming; a file takes a whole record in one call.
  const chunkSize = isSeekable(a.ioFd) ? 8 * 1024 * 1024 : undefined
  const write = (parts: readonly Buffer[]): number => writeAllSync(a.ioFd, parts, {what: 'the migration stream', ...(chunkSize ? {chunkSize} : {})})
  const copy = kernelCopy()
  logPageCopy(side)
  if (copy) growPipe(copy, a.ioFd)
  const {saveDomain} = await import('../save/engine.js')
  await saveDomain({
    hypervisor: hv,
    domid: a.domid,
    sink: {
      write: (parts) => {
        const n = write(parts)
        throttle?.sent(n)
      },
      ...(copy
        ? {
            writeFromFile: (head: readonly Buffer[], fd: number, runs: readonly FileRun[], share: boolean) => {
              let n = write(head)
              n += movePages(copy, fd, runs, a.ioFd, share)
              throttle?.sent(n)
            },
          }
        : {}),
    },
    policy: policyFor(tuning),
    live: (a.xcflags & XCFLAGS.LIVE) !== 0,
    debug: (a.xcflags & XCFLAGS.DEBUG) !== 0,
    streamType,
    callbacks,
    ...(readDirty ? {readSecondaryDirty} : {}),
    onEvent,
  })
}

/** Says at debug level how page data travels, so a slow run can be told from a fallback. */
function logPageCopy(side: HelperSide): void {
  const why = kernelCopyUnavailable()
  side.log(XTL.DEBUG, why ? `page data copied in user space: ${why}` : 'page data moved fd to fd in the kernel')
}

/** A pipe of 1 MiB (Linux's default most for a user) carries a 4 MiB record in 4 turns instead of 64. */
const PIPE_BYTES = 1024 * 1024

function growPipe(copy: KernelCopy, fd: number): void {
  try {
    copy.pipeSize(fd, PIPE_BYTES)
  } catch {
    // not a pipe, or a limit below 1 MiB: the pipe keeps its size
  }
}

/** A batch's runs of guest pages from the memory file into the stream; a memory file that ends short is an error. */
function movePages(copy: KernelCopy, memFd: number, runs: readonly FileRun[], ioFd: number, share: boolean): number {
  const expected = runs.reduce((sum, r) => sum + r.length, 0)
  const n = moveRunsOrFail(copy, memFd, runPairs(runs), ioFd, share, 'the migration stream', `writing ${expected} bytes of pages`)
  if (n < expected) throw new Error(`guest memory ends at byte ${runsEndAt(runs, n)}, inside the pages being saved`)
  return n
}

/** Keeps a stream under a byte rate: after each write, sleeps until the bytes sent fit the rate. */
class Throttle {
  readonly #start = performance.now()
  #bytes = 0
  constructor(private readonly bytesPerSecond: number) {}

  sent(n: number): void {
    this.#bytes += n
    const dueMs = (this.#bytes / this.bytesPerSecond) * 1000
    const ahead = dueMs - (performance.now() - this.#start)
    if (ahead > 1) sleepSync(ahead)
  }
}

/**
 * Record buffers the restore keeps for the next checkpoint. A Remus or COLO backup holds a whole
 * checkpoint (PAGE_DATA records of up to 1024 pages, 4 MiB) until it is complete; buffers the pool
 * does not keep are fresh memory at the next checkpoint, each of its pages faulted in and zeroed
 * while both guests wait. 16 covers checkpoints up to 16384 pages (64 MiB kept between them at
 * most). With the default of 4, a COLO checkpoint of ~5300 pages stalled the stream for up to 12 ms.
 */
const RESTORE_POOL_RECORDS = 16

/** Restores; resolves the store and console gfns, which the helper reports whatever the outcome. */
async function restore(side: HelperSide, hv: Hypervisor, a: RestoreHelperArgs): Promise<{storeGfn: bigint; consoleGfn: bigint}> {
  const streamType = streamTypeOf(a.streamType)
  // The libxc stream starts where the toolstack stopped: in a file its position says where; on a
  // pipe the toolstack tells us (XL_TS_STREAM_OFFSET), so records are named by their stream offsets.
  const told = Number(process.env[STREAM_OFFSET_ENV] ?? '0')
  const offset = fdPosition(a.ioFd) ?? (Number.isSafeInteger(told) && told >= 0 ? told : 0)
  const source = new SyncFdSource(a.ioFd, {what: 'the migration stream', offset, maxIdle: RESTORE_POOL_RECORDS})
  logPageCopy(side)
  const copy = kernelCopy()
  if (copy) growPipe(copy, a.ioFd)
  const {restoreDomain} = await import('../restore/engine.js')
  const callbacks: RestoreCallbacks = {
    ...side.callbacks('restore', a.cbflags),
    // Installed whether announced or not: the engine reports them at each COLO checkpoint.
    restoreResults: async (storeGfn, consoleGfn) => side.send({type: 'restore_results', storeGfn, consoleGfn}),
  }

  const result = await restoreDomain({
    hypervisor: hv,
    domid: a.domid,
    source,
    streamType,
    callbacks,
    storeEvtchn: a.storeEvtchn,
    consoleEvtchn: a.consoleEvtchn,
    releasePages: (pages) => source.release(pages),
    ...(a.sendBackFd >= 0
      ? {sendDirtyList: async (pfns) => void writeAllSync(a.sendBackFd, encodeLibxcRecord({kind: 'CHECKPOINT_DIRTY_PFN_LIST', pfns: [...pfns]}), {what: 'the back channel'})}
      : {}),
    onEvent: (e) => {
      if (e.kind === 'failover') side.log(XTL.INFO, `${streamType === 'colo' ? 'COLO' : 'Remus'} failover after ${e.checkpoints} checkpoints: ${e.reason}`)
      else if (e.kind === 'verify-mismatch') side.error(`verify pfn 0x${e.pfn.toString(16)} failed`)
    },
  })
  return result
}

/**
 * Our argv: as given, or for a prestarted helper (`--await-argv`, see prestart.ts) as it comes on
 * stdin, with the environment changes that come with it; undefined when stdin closes first (the
 * toolstack did not need us).
 */
function helperArgv(): string[] | undefined {
  const argv = process.argv.slice(2)
  if (argv[0] !== AWAIT_ARGV_FLAG) return argv
  const ended = (): never => {
    throw new HelperArgvError('stdin closed inside the awaited start', [AWAIT_ARGV_FLAG])
  }
  const head = readExactSync(0, 4, {what: 'the awaited start'})
  if (head.length === 0) return undefined
  if (head.length < 4) ended()
  const length = head.readUInt32LE(0)
  if (length > MAX_AWAITED_BYTES) throw new HelperArgvError(`an awaited start of ${length} bytes is more than ${MAX_AWAITED_BYTES}`, [AWAIT_ARGV_FLAG])
  const body = readExactSync(0, length, {what: 'the awaited start'})
  if (body.length < length) ended()
  const start = decodeAwaitedStart(body)
  for (const [k, v] of Object.entries(start.env)) {
    if (v === null) delete process.env[k]
    else process.env[k] = v
  }
  return start.argv
}

async function main(): Promise<number> {
  const side = new HelperSide()
  let args
  try {
    const argv = helperArgv()
    if (argv === undefined) return 0
    args = parseHelperArgv(argv)
  } catch (err) {
    side.error(`bad arguments: ${message(err)}`)
    return EXIT_CANNOT_START
  }
  side.log(XTL.DEBUG, `starting ${args.mode} of domain ${args.domid}`)
  let hv: Hypervisor
  try {
    hv = createHypervisor()
  } catch (err) {
    side.error(`cannot reach the hypervisor: ${message(err)}`, errnoOf(err))
    return EXIT_CANNOT_START
  }

  let retval = 0
  let errnoval = 0
  let gfns = {storeGfn: 0n, consoleGfn: 0n}
  try {
    if (args.mode === 'save') await save(side, hv, args)
    else gfns = await restore(side, hv, args)
  } catch (err) {
    retval = -1
    errnoval = errnoOf(err)
    side.error(`${args.mode === 'save' ? 'Save' : 'Restore'} failed: ${message(err)}`, errnoval)
  }
  // As libxl-save-helper: a restore always reports its results before completing.
  if (args.mode === 'restore') side.send({type: 'restore_results', ...gfns})
  await side.call({type: 'complete', retval, errnoval: retval ? errnoval : 0})
  return 0
}

process.exitCode = await main()
