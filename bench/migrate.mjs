#!/usr/bin/env node
/**
 * xl-ts migrate between two simulated hosts on this machine (`-s ''`: the receiver is
 * `XL_TS_ROOT=B xl-ts migrate-receive`), the whole CLI as an operator runs it. Runs on the build:
 * `npm run bench -- migrate`.
 *
 *   (a) throughput: an idle guest (--mib, default 1 GiB) migrated back and forth; its stream bytes
 *       over the time they took, against `dd bs=64k | dd bs=64k` of the same number of bytes from
 *       the guest's memory file through a pipe into a fresh tmpfs file, in the same run. Two
 *       ratios: the stream phase (first page to the receiver's `ready`) and the whole command
 *       (Node and oclif start-up of both ends, the domain built, the handshake). Goal >= 0.9 on
 *       the stream phase.
 *   (b) downtime: a guest of --mib dirtying --dirty-mib MiB/s over --ws-mib MiB, migrated with
 *       xl's policy (5 rounds / 50 pages) and with --max-downtime 50, alternately, over a link of
 *       --link MiB/s (--bandwidth; 0 = as fast as it goes). Downtime = from the suspend to the
 *       target's report (the guest runs nowhere); paused pages = pages sent while suspended.
 *       Goal: --max-downtime 50 at most 0.5x xl's.
 *   (c) peak RSS (VmHWM) of the sender CLI, its save helper, the receiver CLI and its restore
 *       helper over all runs. Goal <= 100 MiB each.
 *
 * Options: --mib N (1024) --runs N (3, part b) --a-runs N (7, part a: a migration of the idle guest
 * takes about a second, and its median needs more runs on a shared machine) --dirty-mib N (64) --ws-mib N (256) --link N (119: a
 * 1 Gbit/s link; 0: no cap) --only a,b
 */
import {spawn, spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

import {entryPointFiles} from '../dist/toolstack/entry-points.js'
import {SimHypervisor} from '../dist/toolstack/backends/index.js'
import {resolveDomain} from '../dist/toolstack/libxl/index.js'
import {kernelCopyUnavailable} from '../dist/toolstack/fd/index.js'

const {values: opt} = parseArgs({
  options: {
    mib: {type: 'string', default: '1024'},
    runs: {type: 'string', default: '3'},
    'a-runs': {type: 'string', default: '7'},
    'dirty-mib': {type: 'string', default: '64'},
    'ws-mib': {type: 'string', default: '256'},
    link: {type: 'string', default: '119'},
    only: {type: 'string', default: 'a,b'},
  },
  allowPositionals: true,
})
const MIB = Number(opt.mib)
const RUNS = Number(opt.runs)
const A_RUNS = Number(opt['a-runs'])
const DIRTY_MIB = Number(opt['dirty-mib'])
const WS_MIB = Number(opt['ws-mib'])
const LINK = Number(opt.link)
const ONLY = new Set(opt.only.split(','))
const BIN = fileURLToPath(new URL('../bin/run.js', import.meta.url))
const NODE = process.execPath
/** Our save helper's program, bundled or not. */
const HELPER_FILES = Object.values(entryPointFiles('save-helper'))
const MiB = 1024 * 1024

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const q = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// ---- peak RSS of the migration's processes, sampled from /proc ---------------------------------
const peak = {'sender CLI': 0, 'save helper': 0, 'receiver CLI': 0, 'restore helper': 0}
function roleOf(pid) {
  let cmd
  try {
    cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')
  } catch {
    return undefined
  }
  if (!cmd.some((a) => a === BIN || HELPER_FILES.includes(a))) return undefined
  if (cmd.includes('--save-domain')) return 'save helper'
  if (cmd.includes('--restore-domain')) return 'restore helper'
  if (cmd.includes('migrate-receive')) return 'receiver CLI'
  if (cmd.includes('migrate')) return 'sender CLI'
  return undefined
}
function sampleRss() {
  for (const e of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(e)) continue
    const role = roleOf(e)
    if (!role) continue
    try {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${e}/status`, 'latin1'))
      if (m) peak[role] = Math.max(peak[role], Number(m[1]) * 1024)
    } catch {
      // gone
    }
  }
}

// ---- hosts and guests ---------------------------------------------------------------------------
const hosts = []
function newHost(tag) {
  const h = fs.mkdtempSync(path.join(os.tmpdir(), `xlts-bm-${tag}-`))
  hosts.push(h)
  return h
}
function cleanup() {
  for (const h of hosts) {
    const hv = new SimHypervisor(h)
    for (const d of fs.existsSync(path.join(h, 'domains')) ? fs.readdirSync(path.join(h, 'domains')) : []) {
      spawnSync(NODE, [BIN, '--root', h, 'destroy', d], {env: {...process.env, XL_TS_BACKEND: 'sim'}})
    }
    hv.close()
    fs.rmSync(h, {recursive: true, force: true})
  }
}
process.on('exit', cleanup)
process.on('SIGINT', () => process.exit(130))

function createGuest(root, name, dirtyPps, wsMiB) {
  const cfg = path.join(root, `${name}.cfg`)
  fs.writeFileSync(cfg, [`name = "${name}"`, 'type = "hvm"', `memory = ${MIB}`, 'vcpus = 1', `sim_dirty_rate = ${dirtyPps}`, `sim_working_set = ${wsMiB}`, 'sim_seed = 1'].join('\n') + '\n')
  const r = spawnSync(NODE, [BIN, '--root', root, 'create', '-q', cfg], {env: {...process.env, XL_TS_BACKEND: 'sim'}, encoding: 'utf8'})
  if (r.status !== 0) throw new Error(`create: ${r.stderr}`)
}

/** One migration through the CLI; resolves the NDJSON events and the wall time. */
function migrateOnce(from, to, name, extra = []) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(NODE, [BIN, '--root', from, 'migrate', '--json', ...extra, '-s', '', name, `XL_TS_ROOT=${q(to)} exec ${q(NODE)} ${q(BIN)} migrate-receive`], {
      env: {...process.env, XL_TS_BACKEND: 'sim'},
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setInterval(sampleRss, 25)
    child.on('exit', (code) => {
      clearInterval(timer)
      const wallMs = performance.now() - t0
      if (code !== 0) return reject(new Error(`migrate exited ${code}:\n${err}`))
      const events = out.trim().split('\n').map((l) => JSON.parse(l))
      resolve({events, wallMs})
    })
  })
}

function phaseAt(events, phase) {
  return events.find((e) => e.event === 'phase' && e.phase === phase)?.tMs
}

function memFile(root, name) {
  const hv = new SimHypervisor(root)
  return resolveDomain(hv, name)
    .then((domid) => hv.memoryPath(domid))
    .finally(() => hv.close())
}

/** dd | dd of `bytes` from `src` into a fresh tmpfs file: ms. */
function ddPipe(src, bytes) {
  const dst = path.join('/dev/shm', `xlts-bench-dd-${process.pid}`)
  fs.rmSync(dst, {force: true})
  const count = Math.ceil(bytes / 65536)
  const t0 = performance.now()
  const r = spawnSync('sh', ['-c', `dd if=${q(src)} bs=64k count=${count} status=none | dd of=${q(dst)} bs=64k status=none`])
  const ms = performance.now() - t0
  fs.rmSync(dst, {force: true})
  if (r.status !== 0) throw new Error(`dd: ${r.stderr}`)
  return ms
}

const rows = []
const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : String(n))

// ---- (a) throughput -----------------------------------------------------------------------------
if (ONLY.has('a')) {
  const a = newHost('a')
  const b = newHost('b')
  createGuest(a, 'idle', 0, MIB)
  await sleep(200)
  let [from, to] = [a, b]
  const ours = []
  const whole = []
  const dds = []
  for (let i = 0; i < A_RUNS + 1; i++) {
    const {events, wallMs} = await migrateOnce(from, to, 'idle')
    const result = events.at(-1)
    const streamMs = phaseAt(events, 'ready') - phaseAt(events, 'header')
    ;[from, to] = [to, from]
    const ddMs = ddPipe(await memFile(from, 'idle'), result.bytes)
    if (i === 0) continue // warm-up: tmpfs grows, caches fill
    const first = events.find((e) => e.event === 'iteration' && e.iteration === 1)
    ours.push({streamMs, wallMs, bytes: result.bytes, iterations: result.iterations, round1: first ? {ms: first.ms, bytes: first.pages * 4096} : undefined})
    dds.push(ddMs)
    whole.push(wallMs)
  }
  const bytes = ours[0].bytes
  const mbps = (ms) => bytes / 1e6 / (ms / 1000)
  const stream = median(ours.map((o) => o.streamMs))
  const dd = median(dds)
  const wall = median(whole)
  rows.push(['(a) idle guest, stream phase (header to ready)', `${fmt(mbps(stream), 0)} MB/s`, `dd|dd ${fmt(mbps(dd), 0)} MB/s`, fmt(dd / stream, 2), '>= 0.9'])
  const rounds = ours.filter((o) => o.round1)
  if (rounds.length) {
    // The pages alone: precopy round 1 as the save helper timed it (all of memory, the guest idle),
    // against dd|dd of the same number of bytes. The stream phase adds the receiver's domain build
    // and both helpers' start (about 0.2 s here) and the last round.
    const r1 = median(rounds.map((o) => o.round1.ms))
    const r1Bytes = rounds[0].round1.bytes
    const ddR1 = dd * (r1Bytes / bytes)
    rows.push(['(a) idle guest, round 1 (pages only)', `${fmt(r1Bytes / 1e6 / (r1 / 1000), 0)} MB/s`, `dd|dd ${fmt(mbps(dd), 0)} MB/s`, fmt(ddR1 / r1, 2), '(info)'])
    // What the stream phase costs besides round 1: the process starts before the first page,
    // the last round, the helpers' exits (median of the per-run differences).
    const fixed = median(rounds.map((o) => o.streamMs - o.round1.ms))
    rows.push(['(a) idle guest, stream phase minus round 1', `${fmt(fixed, 0)} ms`, '', '', '(info)'])
  }
  rows.push(['(a) idle guest, whole command (start to exit)', `${fmt(mbps(wall), 0)} MB/s`, `dd|dd ${fmt(mbps(dd), 0)} MB/s`, fmt(dd / wall, 2), '(info)'])
}

// ---- (b) downtime -------------------------------------------------------------------------------
if (ONLY.has('b')) {
  const a = newHost('da')
  const b = newHost('db')
  const pps = Math.round((DIRTY_MIB * MiB) / 4096)
  createGuest(a, 'busy', pps, WS_MIB)
  await sleep(500)
  let [from, to] = [a, b]
  const link = LINK > 0 ? ['--bandwidth', String(LINK)] : []
  const xl = []
  const md = []
  for (let i = 0; i < RUNS; i++) {
    for (const [list, extra] of i % 2 ? [[md, ['--max-downtime', '50']], [xl, []]] : [[xl, []], [md, ['--max-downtime', '50']]]) {
      const {events} = await migrateOnce(from, to, 'busy', [...link, ...extra])
      const r = events.at(-1)
      list.push({downtime: r.downtimeMs, paused: r.pausedPages, iterations: r.iterations, total: r.totalMs})
      ;[from, to] = [to, from]
      await sleep(300)
    }
  }
  const m = (list, k) => median(list.map((x) => x[k]))
  const linkText = LINK > 0 ? `${LINK} MiB/s link` : 'no link cap'
  rows.push([
    `(b) downtime, ${DIRTY_MIB} MiB/s dirty over ${WS_MIB} MiB, ${linkText}`,
    `${fmt(m(md, 'downtime'))} ms (${m(md, 'iterations')} rounds)`,
    `xl ${fmt(m(xl, 'downtime'))} ms (${m(xl, 'iterations')} rounds)`,
    fmt(m(md, 'downtime') / m(xl, 'downtime'), 2),
    '<= 0.5',
  ])
  rows.push([
    '(b) pages sent while paused',
    `${m(md, 'paused')}`,
    `xl ${m(xl, 'paused')}`,
    fmt(m(md, 'paused') / m(xl, 'paused'), 2),
    '<= 0.5',
  ])
  rows.push(['(b) total time', `${fmt(m(md, 'total') / 1000, 2)} s`, `xl ${fmt(m(xl, 'total') / 1000, 2)} s`, fmt(m(md, 'total') / m(xl, 'total'), 2), '(info)'])
}

// ---- (c) peak RSS ---------------------------------------------------------------------------------
for (const [role, bytes] of Object.entries(peak)) {
  if (bytes > 0) rows.push([`(c) peak RSS, ${role}`, `${fmt(bytes / MiB)} MiB`, '', '', '<= 100 MiB'])
}

const head = ['measure', 'xl-ts', 'baseline', 'ratio', 'goal']
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
const line = (r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd()
console.log(`guest ${MIB} MiB, ${A_RUNS} runs for (a), ${RUNS} for (b) (medians), node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`)
console.log(`page data: ${kernelCopyUnavailable() ? `copied in user space (${kernelCopyUnavailable()})` : 'moved fd to fd in the kernel (splice)'}`)
console.log(line(head))
for (const r of rows) console.log(line(r))
