/**
 * Remus network buffering for real: scripts/remus-netbuf-setup and the plug qdisc
 * (src/toolstack/replication/plug-qdisc.ts), in two network namespaces of our own. "host" plays dom0 and
 * holds the vif (one end of a veth pair), the ifb and a UDP receiver; "guest" holds the other end
 * and sends UDP datagrams into the vif, as a guest's frontend would. A datagram reaches the receiver
 * only through the vif's ingress redirect, the ifb's plug qdisc, and back into the vif: what the
 * receiver gets is exactly what the plug let out.
 *
 * The probe runs first (at collection). If this kernel lacks ifb or sch_plug, the tests assert that
 * the probe and the script say so with the operator's reason, and the parts that need the plug
 * qdisc are skipped with that reason printed. Everything lives in the namespaces and a temporary
 * state folder, all removed in afterAll whatever happened.
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as zlib from 'node:zlib'
import {execa, type ResultPromise} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {PlugQdisc, kernelReason, probePlugQdisc} from '../src/toolstack/replication/plug-qdisc.js'
import {REPO, sleep, waitFor} from './support/sim-host.js'
import {addNetns, type Netns} from './support/sim-netns.js'

const SCRIPT = path.join(REPO, 'scripts', 'remus-netbuf-setup')
const VIF = 'vif7.0'
const VIF2 = 'vif7.1'
const HOST_IP = '192.0.2.1' // TEST-NET-1, only ever inside our namespaces
const GUEST_IP = '192.0.2.2'
const HOST_IP2 = '198.51.100.1' // TEST-NET-2, the second vif's
const GUEST_IP2 = '198.51.100.2'
const PORT = 4790
const XENBUS = '/libxl/7/remus/netbuf/0'
const XENBUS2 = '/libxl/7/remus/netbuf/1'
/** How long "nothing more arrives" is watched for. */
const QUIET_MS = 300

const probe = await probePlugQdisc()
const plugOk = probe.ok
if (!probe.ok) console.log(`remus-netbuf: the plug qdisc tests are skipped: ${probe.reason}\n  (${probe.detail})`)

let host: Netns | undefined
let guest: Netns | undefined
let state = ''
const receivers: ResultPromise[] = []

/** The ifb devices in a namespace (the default one without ns). */
async function ifbsIn(ns?: Netns): Promise<string[]> {
  const argv = ['ip', '-o', 'link', 'show', 'type', 'ifb']
  const out = ns ? await sh(ns, ...argv) : (await execa(argv[0]!, argv.slice(1))).stdout
  return out.split('\n').filter(Boolean).map((l) => l.split(': ')[1]!.replace(/@.*/, ''))
}

/** Probe namespaces (other test files make and delete namespaces of their own meanwhile) and the
 * default namespace's ifb devices: what a probe must not change. */
async function outsideView(): Promise<{netns: string[]; ifbs: string[]}> {
  const netns = (await execa('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith('xlts-probe-'))
  return {netns, ifbs: await ifbsIn()}
}

/** Runs argv in a namespace; never throws for the command's own failure. */
async function inNs(ns: Netns, argv: string[], env: Record<string, string> = {}) {
  return execa('ip', ['netns', 'exec', ns.name, ...argv], {reject: false, env, extendEnv: true, timeout: 60_000})
}

async function sh(ns: Netns, ...argv: string[]): Promise<string> {
  const r = await inNs(ns, argv)
  if (r.failed) throw new Error(`${argv.join(' ')} in ${ns.name}: ${r.stderr || r.shortMessage}`)
  return r.stdout
}

/** remus-netbuf-setup setup|teardown in the host namespace, with libxl's environment. */
function netbuf(command: 'setup' | 'teardown', vif: string, xenbus: string, ifb = '') {
  const env: Record<string, string> = {vifname: vif, XENBUS_PATH: xenbus, XL_TS_NETBUF_STATE: state}
  if (command === 'teardown') env['REMUS_IFB'] = ifb
  return inNs(host!, ['bash', SCRIPT, command], env)
}

/** The keys the script keeps for XENBUS_PATH, as {name: value}. */
function keys(xenbus: string): Record<string, string> {
  const dir = path.join(state, xenbus)
  if (!fs.existsSync(dir)) return {}
  return Object.fromEntries(fs.readdirSync(dir).map((k) => [k, fs.readFileSync(path.join(dir, k), 'utf8').trim()]))
}

/** Files left under the state folder (the lock file is the folder's own). */
function stateFiles(dir = state): string[] {
  return fs.readdirSync(dir, {withFileTypes: true}).flatMap((e) => {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) return [path.relative(state, p) + '/', ...stateFiles(p)]
    return e.name === '.pickifb.lock' ? [] : [path.relative(state, p)]
  })
}

const qdiscs = (ns: Netns, dev: string): Promise<string> => sh(ns, 'tc', 'qdisc', 'show', 'dev', dev)
const filters = (ns: Netns, dev: string): Promise<string> => sh(ns, 'tc', 'filter', 'show', 'dev', dev, 'parent', 'ffff:')

/** The kernel's own word on a Kconfig symbol, when it publishes its config. */
function kernelConfig(symbol: string): 'y' | 'm' | 'n' | undefined {
  let text: string
  try {
    text = zlib.gunzipSync(fs.readFileSync('/proc/config.gz')).toString()
  } catch {
    return undefined
  }
  const m = new RegExp(`^${symbol}=([ym])$`, 'm').exec(text)
  return m ? (m[1] as 'y' | 'm') : 'n'
}

/** A veth pair: `vif` in the host namespace, `eth` in the guest's, addressed, with static neighbours. */
async function addLink(vif: string, eth: string, hostIp: string, guestIp: string): Promise<void> {
  await sh(host!, 'ip', 'link', 'add', vif, 'type', 'veth', 'peer', 'name', eth, 'netns', guest!.name)
  await sh(host!, 'ip', 'addr', 'add', `${hostIp}/24`, 'dev', vif)
  await sh(guest!, 'ip', 'addr', 'add', `${guestIp}/24`, 'dev', eth)
  await sh(host!, 'ip', 'link', 'set', vif, 'up')
  await sh(guest!, 'ip', 'link', 'set', eth, 'up')
  const mac = async (ns: Netns, dev: string) => (JSON.parse(await sh(ns, 'ip', '-j', 'link', 'show', 'dev', dev)) as {address: string}[])[0]!.address
  await sh(guest!, 'ip', 'neigh', 'replace', hostIp, 'lladdr', await mac(host!, vif), 'dev', eth, 'nud', 'permanent')
  await sh(host!, 'ip', 'neigh', 'replace', guestIp, 'lladdr', await mac(guest!, eth), 'dev', vif, 'nud', 'permanent')
}

const RECEIVER = `
const s = require('node:dgram').createSocket('udp4')
s.on('message', (m) => process.stdout.write(m.toString() + '\\n'))
s.bind(Number(process.argv[2]), process.argv[1], () => process.stdout.write('ready\\n'))
`
const SENDER = `
const s = require('node:dgram').createSocket('udp4')
const [ip, port, ...payloads] = process.argv.slice(1)
;(async () => {
  for (const p of payloads) await new Promise((res, rej) => s.send(p, Number(port), ip, (e) => (e ? rej(e) : res())))
  s.close()
})()
`

/** A UDP receiver in the host namespace; its datagrams, one string each, in arrival order. */
async function startReceiver(ip: string): Promise<string[]> {
  const got: string[] = []
  const r = execa('ip', ['netns', 'exec', host!.name, process.execPath, '-e', RECEIVER, ip, String(PORT)], {reject: false})
  receivers.push(r)
  let ready = false
  let partial = ''
  r.stdout!.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n')
    partial = lines.pop()!
    for (const l of lines) {
      if (l === 'ready') ready = true
      else got.push(l)
    }
  })
  await waitFor('the receiver', () => ready)
  return got
}

async function send(ip: string, ...payloads: string[]): Promise<void> {
  await sh(guest!, process.execPath, '-e', SENDER, ip, String(PORT), ...payloads)
}

beforeAll(async () => {
  state = fs.mkdtempSync(path.join(os.tmpdir(), `xlts-netbuf-${crypto.randomBytes(3).toString('hex')}-`))
  host = await addNetns()
  guest = await addNetns()
  for (const ns of [host, guest]) {
    await sh(ns, 'ip', 'link', 'set', 'lo', 'up')
    // No IPv6 chatter (router solicitations, MLD) in the plug qdisc's counters.
    await inNs(ns, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'])
  }
  await addLink(VIF, 'eth0', HOST_IP, GUEST_IP)
})

afterAll(async () => {
  for (const r of receivers) r.kill('SIGKILL')
  await host?.remove()
  await guest?.remove()
  if (state) fs.rmSync(state, {recursive: true, force: true})
})

describe('the probe', () => {
  it('finds out whether the kernel can buffer, gives the reason when it cannot, and leaves nothing behind', async () => {
    const before = await outsideView()
    const again = await probePlugQdisc()
    expect(await outsideView()).toEqual(before)
    expect(again).toEqual(probe)
    console.log(`remus-netbuf: probe ${JSON.stringify(probe)}`)

    // Where the kernel publishes its config, the probe must agree with it on what is built in.
    const plugConfig = kernelConfig('CONFIG_NET_SCH_PLUG')
    const ifbConfig = kernelConfig('CONFIG_IFB')
    if (plugConfig === 'y' && ifbConfig === 'y') expect(probe.ok).toBe(true)
    if (plugConfig === 'n' || ifbConfig === 'n') {
      expect(probe).toMatchObject({ok: false, cause: 'kernel'})
      if (probe.ok) return
      expect(probe.missing.includes('sch_plug')).toBe(plugConfig === 'n')
      expect(probe.missing.includes('ifb')).toBe(ifbConfig === 'n')
    }
    if (!probe.ok && probe.cause === 'kernel') {
      expect(probe.reason).toBe(kernelReason(probe.missing))
      if (probe.missing.length === 1 && probe.missing[0] === 'sch_plug') {
        expect(probe.reason).toBe(
          'the kernel has no sch_plug module (plug qdisc): network buffering needs it; use -n with -F to run without it',
        )
      }
    }
    if (!probe.ok) expect(probe.reason).toMatch(/: network buffering needs .*; .*use -n with -F to run without it$/)
  })

  it('says so when tc cannot be run', async () => {
    const r = await probePlugQdisc({tc: '/nonexistent/tc'})
    expect(r).toMatchObject({ok: false, cause: 'no-tc', missing: []})
    if (!r.ok) expect(r.reason).toMatch(/^tc \(iproute2\) cannot be run: .*use -n with -F/)
  })

  it('PlugQdisc refuses names it would not pass on', () => {
    for (const bad of ['', 'a/b', '-rf', 'x'.repeat(16), '..', 'eth0 up', 'ifb0;reboot']) {
      expect(() => new PlugQdisc(bad), bad).toThrow(/is not a network device name/)
    }
    expect(() => new PlugQdisc('ifb0', {netns: '../x'})).toThrow(/is not a network namespace name/)
    expect(new PlugQdisc('ifb0').dev).toBe('ifb0')
  })
})

describe('remus-netbuf-setup', () => {
  it('fails with the reason for a vif that does not exist, and teardown clears the keys', async () => {
    const r = await netbuf('setup', 'vif99.0', XENBUS)
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toBe('remus-netbuf-setup: no such vif: vif99.0')
    expect(keys(XENBUS)).toEqual({'hotplug-error': 'no such vif: vif99.0', 'hotplug-status': 'error'})
    expect(await ifbsIn(host!)).toEqual([])
    const t = await netbuf('teardown', 'vif99.0', XENBUS)
    expect([t.exitCode, t.stderr]).toEqual([0, ''])
    expect(stateFiles()).toEqual([])
  })

  it('refuses bad arguments and environments', async () => {
    expect((await inNs(host!, ['bash', SCRIPT, 'frobnicate'])).exitCode).toBe(2)
    const bad = await inNs(host!, ['bash', SCRIPT, 'setup'], {vifname: VIF, XENBUS_PATH: '/libxl/../../etc', XL_TS_NETBUF_STATE: state})
    expect(bad.exitCode).toBe(1)
    expect(bad.stderr).toMatch(/XENBUS_PATH '\/libxl\/\.\.\/\.\.\/etc' is not a path/)
    const noVif = await inNs(host!, ['bash', SCRIPT, 'setup'], {vifname: '', XENBUS_PATH: XENBUS, XL_TS_NETBUF_STATE: state})
    expect(noVif.stderr).toBe('remus-netbuf-setup: vifname is not set')
    expect(stateFiles()).toEqual([])
  })

  it.skipIf(plugOk)('without ifb or sch_plug: fails with the probe\'s reason and leaves nothing', async () => {
    if (probe.ok) return
    console.log(`remus-netbuf: checking the script's refusal: ${probe.reason}`)
    const r = await netbuf('setup', VIF, XENBUS)
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toBe('')
    const first = probe.missing[0]
    if (probe.cause === 'kernel' && first) {
      const said = `the kernel has no ${first === 'ifb' ? 'ifb module (ifb devices)' : 'sch_plug module (plug qdisc)'}: network buffering needs it`
      expect(r.stderr).toBe(`remus-netbuf-setup: ${said}`)
      expect(keys(XENBUS)).toEqual({'hotplug-error': said, 'hotplug-status': 'error'})
    }
    expect(await ifbsIn(host!)).toEqual([])
    expect(await qdiscs(host!, VIF)).not.toMatch(/ingress/)
    const t = await netbuf('teardown', VIF, XENBUS)
    expect(t.exitCode).toBe(0)
    expect(stateFiles()).toEqual([])
  })

  describe.runIf(plugOk)('with the plug qdisc', () => {
    let ifb = ''

    it('setup makes an ifb with a plug root qdisc and redirects the vif\'s IPv4 traffic to it', async () => {
      const r = await netbuf('setup', VIF, XENBUS)
      expect([r.exitCode, r.stderr]).toEqual([0, ''])
      ifb = r.stdout
      expect(ifb).toMatch(/^ifb\d+$/)
      expect(await ifbsIn(host!)).toEqual([ifb])
      expect(keys(XENBUS)).toEqual({ifb, 'hotplug-status': 'connected', 'xl-ts-created-ifb': '1'})

      const q = await PlugQdisc.open(ifb, {netns: host!.name})
      expect(await q.stats()).toMatchObject({backlogPackets: 0, dropped: 0})
      expect(await sh(host!, 'tc', '-s', 'qdisc', 'show', 'dev', ifb)).toMatch(/^qdisc plug [0-9a-f]+: root /m)
      expect(await qdiscs(host!, VIF)).toMatch(/^qdisc ingress ffff: parent ffff:fff1/m)
      const f = await filters(host!, VIF)
      expect(f).toMatch(/filter protocol ip pref 10 u32/)
      expect(f).toContain(`mirred (Egress Redirect to device ${ifb})`)
    })

    it('block() holds the guest\'s packets; releaseOne() lets out exactly the epoch before', async () => {
      expect(ifb).not.toBe('')
      const q = new PlugQdisc(ifb, {netns: host!.name})
      const got = await startReceiver(HOST_IP)
      const base = await q.stats()
      const held = async (n: number) =>
        waitFor(`${n} packets held on ${ifb}`, async () => (await q.stats()).backlogPackets === n)
      // What reaches the receiver next: exactly `expected`, and nothing more for QUIET_MS.
      let seen = 0
      const arrive = async (expected: string[]) => {
        await waitFor(`${expected.join(' ') || 'nothing'} at the receiver`, () => got.length >= seen + expected.length)
        await sleep(QUIET_MS)
        expect(got.slice(seen)).toEqual(expected)
        seen += expected.length
      }
      const expectStats = async (backlogPackets: number, sentSinceStart: number) => {
        const s = await q.stats()
        expect([s.backlogPackets, s.sentPackets - base.sentPackets, s.dropped]).toEqual([backlogPackets, sentSinceStart, 0])
      }

      // A new plug qdisc holds everything: epoch A.
      await send(HOST_IP, 'a1', 'a2', 'a3', 'a4', 'a5')
      await held(5)
      await arrive([])

      // Suspend: epoch B starts; A is the previous epoch now.
      await q.block()
      await send(HOST_IP, 'b1', 'b2', 'b3')
      await held(8)
      await arrive([])

      // Checkpoint committed: A goes out, B stays.
      await q.releaseOne()
      await arrive(['a1', 'a2', 'a3', 'a4', 'a5'])
      await expectStats(3, 5)

      // A release with no new epoch lets nothing more out.
      await q.releaseOne()
      await arrive([])

      // Next checkpoint: B goes out.
      await q.block()
      await q.releaseOne()
      await arrive(['b1', 'b2', 'b3'])
      await expectStats(0, 8)

      // Buffering off: packets pass at once; block() turns it on again.
      await q.releaseIndefinite()
      await send(HOST_IP, 'c1', 'c2')
      await arrive(['c1', 'c2'])
      await q.block()
      await send(HOST_IP, 'd1')
      await held(1)
      await arrive([])
      await q.block()
      await q.releaseOne()
      await arrive(['d1'])
      await expectStats(0, 11)
    })

    it('teardown removes the ifb, the qdiscs and the filter it made', async () => {
      expect(ifb).not.toBe('')
      const t = await netbuf('teardown', VIF, XENBUS, ifb)
      expect([t.exitCode, t.stderr]).toEqual([0, ''])
      expect(await ifbsIn(host!)).toEqual([])
      expect(await qdiscs(host!, VIF)).not.toMatch(/ingress/)
      expect(await filters(host!, VIF)).toBe('')
      expect(stateFiles()).toEqual([])
      await expect(PlugQdisc.open(ifb, {netns: host!.name})).rejects.toThrow(/^cannot read the qdisc on ifb\d+: /)
    })

    it('uses free ifbs that exist, one per vif when two set up at once; teardown leaves them as found', async () => {
      await addLink(VIF2, 'eth1', HOST_IP2, GUEST_IP2)
      // ifb0 is someone else's (it has a qdisc of its own); ifb1 and ifb2 are free.
      for (const n of ['ifb0', 'ifb1', 'ifb2']) await sh(host!, 'ip', 'link', 'add', n, 'type', 'ifb')
      await sh(host!, 'tc', 'qdisc', 'add', 'dev', 'ifb0', 'ingress')
      const [r1, r2] = await Promise.all([netbuf('setup', VIF, XENBUS), netbuf('setup', VIF2, XENBUS2)])
      expect([r1.exitCode, r1.stderr, r2.exitCode, r2.stderr]).toEqual([0, '', 0, ''])
      expect([r1.stdout, r2.stdout].sort()).toEqual(['ifb1', 'ifb2'])
      expect(keys(XENBUS)).toEqual({ifb: r1.stdout, 'hotplug-status': 'connected'})
      expect(await PlugQdisc.open(r2.stdout, {netns: host!.name})).toBeInstanceOf(PlugQdisc)

      // The second vif's traffic goes through its own ifb.
      const q2 = new PlugQdisc(r2.stdout, {netns: host!.name})
      const got = await startReceiver(HOST_IP2)
      await send(HOST_IP2, 'x1')
      await waitFor('x1 held', async () => (await q2.stats()).backlogPackets === 1)
      await q2.block()
      await q2.releaseOne()
      await waitFor('x1', () => got.length >= 1)
      expect(got).toEqual(['x1'])

      const [t1, t2] = await Promise.all([netbuf('teardown', VIF, XENBUS, r1.stdout), netbuf('teardown', VIF2, XENBUS2, r2.stdout)])
      expect([t1.exitCode, t1.stderr, t2.exitCode, t2.stderr]).toEqual([0, '', 0, ''])
      expect(await ifbsIn(host!)).toEqual(['ifb0', 'ifb1', 'ifb2'])
      expect(await qdiscs(host!, 'ifb0')).toMatch(/^qdisc ingress ffff:/m)
      for (const n of ['ifb1', 'ifb2']) {
        expect(await qdiscs(host!, n)).not.toMatch(/plug/)
        expect(await sh(host!, 'ip', '-o', 'link', 'show', 'dev', n)).not.toMatch(/[<,]UP[,>]/)
      }
      for (const v of [VIF, VIF2]) expect(await filters(host!, v)).toBe('')
      expect(stateFiles()).toEqual([])
    })
  })
})
