/**
 * xl-ts migrate's options, xl's and ours: --json (NDJSON schema v1), the precopy knobs
 * (--max-iters, --max-downtime, --bandwidth, --dirty-threshold), --timeout (abort and resume at the
 * source), -p, -C, the rune's quoting against names that look like shell, and bad usage.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BIN, writeConfig} from './support/cli.js'
import {
  markedEnv,
  cleanupHost,
  createGuest,
  ensureBuilt,
  fakeSsh,
  guests,
  isRunning,
  migrate,
  newHost,
  receiverCommand,
  scratchDir,
  waitNoMarked,
  NODE,
  type FakeSsh,
  type GuestSpec,
} from './support/migrate.js'

const hosts: string[] = []
const dirs: string[] = []
let ssh: FakeSsh

beforeAll(async () => {
  await ensureBuilt()
  ssh = fakeSsh()
})

afterAll(async () => {
  for (const h of hosts.splice(0)) await cleanupHost(h)
  for (const d of dirs.splice(0)) fs.rmSync(d, {recursive: true, force: true})
  ssh?.remove()
})

function host(tag: string): string {
  const h = newHost(tag)
  hosts.push(h)
  return h
}

function marked(tag: string): {env: Record<string, string>; marker: string; tmp: string} {
  const tmp = scratchDir(tag)
  dirs.push(tmp)
  return markedEnv(tmp)
}

async function pair(tag: string, g: GuestSpec): Promise<[string, string]> {
  const a = host(`${tag}a`)
  const b = host(`${tag}b`)
  await createGuest(a, g)
  return [a, b]
}

interface Json {
  v: number
  event: string
  [k: string]: unknown
}

function ndjson(stdout: string): Json[] {
  return stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Json)
}

const G = (name: string, extra: Partial<GuestSpec> = {}): GuestSpec => ({name, memMiB: 32, dirtyRate: 3000, workingSetMiB: 8, seed: 21, ...extra})

describe('xl-ts migrate --json', () => {
  it('prints one NDJSON object per phase and round, then the result (schema v1)', async () => {
    const [a, b] = await pair('js', G('js'))
    const r = await migrate(a, ['--json', '-s', '', 'js', receiverCommand(b)])
    expect(r.exitCode, r.stderr).toBe(0)
    const events = ndjson(r.stdout)
    expect(events.every((e) => e.v === 1)).toBe(true)
    const phases = events.filter((e) => e.event === 'phase').map((e) => e.phase)
    expect(phases).toEqual(['connect', 'banner', 'header', 'precopy', 'stop-and-copy', 'ready', 'go', 'report'])
    const rounds = events.filter((e) => e.event === 'iteration')
    expect(rounds.length).toBeGreaterThanOrEqual(1)
    expect(rounds[0]).toMatchObject({iteration: 1, pages: 8192})
    for (const k of ['ms', 'bandwidthMiBps', 'tMs']) expect(typeof rounds[0]![k]).toBe('number')
    const result = events[events.length - 1]!
    expect(result).toMatchObject({event: 'result', ok: true, outcome: 'migrated', exitCode: 0, iterations: rounds.length})
    expect(result.downtimeMs as number).toBeGreaterThan(0)
    expect(result.totalMs as number).toBeGreaterThan(result.downtimeMs as number)
    expect(result.bytes as number).toBeGreaterThan(32 * 1024 * 1024)
    expect(result.pagesSent as number).toBeGreaterThanOrEqual(8192)
    expect(typeof result.pausedPages).toBe('number')
    // xl's lines stay on stderr.
    expect(r.stderr).toContain('Migration successful.')
    expect(r.stderr).not.toContain('precopy iteration')
  })
})

describe('precopy tuning', () => {
  it('--max-iters 1: one live round, then stop-and-copy', async () => {
    const [a, b] = await pair('mi', G('mi'))
    const r = await migrate(a, ['--json', '--max-iters', '1', '-s', '', 'mi', receiverCommand(b)])
    expect(r.exitCode, r.stderr).toBe(0)
    const result = ndjson(r.stdout).pop()!
    expect(result).toMatchObject({event: 'result', ok: true, iterations: 1})
  })

  it('--dirty-threshold: stops as soon as fewer pages are dirty', async () => {
    const [a, b] = await pair('dt', G('dt', {dirtyRate: 2000}))
    const r = await migrate(a, ['--json', '--dirty-threshold', '1000000', '-s', '', 'dt', receiverCommand(b)])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(ndjson(r.stdout).pop()).toMatchObject({event: 'result', ok: true, iterations: 1})
  })

  it('--max-downtime: stops when the predicted stop-and-copy fits', async () => {
    const [a, b] = await pair('md', G('md', {dirtyRate: 4000}))
    const r = await migrate(a, ['--json', '--max-downtime', '200', '-s', '', 'md', receiverCommand(b)])
    expect(r.exitCode, r.stderr).toBe(0)
    const events = ndjson(r.stdout)
    const result = events.pop()!
    expect(result).toMatchObject({event: 'result', ok: true})
    expect(result.iterations as number).toBeLessThanOrEqual(30)
    expect(await guests(b)).toHaveLength(1)
  })

  it('--bandwidth caps the stream', async () => {
    const [a, b] = await pair('bw', G('bw', {dirtyRate: 0, memMiB: 32}))
    const r = await migrate(a, ['--json', '--bandwidth', '64', '-s', '', 'bw', receiverCommand(b)])
    expect(r.exitCode, r.stderr).toBe(0)
    const events = ndjson(r.stdout)
    const first = events.find((e) => e.event === 'iteration')!
    // 32 MiB at 64 MiB/s: about half a second, not the few tens of ms it takes uncapped.
    expect(first.ms as number).toBeGreaterThan(400)
    expect(first.bandwidthMiBps as number).toBeLessThan(64 * 1.15)
  })
})

describe('--timeout', () => {
  it('gives up before GO, kills the transport and whatever holds its pipes, and resumes at the source', async () => {
    const a = host('to')
    await createGuest(a, G('to'))
    const {env, marker, tmp} = marked('to')
    // A receiver that answers and then never reads: the stream stalls in the pipe.
    const stall = `printf 'xl migration receiver ready, send binary domain data.\\n'; sleep 60; true`
    const r = await migrate(a, ['--timeout', '1.5', '-s', '', 'to', stall], {env})
    expect(r.exitCode).toBe(1)
    expect(r.ms).toBeLessThan(10_000)
    expect(r.stderr).toContain('migration sender: timed out after 1.5 s (--timeout) before the target had the domain')
    expect(r.stderr).toContain('Migration failed, resuming at sender.')
    const left = await guests(a)
    expect(left.map((d) => d.name)).toEqual(['to'])
    expect(isRunning(left[0]!)).toBe(true)
    expect(await waitNoMarked(marker)).toEqual([])
    expect(fs.readdirSync(tmp).filter((f) => !f.endsWith('.json'))).toEqual([])
  })

  it('with a receiver that never answers: the domain is not touched', async () => {
    const a = host('tb')
    await createGuest(a, G('tb'))
    const r = await migrate(a, ['--timeout', '0.5', '-s', '', 'tb', 'sleep 60'])
    expect(r.exitCode).toBe(1)
    expect(r.stderr).toContain('timed out after 0.5 s')
    expect(r.stderr).toContain('Migration failed: the receiver did not answer in time.')
    expect((await guests(a)).map((d) => [d.name, isRunning(d)])).toEqual([['tb', true]])
  })
})

describe("xl's options", () => {
  it('-p leaves the domain paused at the target, under its name', async () => {
    const [a, b] = await pair('p', G('pp'))
    const r = await migrate(a, ['-p', '-s', ssh.command, 'pp', b])
    expect(r.exitCode, r.stderr).toBe(0)
    const there = await guests(b)
    expect(there.map((d) => d.name)).toEqual(['pp'])
    expect(there[0]!.state.paused).toBe(true)
    expect(await guests(a)).toEqual([])
  })

  it('-C sends another config: the domain arrives under the name it gives', async () => {
    const [a, b] = await pair('c', G('cc'))
    const cfg = writeConfig(a, 'override', {name: 'cc-new', type: 'hvm', memory: 32, vcpus: 1, sim_dirty_rate: 3000, sim_working_set: 8, sim_seed: 21})
    const r = await migrate(a, ['-C', cfg, '-s', '', 'cc', receiverCommand(b)])
    expect(r.exitCode, r.stderr).toBe(0)
    expect((await guests(b)).map((d) => d.name)).toEqual(['cc-new'])
    const bad = await migrate(a, ['-C', path.join(a, 'nope.cfg'), '-s', '', 'cc', receiverCommand(b)])
    expect(bad.exitCode).toBe(1)
  })

  it('reaches the receiver through ssh with the flags xl forwards', async () => {
    const [a, b] = await pair('ssh', G('sshvm'))
    const log = path.join(ssh.dir, 'argv.log')
    const r = await migrate(a, ['-e', '--debug', '-s', ssh.command, 'sshvm', b], {env: {FAKE_SSH_LOG: log}})
    expect(r.exitCode, r.stderr).toBe(0)
    const argv = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]).pop()!
    // Not a terminal: no -t; -e and -d forwarded.
    expect(argv).toEqual([b, 'xl-ts', 'migrate-receive', '-e', '-d'])
    expect((await guests(b)).map((d) => d.name)).toEqual(['sshvm'])
  })
})

describe('names that look like shell', () => {
  it('a host name never becomes shell: ssh gets it as one literal word', async () => {
    const a = host('inj')
    await createGuest(a, G('inj'))
    const dir = scratchDir('inj')
    dirs.push(dir)
    const pwned = path.join(dir, 'pwned')
    const log = path.join(dir, 'argv.log')
    const evil = `h$(touch ${pwned});touch ${pwned}\`touch ${pwned}\``
    const r = await migrate(a, ['-s', ssh.command, 'inj', evil], {env: {FAKE_SSH_LOG: log}})
    expect(r.exitCode).toBe(1)
    expect(fs.existsSync(pwned)).toBe(false)
    expect((JSON.parse(fs.readFileSync(log, 'utf8').trim()) as string[])[0]).toBe(evil)
    expect(r.stderr).toContain('file/stream truncated reading banner from migration receiver stream')
    expect((await guests(a)).map((d) => [d.name, isRunning(d)])).toEqual([['inj', true]])
  })

  it("'vm;rm -rf /' and 'host$(x)' are inert", async () => {
    const a = host('inj2')
    const dir = scratchDir('inj2')
    dirs.push(dir)
    const r = await migrate(a, ['-s', ssh.command, `vm;touch ${dir}/a`, `host$(touch ${dir}/b)`])
    expect(r.exitCode).toBe(1)
    expect(r.stderr.trim()).toBe(`vm;touch ${dir}/a is an invalid domain identifier (rc=-6)\nxl-ts: hint: 'xl-ts list' shows the domains on this host`)
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it('a host that starts with "-" is refused (ssh would read it as an option)', async () => {
    const a = host('dash')
    await createGuest(a, G('dash'))
    const r = await migrate(a, ['dash', '--', '-oProxyCommand=touch /tmp/x'])
    expect(r.exitCode).toBe(1)
    expect(r.stderr.trim()).toBe('xl-ts: migrate: host "-oProxyCommand=touch /tmp/x" starts with "-": ssh would take it as an option')
  })
})

describe('bad usage', () => {
  it("exits 2 with xl's words", async () => {
    const a = host('use')
    expect((await migrate(a, ['onlyone'])).exitCode).toBe(2)
    const bad = await migrate(a, ['--timeout', 'soon', 'x', 'y'])
    expect(bad.exitCode).toBe(2)
    expect(bad.stderr.trim()).toBe('xl-ts: migrate: --timeout must be a positive number, not "soon"\nxl-ts: hint: see \'xl-ts migrate --help\'')
    expect((await migrate(a, ['--max-downtime', '0', 'x', 'y'])).exitCode).toBe(2)
    expect((await migrate(a, ['-x', 'x', 'y'])).stderr.trim()).toBe("option `x' not supported.\nxl-ts: hint: see 'xl-ts migrate --help'")
    const missing = await migrate(a, ['nosuch', 'y'])
    expect(missing.exitCode).toBe(1)
    expect(missing.stderr.trim()).toBe("nosuch is an invalid domain identifier (rc=-6)\nxl-ts: hint: 'xl-ts list' shows the domains on this host")
  })

  it('migrate-receive with an argument prints its usage and exits 1, as xl', async () => {
    const {execa} = await import('execa')
    const r = await execa(NODE, [BIN, 'migrate-receive', 'extra'], {reject: false, env: {XL_TS_BACKEND: 'sim', XL_TS_ROOT: host('mr')}, stdin: 'ignore'})
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toContain('Usage: xl-ts migrate-receive')
  })
})

