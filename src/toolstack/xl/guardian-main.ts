/**
 * The guardian of one side of a migration: a small process, in its own session, that outlives
 * `migrate` or `migrate-receive` if that dies (SIGKILL, a hangup taking its process group) and
 * finishes what it left, so that the domain keeps running on exactly one host:
 *
 *   receiver <incoming name> <final name> <leave paused: 0|1> <plain|checkpointed>
 *                                     (fds 3, 4: the stream, the way back; plain streams only)
 *     C <domid>   the domain is built                 -> if I die: close 3 and 4 (the sender sees the
 *                                                        end at once), destroy it
 *     R           `ready` is written                  -> if I die: read the GO from fd 3 myself; if it
 *                                                        comes, as after G; if not, report the
 *                                                        failure on fd 4, destroy it, and write
 *                                                        the GO back (the sender may resume)
 *     G           GO received: the domain is ours     -> if I die: rename it to its name, unpause,
 *                                                        write the report on fd 4 (as the receiver
 *                                                        would have: the sender then finishes);
 *                 (checkpointed: the failover began)     rename, unpause, no report
 *     A           the start failed, I destroy it      -> if I die: destroy it
 *
 *   sender <domid> <name> <away name>
 *     H <pid>     the save helper runs                -> if I die: kill it
 *     G           GO is about to be written           -> if I die: do nothing (xl's failed_badly:
 *                                                        the copy stays `--migratedaway`, suspended)
 *     (before G)                                      -> if I die: kill the helper, log-dirty off,
 *                                                        rename back, resume a suspended guest
 *
 *   remus-primary <domid> <name> [<tie-breaker JSON>]
 *     H <pid>     the save helper runs                -> if I die: kill it
 *     K           the backup acknowledged a checkpoint -> if I die: the backup fails over, so the
 *                                                        guest must not run here too: pause it,
 *                                                        named <name>--stale
 *     (before K)                                      -> if I die: the backup has nothing whole and
 *                                                        discards its copy: resume a suspended guest
 *     with a tie-breaker (tie-breaker.ts), whatever came: the guest runs here if the primary's
 *     claim wins, else it is paused as <name>--stale
 *
 *   receiver ... checkpointed [<tie-breaker JSON>], before G: a Remus backup's copy cannot run (its
 *     vCPU state went with the restore helper): paused as <final name>--stale; a COLO secondary
 *     that runs goes on as <final name> if the secondary's claim wins, is paused as --stale if it
 *     loses, and is left as it is without a tie-breaker (xl's behaviour)
 *
 *   all: D = done, nothing more to do, exit.
 *
 *   await                              started ahead of its role (fds 3, 4 as for receiver)
 *     I <JSON>    {"argv": [role, arguments as above], "env": {XL_TS_ROOT: ..., ...}}: the role and
 *                 the host it works on; end of file before it: nothing to guard, exit.
 *
 * The lines come on stdin (a pipe from the side it guards); end of file without D means that side
 * died. The host is the one XL_TS_BACKEND / XL_TS_ROOT name, as for the helper. What it does is said
 * on stderr.
 */
import * as fs from 'node:fs'

import {readExact, writeAll} from '../fd/index.js'
import {HypervisorError, type Hypervisor} from '../hypervisor/index.js'
import {createHypervisor} from '../backends/index.js'
import {MIGRATE_PERMISSION_TO_GO, MIGRATE_REPORT, encodeStatus} from './handshake.js'
import {destroyDomain, domainInfo, renameDomain, resolveDomain} from '../libxl/index.js'
import {claimLive, decodeTieBreaker, pauseAsStale, staleName, type TieBreakerSpec, type Verdict} from './tie-breaker.js'

const SHUTDOWN_SUSPEND = 2

// `await`: started ahead of its role (Guardian.prestart); the line `I <JSON>` gives it.
let [role = '', ...args] = process.argv.slice(2)

let domid: number | undefined
let helperPid: number | undefined
type Phase = 'building' | 'ready' | 'go'
let phase: Phase = 'building'
let acknowledged = false
let done = false
let buffered = ''

function say(line: string): void {
  try {
    process.stderr.write(`${role === 'remus-primary' ? 'Remus' : `migration ${role === 'sender' ? 'sender' : 'target'}`} (guardian): ${line}\n`)
  } catch {
    // nobody is listening any more
  }
}

/**
 * The role, its arguments and the environment it works in (the host), for a guardian started ahead
 * of them: `{"argv": [...], "env": {NAME: value}}`. Ignored once it has a role.
 */
function assign(json: string): void {
  if (role !== 'await') return
  try {
    const o = JSON.parse(json) as {argv?: unknown; env?: unknown}
    const argv = o.argv
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string')) throw new Error('no argv')
    const env = o.env ?? {}
    if (typeof env !== 'object' || env === null || !Object.values(env).every((v) => typeof v === 'string')) throw new Error('bad env')
    Object.assign(process.env, env)
    ;[role = '', ...args] = argv as string[]
  } catch {
    say(`ignored a role that is not {argv, env}: ${json.slice(0, 80)}`)
  }
}

function take(line: string): void {
  if (line.startsWith('I ')) return assign(line.slice(2))
  const [cmd, arg] = line.trim().split(/\s+/)
  if (cmd === 'C' && arg !== undefined) domid = Number(arg)
  else if (cmd === 'H' && arg !== undefined) helperPid = Number(arg)
  else if (cmd === 'R') phase = 'ready'
  else if (cmd === 'G') phase = 'go'
  else if (cmd === 'A') phase = 'building'
  else if (cmd === 'K') acknowledged = true
  else if (cmd === 'D') done = true
}

async function infoOrUndefined(hv: Hypervisor, id: number) {
  try {
    return await domainInfo(hv, id)
  } catch (err) {
    if (err instanceof HypervisorError && err.code === 'no-such-domain') return undefined
    throw err
  }
}

/** The receiver's stream (fd 3) and way back (fd 4), when it gave them to us. */
const STREAM_IN = 3
const STREAM_OUT = 4

function haveStream(): boolean {
  try {
    fs.fstatSync(STREAM_IN)
    fs.fstatSync(STREAM_OUT)
    return true
  } catch {
    return false
  }
}

function closeStream(): void {
  for (const fd of [STREAM_IN, STREAM_OUT]) {
    try {
      fs.closeSync(fd)
    } catch {
      // not ours, or closed already
    }
  }
}

/** The sender's GO, if it comes on the stream (the receiver died before reading it). */
async function takeGo(): Promise<boolean> {
  try {
    const got = await readExact(STREAM_IN, MIGRATE_PERMISSION_TO_GO.length, {what: 'GO message'})
    if (got.equals(MIGRATE_PERMISSION_TO_GO)) return true
    say(got.length < MIGRATE_PERMISSION_TO_GO.length ? 'the stream ended before the GO' : 'the stream carried something else than the GO')
    return false
  } catch (err) {
    say(`cannot read the GO: ${err instanceof Error ? err.message : String(err)}`)
    return false
  }
}

/** Writes on the way back; false when nobody is there any more. */
async function tell(bytes: Buffer): Promise<boolean> {
  try {
    await writeAll(STREAM_OUT, [bytes])
    return true
  } catch {
    return false
  }
}

/** Rename to the final name and unpause (unless -p): 0, or libxl's rc for what failed. */
async function start(hv: Hypervisor, id: number, name: string, finalName: string, leavePaused: boolean): Promise<number> {
  try {
    if (name !== finalName) await renameDomain(hv, id, finalName)
    const info = await hv.info(id)
    if (!leavePaused && info.state.paused) await hv.unpause(id)
    return 0
  } catch (err) {
    say(`cannot start domain ${finalName} (domid ${id}): ${err instanceof Error ? err.message : String(err)}`)
    return err instanceof HypervisorError && err.code === 'name-in-use' ? -6 : -3
  }
}

/**
 * The receiver died. Before `ready`: destroy the half-received domain. After `ready`: the GO may be
 * on its way (or read already, after G): take it and finish as the receiver would have, report
 * included, so that the sender ends with one running copy, at the target. If the stream ends
 * without a GO, do what the receiver does then: report the failure, destroy our copy, and give
 * the sender permission to resume (so it never has to guess).
 */
async function finishReceiver(hv: Hypervisor): Promise<void> {
  const [incoming = '', finalName = '', pausedArg = '0', kind = 'plain', tieBreakerArg = ''] = args
  // A checkpointed (Remus) stream has no handshake: nothing is read or written on it here.
  const stream = kind === 'plain' && haveStream()
  const afterReady = phase === 'ready'
  if (afterReady) {
    phase = stream && (await takeGo()) ? 'go' : 'building'
    if (phase === 'go') say('the receiver died after ready; took the GO from the stream')
  }
  // Before `ready` the sender must see the end at once; after it, it waits for our report.
  if (phase !== 'go' && !afterReady) closeStream()

  let id = domid
  if (id === undefined) {
    try {
      id = await resolveDomain(hv, incoming)
    } catch {
      closeStream()
      return
    }
  }
  const info = await infoOrUndefined(hv, id)
  // A domid reused since, or a domain renamed by someone else: not ours.
  if (!info || (info.name !== incoming && !(phase === 'go' && info.name === finalName))) {
    closeStream()
    return
  }

  if (kind === 'checkpointed' && phase !== 'go') {
    await finishCheckpointedCopy(hv, id, info, finalName, tieBreakerArg)
    closeStream()
    return
  }

  // GO not received: rc 1 (status byte 0xff), as the receiver reports it.
  const rc = phase === 'go' ? await start(hv, id, info.name, finalName, pausedArg === '1') : 1
  if (rc === 0) say(`the receiver died after GO; started domain ${finalName} (domid ${id})${pausedArg === '1' ? ', left paused' : ''}`)
  const reported = stream && (phase === 'go' || afterReady) && (await tell(Buffer.concat([MIGRATE_REPORT, encodeStatus(rc)])))
  // A Remus failover keeps the copy whatever happens (xl leaves it for the administrator).
  if (rc !== 0 && kind === 'plain') {
    await destroyDomain(hv, id).catch(() => undefined)
    say(`the receiver died before GO; destroyed domain ${incoming} (domid ${id})`)
    // As the receiver: our copy is gone, the sender may have the domain back.
    if (reported) await tell(MIGRATE_PERMISSION_TO_GO)
  }
  closeStream()
}

/** The save helper of the side we guard, if it told us: it must not go on without that side. */
function killHelper(): void {
  if (helperPid === undefined) return
  try {
    process.kill(helperPid, 'SIGKILL')
  } catch {
    // gone
  }
}

/** Log-dirty mode off (the save that enabled it is over); failures do not matter here. */
async function logDirtyOff(hv: Hypervisor, id: number): Promise<void> {
  await hv
    .logDirty(id)
    .disable()
    .catch(() => undefined)
}

/** The sender died before GO: the domain must run here again. */
async function finishSender(hv: Hypervisor): Promise<void> {
  const [domidArg = '', name = '', away = ''] = args
  if (phase === 'go') return
  killHelper()
  const id = Number(domidArg)
  const info = await infoOrUndefined(hv, id)
  if (!info || (info.name !== name && info.name !== away)) return
  if (info.name === away) await renameDomain(hv, id, name, {from: away})
  await logDirtyOff(hv, id)
  if (info.state.shutdown && info.state.shutdownReason === SHUTDOWN_SUSPEND) {
    await hv.resume(id, {cancel: true})
    say(`the sender died before GO; resumed domain ${name} (domid ${id})`)
  }
}

/**
 * The tie-breaker the guarded side was given, asked for `side`: undefined when there is none (xl's
 * behaviour); a spec that does not decode keeps the copy from going live.
 */
async function askTieBreaker(arg: string, side: 'primary' | 'secondary', domain: string): Promise<Verdict | undefined> {
  let spec: TieBreakerSpec | undefined
  try {
    spec = decodeTieBreaker(arg)
  } catch (err) {
    return {live: false, why: `the tie-breaker it was given is not valid: ${(err as Error).message}`}
  }
  return spec ? claimLive(spec, {side, domain, checkpoint: 0}) : undefined
}

async function keepStale(hv: Hypervisor, id: number, from: string, name: string): Promise<void> {
  for (const problem of await pauseAsStale(hv, id, name, from)) say(problem)
}

/**
 * The Remus or COLO receiver died before its failover. A Remus backup's copy cannot run: the last
 * checkpoint's vCPU state went with the restore helper. A COLO secondary that runs between
 * checkpoints can, if the tie-breaker lets it; without one it is left as it is (xl's behaviour).
 */
async function finishCheckpointedCopy(hv: Hypervisor, id: number, info: {state: {paused: boolean; shutdown: boolean}; name: string}, finalName: string, tieBreakerArg: string): Promise<void> {
  const running = !info.state.paused && !info.state.shutdown
  if (running) {
    const verdict = await askTieBreaker(tieBreakerArg, 'secondary', finalName)
    if (verdict === undefined) {
      say(`the receiver died; domain ${info.name} (domid ${id}) runs on unguarded (no tie-breaker: the primary may resume too)`)
      return
    }
    if (verdict.live) {
      await renameDomain(hv, id, finalName, {from: info.name}).catch((err: unknown) => say(`cannot rename domain ${id} to ${finalName}: ${(err as Error).message}`))
      say(`the receiver died; ${verdict.how}: domain ${finalName} (domid ${id}) runs on here`)
      return
    }
    await keepStale(hv, id, info.name, finalName)
    say(`the receiver died; ${verdict.why}: paused domain ${staleName(finalName)} (domid ${id}) here`)
    return
  }
  await keepStale(hv, id, info.name, finalName)
  say(`the receiver died before its failover; domain ${staleName(finalName)} (domid ${id}) holds no state it could run from and stays paused`)
}

/** The Remus primary died: no two copies may run once the backup holds a checkpoint. */
async function finishRemusPrimary(hv: Hypervisor): Promise<void> {
  const [domidArg = '', name = '', tieBreakerArg = ''] = args
  killHelper()
  const id = Number(domidArg)
  const info = await infoOrUndefined(hv, id)
  if (!info || info.name !== name) return
  await logDirtyOff(hv, id)
  const suspended = info.state.shutdown && info.state.shutdownReason === SHUTDOWN_SUSPEND
  const verdict = await askTieBreaker(tieBreakerArg, 'primary', name)
  if (verdict?.live) {
    if (suspended) await hv.resume(id, {cancel: true})
    if (info.state.paused) await hv.unpause(id)
    say(`the Remus primary died; ${verdict.how}: domain ${name} (domid ${id}) runs on here`)
  } else if (verdict || acknowledged) {
    await keepStale(hv, id, name, name)
    const why = verdict && !verdict.live ? verdict.why : 'the backup holds a whole checkpoint and takes over'
    say(`the Remus primary died; ${why}: paused domain ${staleName(name)} (domid ${id}) here`)
  } else if (suspended) {
    await hv.resume(id, {cancel: true})
    say(`the Remus primary died before the backup held a checkpoint; resumed domain ${name} (domid ${id})`)
  }
}

async function finish(): Promise<void> {
  if (done) return
  const hv = createHypervisor()
  try {
    if (role === 'receiver') await finishReceiver(hv)
    else if (role === 'sender') await finishSender(hv)
    else if (role === 'remus-primary') await finishRemusPrimary(hv)
  } finally {
    ;(hv as {close?: () => void}).close?.()
  }
}

process.stdin.setEncoding('latin1')
process.stdin.on('data', (chunk: string) => {
  buffered += chunk
  let nl: number
  while ((nl = buffered.indexOf('\n')) >= 0) {
    take(buffered.slice(0, nl))
    buffered = buffered.slice(nl + 1)
  }
})
process.stdin.on('end', () => {
  finish().then(
    () => process.exit(0),
    (err: unknown) => {
      say(`cannot finish the migration's work: ${err instanceof Error ? err.message : String(err)}`)
      process.exit(1)
    },
  )
})
// A hangup or an interrupt of the guarded side's process group must not take us with it.
process.on('SIGHUP', () => {})
process.on('SIGINT', () => {})
