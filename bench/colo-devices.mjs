#!/usr/bin/env node
/**
 * The QMP round trip of a COLO checkpoint's device commands: `xen-colo-do-checkpoint` and
 * `query-xen-replication-status` through our QmpClient (dist/toolstack/qmp) against a raw socket
 * exchange of the same bytes, on the same real QEMU (Debian's qemu-system-x86 7.2). Runs on the
 * build: `npm run bench -- colo-devices`.
 *
 * QEMU: the device model as the toolstack starts it (startDeviceModel, `-machine none`), with the
 * primary's COLO disk (a quorum drive over a raw image, XEN-FACTS §8.3) and no replication child:
 * then xen-colo-do-checkpoint is QEMU's replication_do_checkpoint_all() over no replication state
 * and returns {} (QEMU-REPLICATION.md), the least QEMU work there is, so the client's share shows
 * the most. Two extra QMP monitors (QEMU serves one client per monitor): one for our client, one for
 * the raw socket.
 *
 * ours: `await client.execute(cmd)`, one after the other (ids, timeout timer, framing, JSON parse,
 *       reply matching). raw: write the line `encodeQmpCommand(cmd, undefined, id)` makes (the same
 *       bytes ours sends) on a connected unix socket and wait for the bytes of the reply up to its
 *       `\n`, nothing parsed. Each run times --ops commands per path and command, the paths in
 *       alternating order; --warmup runs are dropped; medians of --runs. Goal: ours / raw <= 1.2.
 *
 * Options: --runs N (9), --warmup N (2), --ops N (500). One run takes a few seconds.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import {parseArgs} from 'node:util'

import {startDeviceModel} from '../dist/toolstack/device-model/index.js'
import {QmpClient, encodeQmpCommand} from '../dist/toolstack/qmp/index.js'
import {fmt, median, percentile as pct} from './lib/stats.mjs'
import {printTable as table} from './lib/table.mjs'

const {values: opt} = parseArgs({
  options: {
    runs: {type: 'string', default: '9'},
    warmup: {type: 'string', default: '2'},
    ops: {type: 'string', default: '500'},
  },
  allowPositionals: true,
})
const RUNS = Math.max(1, Number(opt.runs))
const WARMUP = Math.max(0, Number(opt.warmup))
const OPS = Math.max(1, Number(opt.ops))
const GOAL = 1.2
const COMMANDS = ['xen-colo-do-checkpoint', 'query-xen-replication-status']

/** A QMP connection that only moves bytes: write a line, wait for the reply's line. */
class RawQmp {
  #socket
  #buf = ''
  #wake
  #id = 0
  static async connect(socketPath) {
    const raw = new RawQmp()
    raw.#socket = await new Promise((resolve, reject) => {
      const s = net.createConnection({path: socketPath}, () => resolve(s))
      s.once('error', reject)
    })
    raw.#socket.setEncoding('latin1')
    raw.#socket.on('data', (d) => {
      raw.#buf += d
      if (raw.#wake && raw.#buf.includes('\n')) raw.#wake()
    })
    const greeting = await raw.#line()
    if (!greeting.includes('"QMP"')) throw new Error(`raw QMP: no greeting: ${greeting}`)
    const caps = await raw.exchange('qmp_capabilities')
    if (!caps.includes('"return"')) throw new Error(`raw QMP: qmp_capabilities: ${caps}`)
    return raw
  }
  /** The next line from QEMU (greeting, reply; this bench causes no events). */
  #line() {
    const take = () => {
      const nl = this.#buf.indexOf('\n')
      const line = this.#buf.slice(0, nl)
      this.#buf = this.#buf.slice(nl + 1)
      return line
    }
    if (this.#buf.includes('\n')) return Promise.resolve(take())
    return new Promise((resolve) => {
      this.#wake = () => {
        this.#wake = undefined
        resolve(take())
      }
    })
  }
  /** Sends the command's line, as our client writes it, and resolves with the reply line. */
  exchange(command) {
    this.#socket.write(encodeQmpCommand(command, undefined, ++this.#id))
    return this.#line()
  }
  close() {
    this.#socket.destroy()
  }
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-colo-devices-'))
let dm
let ours
let raw
async function cleanup() {
  raw?.close()
  await ours?.close().catch(() => {})
  await dm?.stop().catch(() => {})
  fs.rmSync(root, {recursive: true, force: true})
}
process.on('SIGINT', () => cleanup().finally(() => process.exit(130)))

try {
  fs.writeFileSync(path.join(root, 'primary.raw'), '')
  fs.truncateSync(path.join(root, 'primary.raw'), 16 << 20)
  const t0 = performance.now()
  dm = await startDeviceModel({
    folder: root,
    extraArgs: [
      '-drive', 'if=none,id=colo1,driver=quorum,read-pattern=fifo,vote-threshold=1,children.0.file.filename=primary.raw,children.0.driver=raw',
      '-qmp', 'unix:qmp-ours.sock,server=on,wait=off',
      '-qmp', 'unix:qmp-raw.sock,server=on,wait=off',
    ], // prettier-ignore
  })
  const startMs = performance.now() - t0
  ours = await QmpClient.connect(path.join(root, 'qmp-ours.sock'))
  raw = await RawQmp.connect(path.join(root, 'qmp-raw.sock'))
  // Both paths must see what the bench claims: {} and {"error": false}.
  for (const cmd of COMMANDS) {
    const a = JSON.stringify(await ours.execute(cmd))
    const b = JSON.parse(await raw.exchange(cmd)).return
    if (a !== JSON.stringify(b)) throw new Error(`${cmd}: ours ${a}, raw ${JSON.stringify(b)}`)
    console.log(`${cmd} -> ${a}`)
  }

  const paths = {
    ours: (cmd) => ours.execute(cmd),
    raw: (cmd) => raw.exchange(cmd),
  }
  /** Microseconds per command over OPS commands. */
  async function time(pathName, cmd) {
    const run = paths[pathName]
    const t = process.hrtime.bigint()
    for (let i = 0; i < OPS; i++) await run(cmd)
    return Number(process.hrtime.bigint() - t) / 1000 / OPS
  }
  const samples = Object.fromEntries(COMMANDS.map((c) => [c, {ours: [], raw: []}]))
  for (let r = 0; r < WARMUP + RUNS; r++) {
    for (const cmd of COMMANDS) {
      const order = r % 2 ? ['raw', 'ours'] : ['ours', 'raw']
      for (const p of order) {
        const us = await time(p, cmd)
        if (r >= WARMUP) samples[cmd][p].push(us)
      }
    }
  }

  console.log(
    `\nQEMU ${ours.version} (-machine none, quorum drive, no replication child; up in ${startMs.toFixed(0)} ms); node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()})`,
  )
  console.log(`${OPS} commands per path and run, one at a time; median of ${RUNS} runs (${WARMUP} warm-up dropped), paths alternating\n`)
  const rows = []
  const ratios = []
  for (const cmd of COMMANDS) {
    const s = samples[cmd]
    const ratio = median(s.ours) / median(s.raw)
    // The ratio within each run, for how much it moves.
    const perRun = s.ours.map((o, i) => o / s.raw[i])
    ratios.push(ratio)
    rows.push([`${cmd}, raw socket`, fmt(median(s.raw), 1), fmt(pct(s.raw, 10), 1), fmt(pct(s.raw, 90), 1), '1.00', ''])
    rows.push([`${cmd}, QmpClient`, fmt(median(s.ours), 1), fmt(pct(s.ours, 10), 1), fmt(pct(s.ours, 90), 1), fmt(ratio, 2), `${fmt(Math.min(...perRun), 2)}-${fmt(Math.max(...perRun), 2)}`])
  }
  table(['path', 'us/command (median)', 'p10', 'p90', 'ours/raw', 'per run'], rows)
  const worst = Math.max(...ratios)
  console.log(`goal: QmpClient / raw socket <= ${GOAL} -> ${worst <= GOAL ? 'met' : 'NOT met'} (${fmt(worst, 2)})`)
  await cleanup()
} catch (err) {
  console.error(`colo-devices bench failed: ${err?.stack ?? err}`)
  await cleanup()
  process.exit(1)
}
