/**
 * Live migration tests on simulated hosts: guests made through the CLI, the receiver reached with
 * `-s ''` (the host string is the command) or through a fake ssh (a relay process, so that "the
 * transport" is a process of its own, as ssh is), continuity checks against a twin guest, and the
 * leftover checks (processes, FIFOs, temp dirs, `--incoming` domains).
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {execa, type ResultPromise} from 'execa'

import {createDomainBuilt, destroyDomain, listDomains, resolveDomain, type NamedDomainInfo} from '../../src/toolstack/libxl/index.js'
import {type DomainInfo, type WorkloadSpec} from '../../src/toolstack/hypervisor/index.js'
import {createHypervisor, type SimHypervisor} from '../../src/toolstack/backends/index.js'
import {shellQuote} from '../../src/toolstack/xl/rune.js'
import {BIN, ROOT, cleanupHost, newHost, writeConfig, type Run} from './cli.js'
import {cliFor} from './test-hooks.js'

export {ensureBuilt} from './cli.js'

export const NODE = process.execPath

export interface GuestSpec {
  name: string
  memMiB: number
  dirtyRate: number
  workingSetMiB: number
  seed: number
  packetRate?: number
  /** Probability per step of a host-local perturbation (sim_nondeterminism). */
  nondeterminism?: number
  /** One vif spec (xl's vif = [ '...' ]). */
  vif?: string
  /** One disk spec (xl's disk = [ '...' ]); a relative target is relative to the host folder. */
  disk?: string
  /** Disk writes per second (sim_disk_rate), to the first COLO disk. */
  diskRate?: number
  /** Created paused (xl create -p). */
  paused?: boolean
}

/** The sim workload a guest made from this spec runs (as create makes it from the config). */
export function workloadOf(g: GuestSpec): WorkloadSpec {
  return {
    dirtyRate: g.dirtyRate,
    workingSetMiB: Math.min(g.workingSetMiB, g.memMiB),
    seed: g.seed,
    nondeterminism: g.nondeterminism ?? 0,
    packetRate: g.packetRate ?? 0,
    ...(g.diskRate ? {diskRate: g.diskRate} : {}),
  }
}

export function sim(root: string): SimHypervisor {
  return createHypervisor({backend: 'sim', root}) as SimHypervisor
}

/** Creates the guest on `root` with `xl-ts create` from a config file; returns its domid. */
export async function createGuest(root: string, g: GuestSpec): Promise<number> {
  const cfg = writeConfig(root, `${g.name}-cfg`, {
    name: g.name,
    type: 'hvm',
    memory: g.memMiB,
    vcpus: 1,
    sim_dirty_rate: g.dirtyRate,
    sim_working_set: g.workingSetMiB,
    sim_seed: g.seed,
    ...(g.packetRate ? {sim_packet_rate: g.packetRate} : {}),
    ...(g.diskRate ? {sim_disk_rate: g.diskRate} : {}),
    // A fraction: xl.cfg numbers are integers, so it goes as a string.
    ...(g.nondeterminism ? {sim_nondeterminism: String(g.nondeterminism)} : {}),
  })
  if (g.vif) fs.appendFileSync(cfg, `vif = [ ${JSON.stringify(g.vif)} ]\n`)
  if (g.disk) fs.appendFileSync(cfg, `disk = [ ${JSON.stringify(g.disk)} ]\n`)
  const r = await execa(NODE, [BIN, '--root', root, 'create', '-q', ...(g.paused ? ['-p'] : []), cfg], {reject: false, env: {XL_TS_BACKEND: 'sim'}})
  if (r.exitCode !== 0) throw new Error(`create ${g.name}: ${r.stderr}`)
  const hv = sim(root)
  try {
    return await resolveDomain(hv, g.name)
  } finally {
    hv.close()
  }
}

/** The domains of a host except Domain-0. */
export async function guests(root: string): Promise<NamedDomainInfo[]> {
  const hv = sim(root)
  try {
    return (await listDomains(hv)).filter((d) => d.domid !== 0)
  } finally {
    hv.close()
  }
}

/** True when the domain runs (not paused, not shut down or suspended). */
export function isRunning(d: DomainInfo): boolean {
  return !d.state.paused && !d.state.shutdown && !d.state.dying
}

/**
 * `-s ''` host string: run migrate-receive on `root` (inside `netns` when given), with `bin` (default
 * the production CLI; TEST_BIN for a receiver with test hooks).
 */
export function receiverCommand(root: string, opts: {netns?: string; args?: string[]; bin?: string} = {}): string {
  const words = [NODE, opts.bin ?? BIN, 'migrate-receive', ...(opts.args ?? [])].map(shellQuote).join(' ')
  const prefix = opts.netns ? `exec ip netns exec ${shellQuote(opts.netns)} env XL_TS_ROOT=${shellQuote(root)} ` : `XL_TS_ROOT=${shellQuote(root)} exec `
  return `${prefix}${words}`
}

const FAKE_SSH = `
// A stand-in for ssh: "fake-ssh HOST WORD..." runs the words as a remote shell would (sh -c, with
// xl-ts on PATH and XL_TS_ROOT=HOST: the host is a simulated host's folder) and relays its stdin
// and stdout through this process, so that killing it is cutting the connection.
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
const [host, ...words] = process.argv.slice(2)
if (process.env.FAKE_SSH_LOG) fs.appendFileSync(process.env.FAKE_SSH_LOG, JSON.stringify(process.argv.slice(2)) + '\\n')
const bin = path.join(path.dirname(new URL(import.meta.url).pathname), 'bin')
if (!host || !fs.existsSync(host) || !fs.statSync(host).isDirectory()) {
  process.stderr.write('ssh: Could not resolve hostname ' + host + ': Name or service not known\\n')
  process.exit(255)
}
const child = spawn('sh', ['-c', words.join(' ')], {
  stdio: ['pipe', 'pipe', 'inherit'],
  env: {...process.env, XL_TS_ROOT: host, PATH: bin + ':' + process.env.PATH},
})
child.stdin.on('error', () => {})
process.stdout.on('error', () => {})
process.stdin.pipe(child.stdin)
child.stdout.pipe(process.stdout)
let code = null
let outEnded = false
const finish = () => { if (code !== null && outEnded) process.exit(code) }
child.stdout.on('end', () => { outEnded = true; finish() })
child.on('exit', (c, s) => { code = c ?? 255; finish() })
`

export interface FakeSsh {
  /** The -s value. */
  command: string
  dir: string
  remove(): void
}

/** Writes the fake ssh and an `xl-ts` for its PATH (running `bin`: default the production CLI) into a temp dir. */
export function fakeSsh(opts: {bin?: string} = {}): FakeSsh {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-ssh-'))
  fs.writeFileSync(path.join(dir, 'fake-ssh.mjs'), FAKE_SSH)
  fs.mkdirSync(path.join(dir, 'bin'))
  const xlts = path.join(dir, 'bin', 'xl-ts')
  fs.writeFileSync(xlts, `#!/bin/sh\nexec ${shellQuote(NODE)} ${shellQuote(opts.bin ?? BIN)} "$@"\n`, {mode: 0o755})
  return {command: `${shellQuote(NODE)} ${shellQuote(path.join(dir, 'fake-ssh.mjs'))}`, dir, remove: () => fs.rmSync(dir, {recursive: true, force: true})}
}

export interface MigrateRun extends Run {
  ms: number
}

export interface MigrateOptions {
  env?: Record<string, string>
  timeout?: number
}

/** Starts `xl-ts --root ROOT migrate ARGS` (not awaited); through TEST_BIN when `env` asks for test hooks. */
export function startMigrate(root: string, args: readonly string[], opts: MigrateOptions = {}): ResultPromise<{reject: false}> {
  return execa(NODE, [cliFor(opts.env), '--root', root, 'migrate', ...args], {
    cwd: ROOT,
    env: {XL_TS_BACKEND: 'sim', ...opts.env},
    extendEnv: true,
    reject: false,
    stdin: 'ignore',
    stripFinalNewline: false,
    timeout: opts.timeout ?? 120_000,
  }) as ResultPromise<{reject: false}>
}

export async function migrate(root: string, args: readonly string[], opts: MigrateOptions = {}): Promise<MigrateRun> {
  const t0 = performance.now()
  const r = await startMigrate(root, args, opts)
  return {exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr), ms: performance.now() - t0}
}

/**
 * The migrated guest carries on from exactly where it was: every page consistent, and after the
 * guest stops itself a little later, memory and vCPU state equal to a twin guest (same workload,
 * made fresh on `scratch`) run for the same number of steps. Leaves the guest running.
 */
export async function checkContinuity(root: string, name: string, g: GuestSpec, scratch: string): Promise<{step: number; checksum: string}> {
  const hv = sim(root)
  const twinHv = sim(scratch)
  let twin: number | undefined
  try {
    const domid = await resolveDomain(hv, name)
    const report = await hv.verifyIntegrity(domid)
    if (!report.ok) throw new Error(`${name}: ${report.badCount} bad pages, first ${JSON.stringify(report.bad.slice(0, 3))}`)
    const now = (await hv.runtime(domid)).step
    const stopAt = now + 200
    await hv.stopAtStep(domid, stopAt)
    const until = Date.now() + 20_000
    for (;;) {
      const rt = await hv.runtime(domid)
      if (rt.paused && rt.step === stopAt) break
      if (Date.now() > until) throw new Error(`${name} did not stop at step ${stopAt} (at ${rt.step}, paused ${rt.paused})`)
      await new Promise((r) => setTimeout(r, 10))
    }
    await hv.stopAtStep(domid, null)
    const checksum = await hv.checksum(domid)
    twin = await createDomainBuilt(twinHv, 
      {name: `twin-${name}`, type: 'hvm', maxMemKb: g.memMiB * 1024, vcpus: 1, config: {}, workload: workloadOf(g)},
      {paused: true},
    )
    await twinHv.runSteps(twin, stopAt)
    const twinSum = await twinHv.checksum(twin)
    if (twinSum !== checksum) throw new Error(`${name} at step ${stopAt}: checksum ${checksum} but its twin has ${twinSum}`)
    await hv.unpause(domid)
    return {step: stopAt, checksum}
  } finally {
    if (twin !== undefined) await destroyDomain(twinHv, twin).catch(() => undefined)
    hv.close()
    twinHv.close()
  }
}

/** Processes (not domain processes) that carry `marker` in their environment. */
export function markedProcesses(marker: string): {pid: number; cmd: string}[] {
  const out: {pid: number; cmd: string}[] = []
  for (const e of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(e) || Number(e) === process.pid) continue
    let env: string
    let cmd: string
    let stat: string
    try {
      env = fs.readFileSync(`/proc/${e}/environ`, 'latin1')
      cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'latin1')
      stat = fs.readFileSync(`/proc/${e}/stat`, 'latin1')
    } catch {
      continue
    }
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue
    // A domain and its device model are the host's, not the run's.
    if (cmd.includes('domain-main.js') || cmd.includes('qemu-system')) continue
    if (env.split('\0').includes(marker)) out.push({pid: Number(e), cmd: cmd.split('\0').join(' ').trim()})
  }
  return out
}

/** Waits until no process carries `marker` (the guardian exits a moment after the receiver). */
export async function waitNoMarked(marker: string, ms = 10_000): Promise<{pid: number; cmd: string}[]> {
  const until = Date.now() + ms
  for (;;) {
    const left = markedProcesses(marker)
    if (left.length === 0 || Date.now() > until) return left
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A fresh per-run folder: TMPDIR for the sender (its fd pair's private directory goes there). */
export function scratchDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `xlts-${tag}-`))
}

/** The variable that marks a run's processes (every process of the run inherits it; nothing reads it). */
export const MARKER_ENV = 'XL_TS_TEST_MARKER'

/** `marker` (in every process's environment) is what the leftover checks look for. */
export function runMarker(tmp: string): {env: Record<string, string>; marker: string} {
  return {env: {[MARKER_ENV]: tmp}, marker: `${MARKER_ENV}=${tmp}`}
}

/**
 * The env of one migration run: temp files go to `tmp`, and `marker` (in every process's
 * environment) is what the leftover checks look for.
 */
export function markedEnv(tmp: string): {env: Record<string, string>; marker: string; tmp: string} {
  const m = runMarker(tmp)
  return {env: {...m.env, TMPDIR: tmp}, marker: m.marker, tmp}
}

export {cleanupHost, newHost, shellQuote}

/** argv that runs the CLI: node bin/run.js */
export const BIN_ARGS = [NODE, BIN]
