/**
 * Remus and COLO runs for the tests: two simulated hosts with a guest on the first, `xl-ts remus
 * --json [-c]` to the second (`-s ''`), its NDJSON events, the test probe's checksums, clean-up.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'

import {execa, type ResultPromise} from 'execa'

import {NODE, cleanupHost, createGuest, markedProcesses, newHost, receiverCommand, runMarker, scratchDir, type GuestSpec} from './migrate.js'
import {cliFor} from './test-hooks.js'

export const cleanups: (() => Promise<void>)[] = []
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export interface Event {
  v: number
  event: string
  [k: string]: unknown
}

export interface ProbeLine {
  checkpoint: number
  /** Absent on a view line. */
  checksum: string
  failover?: boolean
  /** sha256 of the guest's disk image (a COLO disk). */
  disk?: string
  /** The COLO secondary's disk view check. */
  view?: {blocks: number; mismatches: number}
}

/** Two hosts, a guest on the first, a scratch folder for the probe and temp files, all cleaned up. */
export async function setup(tag: string, g: GuestSpec, prepare?: (root: string) => Promise<void>) {
  const a = newHost(`${tag}a`)
  const b = newHost(`${tag}b`)
  const tmp = scratchDir(`remus-${tag}`)
  const {marker} = runMarker(tmp)
  const cleanup = async (): Promise<void> => {
    for (const p of markedProcesses(marker)) {
      try {
        process.kill(p.pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
    await cleanupHost(a)
    await cleanupHost(b)
    fs.rmSync(tmp, {recursive: true, force: true})
  }
  cleanups.push(cleanup)
  for (const root of prepare ? [a, b] : []) {
    fs.mkdirSync(root, {recursive: true})
    await prepare!(root)
  }
  const domid = await createGuest(a, g)
  const done = async (): Promise<void> => {
    await cleanup()
    cleanups.splice(cleanups.indexOf(cleanup), 1)
  }
  return {a, b, tmp, marker, domid, done}
}

/**
 * `xl-ts remus --json ARGS` from `a` to `b`, marked for the leftover checks, temp files in `tmp`.
 * With test hooks in `env` (testHooksEnv) both sides run TEST_BIN; else the production CLI.
 */
export function startRemus(
  a: string,
  b: string,
  tmp: string,
  args: string[],
  env: Record<string, string> = {},
  /** Wraps the backup's command (the `-s ''` host string), e.g. to capture its streams. */
  wrap: (receiver: string) => string = (r) => r,
): ResultPromise<{reject: false}> {
  // With -c the backup runs `migrate-receive --colo`, else `-r`.
  const bin = cliFor(env)
  const receiver = receiverCommand(b, {args: args.includes('-c') ? ['--colo'] : ['-r'], bin})
  return execa(NODE, [bin, '--root', a, 'remus', '--json', ...args, '-s', '', 'vm', wrap(receiver)], {
    env: {XL_TS_BACKEND: 'sim', ...runMarker(tmp).env, TMPDIR: tmp, ...env},
    reject: false,
    stdin: 'ignore',
    timeout: 120_000,
  }) as ResultPromise<{reject: false}>
}

export function events(stdout: unknown): Event[] {
  return String(stdout)
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Event)
}

export function probeLines(file: string): ProbeLine[] {
  if (!fs.existsSync(file)) return []
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as ProbeLine)
}

export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** Waits until the NDJSON on the run's stdout shows `n` acknowledged checkpoints. */
export async function untilAcked(run: ResultPromise<{reject: false}>, n: number, ms = 30_000): Promise<void> {
  let out = ''
  run.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (events(out.slice(0, out.lastIndexOf('\n') + 1)).filter((e) => e.event === 'ack').length >= n) return
    await sleep(20)
  }
  throw new Error(`no ${n} acknowledged checkpoints within ${ms} ms:\n${out.slice(-2000)}`)
}

export function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y)
  return s[Math.floor(s.length / 2)]!
}


/** The backup's processes: the receiver, its restore helper, its guardian. */
export function isBackupProcess(cmd: string): boolean {
  // (The primary's own command line names the receiver command too.)
  if (/ remus /.test(cmd)) return false
  return cmd.includes('migrate-receive') || cmd.includes('--restore-domain') || (cmd.includes('guardian') && cmd.includes(' receiver '))
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    if (alive(pid)) process.kill(pid, sig)
  } catch {
    // gone
  }
}

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Waits until the run's NDJSON shows `n` checkpoints. */
export async function untilCheckpoints(run: {stdout: NodeJS.ReadableStream | null}, n: number, ms = 60_000): Promise<void> {
  let out = ''
  run.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (events(out.slice(0, out.lastIndexOf('\n') + 1)).filter((e) => e.event === 'checkpoint').length >= n) return
    await sleep(20)
  }
  throw new Error(`no ${n} checkpoints within ${ms} ms:\n${out.slice(-2000)}`)
}

