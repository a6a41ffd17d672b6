/**
 * The tie-breaker a replication side consults before it runs its copy of the guest after losing
 * the other side (a Remus backup's or COLO secondary's failover, the primary's resume after its
 * backup is gone, the guardians' decisions). A broken link and a dead peer look the same from
 * either end, so no rule inside one host can decide; a third party can:
 *
 * - a witness (`--witness DIR`): an atomic test-and-set on storage both hosts reach. The claim is
 *   the file `DIR/xl-ts-<session>.claim`, made by link(2) of a complete file (it either appears
 *   whole or not at all, and only once). The first claim of a replication session wins; the side
 *   that made it wins again when it asks again (a guardian taking over from its dead process);
 *   the other side loses.
 * - a fence (`--fence CMD`): the operator's command (power the peer off, take a lock in the
 *   cluster's store), run with `sh -c` before going live: live only when it exits 0 within the
 *   time bound. With a witness as well, the fence runs only for the side that won the claim.
 * - neither: xl's behaviour, each side decides alone; `NO_TIE_BREAKER_WARNING` says so once.
 */
import {spawn} from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import type {Hypervisor} from '../hypervisor/index.js'
import {renameDomain} from '../libxl/index.js'

export type ReplicationSide = 'primary' | 'secondary'

/** How the sides of one replication session break a tie; travels in the rune and to the guardians. */
export interface TieBreakerSpec {
  /** The replication session (32 hex digits, made by the primary), naming the claim. */
  readonly session: string
  /** A folder both hosts reach (--witness). */
  readonly witness?: string
  /** The operator's command (--fence). */
  readonly fence?: string
  /** How long the fence may take (--fence-timeout), ms. */
  readonly fenceTimeoutMs?: number
}

export interface ClaimRequest {
  readonly side: ReplicationSide
  /** The guest's name (for the claim file and the fence's environment). */
  readonly domain: string
  /** The last checkpoint this side holds (0: none). */
  readonly checkpoint: number
}

export type Verdict = {readonly live: true; readonly how: string} | {readonly live: false; readonly why: string}

/** What a claim file holds. */
export interface ClaimRecord {
  readonly side: ReplicationSide
  readonly host: string
  readonly pid: number
  readonly domain: string
  readonly checkpoint: number
  readonly at: string
}

export const DEFAULT_FENCE_TIMEOUT_MS = 30_000
const SESSION = /^[0-9a-f]{32}$/
/** A claim file larger than this is not one of ours. */
const CLAIM_MAX_BYTES = 4096

export const NO_TIE_BREAKER_WARNING =
  'no --witness or --fence: if the link between the hosts breaks while both live, each side decides alone and both may run the guest (xl behaves the same); see xl-ts-remus(1), SPLIT BRAIN'

export class TieBreakerError extends Error {
  override readonly name = 'TieBreakerError'
}

/** A fresh replication session id. */
export function newSession(): string {
  return crypto.randomBytes(16).toString('hex')
}

/** Checks a spec that came from a command line or a peer. */
export function checkTieBreaker(spec: TieBreakerSpec): TieBreakerSpec {
  if (!SESSION.test(spec.session)) throw new TieBreakerError(`replication session ${JSON.stringify(spec.session)} is not 32 hex digits`)
  if (spec.witness !== undefined) {
    if (!path.isAbsolute(spec.witness)) throw new TieBreakerError(`witness folder ${spec.witness} is not an absolute path`)
    let st: fs.Stats
    try {
      st = fs.statSync(spec.witness)
    } catch (err) {
      throw new TieBreakerError(`witness folder ${spec.witness}: ${(err as Error).message}`)
    }
    if (!st.isDirectory()) throw new TieBreakerError(`witness ${spec.witness} is not a folder`)
  }
  if (spec.fence !== undefined && spec.fence.trim() === '') throw new TieBreakerError('the fence command is empty')
  const t = spec.fenceTimeoutMs
  if (t !== undefined && (!Number.isSafeInteger(t) || t < 1 || t > 3_600_000)) throw new TieBreakerError(`fence timeout ${t} ms is not in 1..3600000`)
  return spec
}

/** Whether a spec asks anyone at all (else xl's behaviour). */
export function hasTieBreaker(spec: TieBreakerSpec | undefined): spec is TieBreakerSpec {
  return spec !== undefined && (spec.witness !== undefined || spec.fence !== undefined)
}

export function claimFile(spec: TieBreakerSpec): string | undefined {
  return spec.witness === undefined ? undefined : path.join(spec.witness, `xl-ts-${spec.session}.claim`)
}

/** The claim of a session, if one was made (undefined also when the file is not a claim). */
export function readClaim(file: string): ClaimRecord | undefined {
  let text: string
  try {
    const fd = fs.openSync(file, 'r')
    try {
      const buf = Buffer.alloc(CLAIM_MAX_BYTES + 1)
      const n = fs.readSync(fd, buf, 0, buf.length, 0)
      if (n > CLAIM_MAX_BYTES) return undefined
      text = buf.subarray(0, n).toString('utf8')
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    return undefined
  }
  try {
    const r = JSON.parse(text) as Partial<ClaimRecord>
    if ((r.side === 'primary' || r.side === 'secondary') && typeof r.host === 'string' && typeof r.pid === 'number') return r as ClaimRecord
  } catch {
    // not a claim
  }
  return undefined
}

/** The atomic test-and-set: true when this side holds the claim (made now or before). */
function claimWitness(file: string, req: ClaimRequest): {won: boolean; holder: ClaimRecord | undefined} {
  const mine: ClaimRecord = {side: req.side, host: os.hostname(), pid: process.pid, domain: req.domain, checkpoint: req.checkpoint, at: new Date().toISOString()}
  const tmp = `${file}.${os.hostname()}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`
  fs.writeFileSync(tmp, `${JSON.stringify(mine)}\n`, {mode: 0o644})
  try {
    fs.linkSync(tmp, file)
    return {won: true, holder: mine}
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  } finally {
    fs.rmSync(tmp, {force: true})
  }
  const holder = readClaim(file)
  return {won: holder?.side === req.side, holder}
}

async function runFence(spec: TieBreakerSpec, req: ClaimRequest): Promise<Verdict> {
  const timeout = spec.fenceTimeoutMs ?? DEFAULT_FENCE_TIMEOUT_MS
  // With node:child_process, not execa (the card's package): the guardians run fences too, and
  // execa would cost their start about 9 ms (../entry-points.ts) and cannot go in their bundle
  // (scripts/bundle.mjs refuses a bundled require()). In a process group of its own: at the time
  // bound the whole command goes (a shell's `sleep` would otherwise hold its stderr, and us, open).
  const child = spawn('sh', ['-c', spec.fence!], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {...process.env, XL_TS_FENCE_SIDE: req.side, XL_TS_FENCE_DOMAIN: req.domain, XL_TS_FENCE_CHECKPOINT: String(req.checkpoint), XL_TS_REPLICATION_SESSION: spec.session},
  })
  let stderr = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    if (stderr.length < 4096) stderr += chunk
  })
  let timedOut = false
  const killGroup = (signal: NodeJS.Signals): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal)
    } catch {
      // gone
    }
  }
  const timer = setTimeout(() => {
    timedOut = true
    killGroup('SIGTERM')
    setTimeout(() => killGroup('SIGKILL'), 2000).unref()
  }, timeout)
  const r = await new Promise<{exitCode: number | null; signal: NodeJS.Signals | null; error?: Error}>((resolve) => {
    child.once('error', (error) => resolve({exitCode: null, signal: null, error}))
    child.once('close', (exitCode, signal) => resolve({exitCode, signal}))
  })
  clearTimeout(timer)
  if (r.error) return {live: false, why: `the fence command could not run: ${r.error.message}`}
  const said = stderr.trim().split('\n').pop() ?? ''
  if (timedOut) return {live: false, why: `the fence command did not finish within ${timeout} ms`}
  if (r.exitCode !== 0) return {live: false, why: `the fence command failed (${r.signal ?? `exit ${r.exitCode}`})${said ? `: ${said}` : ''}`}
  return {live: true, how: 'the fence command succeeded'}
}

/**
 * Asks whether this side may go live. Never throws for a lost claim: a witness that cannot be
 * written or a fence that cannot run keeps the side from going live, and says why.
 */
export async function claimLive(spec: TieBreakerSpec | undefined, req: ClaimRequest): Promise<Verdict> {
  if (!hasTieBreaker(spec)) return {live: true, how: 'no tie-breaker (xl behaviour)'}
  let how = ''
  const file = claimFile(spec)
  if (file !== undefined) {
    let result: ReturnType<typeof claimWitness>
    try {
      result = claimWitness(file, req)
    } catch (err) {
      return {live: false, why: `cannot claim the witness ${file}: ${(err as Error).message}`}
    }
    if (!result.won) {
      const h = result.holder
      return {live: false, why: h ? `the ${h.side} on ${h.host} claimed the witness first (${h.at})` : `the witness ${file} is held by something that is not a claim`}
    }
    how = `claimed the witness ${file}`
  }
  if (spec.fence !== undefined) {
    const fenced = await runFence(spec, req)
    if (!fenced.live) return fenced
    how = how ? `${how}; ${fenced.how}` : fenced.how
  }
  return {live: true, how}
}

/** Removes the session's claim at a clean end (both sides agreed; nobody went live alone). */
export function releaseClaim(spec: TieBreakerSpec | undefined): void {
  const file = spec ? claimFile(spec) : undefined
  if (file) fs.rmSync(file, {force: true})
}

/** The name a copy that lost the tie takes, so that `list` shows which copy is not the live one. */
export function staleName(name: string): string {
  return `${name}--stale`
}

/**
 * What a side that must not run does with its copy: pauses it (a COLO secondary runs between
 * checkpoints) and names it `<name>--stale` while it is still called `from` (an operator's rename
 * meanwhile is kept). Never throws: what failed comes back as lines for the caller to report.
 */
export async function pauseAsStale(hv: Hypervisor, domid: number, name: string, from: string = name): Promise<string[]> {
  const problems: string[] = []
  try {
    if (!(await hv.info(domid)).state.paused) await hv.pause(domid)
  } catch (err) {
    problems.push(`cannot pause domain ${domid}: ${(err as Error).message}`)
  }
  try {
    await renameDomain(hv, domid, staleName(name), {from})
  } catch (err) {
    problems.push(`cannot rename domain ${domid} to ${staleName(name)}: ${(err as Error).message}`)
  }
  return problems
}

/** The spec as guardian argv carries it, and back. */
export function encodeTieBreaker(spec: TieBreakerSpec | undefined): string {
  return hasTieBreaker(spec) ? JSON.stringify(spec) : ''
}

export function decodeTieBreaker(text: string | undefined): TieBreakerSpec | undefined {
  if (!text) return undefined
  const o = JSON.parse(text) as TieBreakerSpec
  return checkTieBreaker({
    session: String(o.session),
    ...(typeof o.witness === 'string' ? {witness: o.witness} : {}),
    ...(typeof o.fence === 'string' ? {fence: o.fence} : {}),
    ...(typeof o.fenceTimeoutMs === 'number' ? {fenceTimeoutMs: o.fenceTimeoutMs} : {}),
  })
}
