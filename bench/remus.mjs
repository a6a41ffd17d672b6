#!/usr/bin/env node
/**
 * xl-ts remus between two simulated hosts on this machine (`-s ''`: the backup is
 * `XL_TS_ROOT=B xl-ts migrate-receive -r`), the whole CLI as an operator runs it, its numbers read
 * from `--json` (NDJSON checkpoint events). Runs on the build: `npm run bench -- remus`.
 *
 *   (1) pause time vs dirty pages per checkpoint: a --mib guest dirtying each of --rates pages/s over
 *       --ws-mib MiB, protected at -i --interval for --seconds: median and p95 of each checkpoint's
 *       pause (suspend to resume), median pages per checkpoint, pause per 1000 pages; a least-squares
 *       line pause = fixed + per-page over every checkpoint. Baseline in the same run: `dd bs=4k
 *       count=PAGES` of the guest's memory file to /dev/null (dd's own copy time and the wall time
 *       with its exec), ratio ours / dd (wall).
 *   (2) throughput loss: the guest's steps/s (its progress counter) over --seconds without Remus and
 *       with Remus at each of --intervals (-i 25 is the Remus paper's 40 checkpoints/s), on one
 *       guest dirtying --tp-rate pages/s over --ws-mib MiB; ratio with / without, achieved
 *       checkpoints/s, the share of the window the guest spent paused. Median of --runs, the order
 *       reversed on every other run.
 *
 * Every Remus session is stopped as an operator does (SIGINT: stop after the next checkpoint, exit
 * 0, the backup discards its copy) and checked: outcome "stopped", nothing left on the backup host.
 * Whatever goes wrong (or Ctrl-C), the sessions are stopped, the guests destroyed, leftover
 * processes of these hosts killed and reported, and the host folders removed.
 *
 * Options: --mib N (256) --seconds S (5) --runs N (2: runs of (2)) --pause-runs N (1: sessions per
 * rate in (1), checkpoints pooled) --rates a,b,.. (1000,4000,16000,64000)
 * --ws-mib N (64) --interval MS (100) --intervals a,b,.. (25,100,200) --tp-rate N (16000)
 * --only 1,2
 */
import {spawn, spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'

import {SimHypervisor} from '../dist/toolstack/hypervisor/index.js'

const {values: opt} = parseArgs({
  options: {
    mib: {type: 'string', default: '256'},
    seconds: {type: 'string', default: '5'},
    runs: {type: 'string', default: '2'},
    'pause-runs': {type: 'string', default: '1'},
    rates: {type: 'string', default: '1000,4000,16000,64000'},
    'ws-mib': {type: 'string', default: '64'},
    interval: {type: 'string', default: '100'},
    intervals: {type: 'string', default: '25,100,200'},
    'tp-rate': {type: 'string', default: '16000'},
    only: {type: 'string', default: '1,2'},
  },
  allowPositionals: true,
})
const MIB = Number(opt.mib)
const SECONDS = Number(opt.seconds)
const RUNS = Math.max(1, Number(opt.runs))
const PAUSE_RUNS = Math.max(1, Number(opt['pause-runs']))
const RATES = opt.rates.split(',').map(Number)
const WS_MIB = Math.min(Number(opt['ws-mib']), MIB)
const INTERVAL = Number(opt.interval)
const INTERVALS = opt.intervals.split(',').map(Number)
const TP_RATE = Number(opt['tp-rate'])
const ONLY = new Set(opt.only.split(','))
const BIN = fileURLToPath(new URL('../bin/run.js', import.meta.url))
const NODE = process.execPath
const ENV = {...process.env, XL_TS_BACKEND: 'sim'}
/** The Remus paper's anchor: 40 checkpoints/s. */
const PAPER_INTERVAL = 25
/** Checkpoints after the first one (the end of the live round) count as steady state. */
const FIRST_STEADY = 2

const median = (xs) => {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const pct = (xs, p) => {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]
}
const q = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const sleepSync = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : String(n))
/** A process that has not exited (a zombie not yet reaped by us has). */
const alive = (pid) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat[stat.lastIndexOf(')') + 2] !== 'Z'
  } catch {
    return false
  }
}

/** What went wrong or was left behind, printed after the tables. */
const notes = []
const note = (text) => {
  notes.push(text)
  console.error(`remus bench: ${text}`)
}

// ---- hosts, guests, sessions, and their cleanup -----------------------------------------------------
const hosts = []
const hvs = new Map()
/** Remus processes that have not exited yet. */
const sessions = new Set()

function newHost(tag) {
  const h = fs.mkdtempSync(path.join(os.tmpdir(), `xlts-br-${tag}-`))
  hosts.push(h)
  return h
}
function hv(root) {
  if (!hvs.has(root)) hvs.set(root, new SimHypervisor(root))
  return hvs.get(root)
}
function domainIds(root) {
  const d = path.join(root, 'domains')
  return fs.existsSync(d) ? fs.readdirSync(d).filter((x) => /^\d+$/.test(x)) : []
}
function hostId(root) {
  try {
    return JSON.parse(fs.readFileSync(path.join(root, 'host.json'), 'utf8')).hostId
  } catch {
    return undefined
  }
}
/** Processes (not this one) whose command line or environment names one of `roots`. */
function processesOf(roots) {
  const found = []
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue
    let cmd = ''
    let env = ''
    try {
      cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'latin1')
      env = fs.readFileSync(`/proc/${e}/environ`, 'latin1')
    } catch {
      // gone, or not ours to read
    }
    if (roots.some((r) => cmd.includes(r) || env.includes(r))) found.push({pid: Number(e), cmd: cmd.split('\0').join(' ').trim()})
  }
  return found
}

function destroyAll(root) {
  for (const d of domainIds(root)) {
    const r = spawnSync(NODE, [BIN, '--root', root, 'destroy', d], {env: ENV, encoding: 'utf8', timeout: 15000})
    if (r.status !== 0 && fs.existsSync(path.join(root, 'domains', d))) note(`destroy ${d} on ${root}: exit ${r.status ?? r.signal}: ${r.stderr.trim()}`)
  }
}

/** Stops the Remus sessions still running as an operator does (SIGINT), waiting for them. */
async function stopSessions() {
  await Promise.all(
    [...sessions].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGINT')
      const t = setTimeout(() => {
        note(`remus [${child.pid}] still running 10 s after SIGINT: killed`)
        child.kill('SIGKILL')
      }, 10000)
      await exited
      clearTimeout(t)
    }),
  )
}

let cleaned = false
/** Synchronous, so that it also runs from 'exit' (sessions still running get SIGINT, then SIGKILL). */
function cleanup() {
  if (cleaned) return
  cleaned = true
  for (const child of sessions) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT')
  }
  for (const child of sessions) {
    const until = Date.now() + 10000
    while (alive(child.pid) && Date.now() < until) sleepSync(50)
    if (alive(child.pid)) {
      note(`remus [${child.pid}] still running 10 s after SIGINT: killed`)
      child.kill('SIGKILL')
    }
  }
  for (const h of hvs.values()) h.close()
  // Twice: a backup that took over after a killed primary builds its domain late.
  for (let pass = 0; pass < 2; pass++) {
    for (const h of hosts) destroyAll(h)
    const until = Date.now() + 5000
    while (processesOf(hosts).length && Date.now() < until) sleepSync(100)
  }
  for (const p of processesOf(hosts)) {
    note(`leftover process [${p.pid}] ${p.cmd}: killed`)
    try {
      process.kill(p.pid, 'SIGKILL')
    } catch {
      // gone
    }
  }
  for (const h of hosts) {
    const id = hostId(h)
    if (id) {
      for (const f of fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`xl-ts-${id}-`))) {
        note(`leftover memory file /dev/shm/${f}: removed`)
        fs.rmSync(path.join('/dev/shm', f), {force: true})
      }
    }
    fs.rmSync(h, {recursive: true, force: true})
  }
}
process.on('exit', cleanup)
let interrupted = false
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(s, async () => {
    if (interrupted) return
    interrupted = true
    console.error(`remus bench: ${s}: stopping the sessions and cleaning up`)
    await stopSessions()
    cleanup()
    process.exit(130)
  })
}

/** Creates a guest with `xl-ts create`; returns its domid. */
async function createGuest(root, name, dirtyPps) {
  if (interrupted) throw new Error('interrupted')
  const cfg = path.join(root, `${name}.cfg`)
  fs.writeFileSync(cfg, [`name = "${name}"`, 'type = "hvm"', `memory = ${MIB}`, 'vcpus = 1', `sim_dirty_rate = ${dirtyPps}`, `sim_working_set = ${WS_MIB}`, 'sim_seed = 1'].join('\n') + '\n')
  const r = spawnSync(NODE, [BIN, '--root', root, 'create', '-q', cfg], {env: ENV, encoding: 'utf8'})
  if (r.status !== 0) throw new Error(`create ${name}: ${r.stderr}`)
  return hv(root).resolve(name)
}

async function destroyGuest(root, name) {
  const r = spawnSync(NODE, [BIN, '--root', root, 'destroy', name], {env: ENV, encoding: 'utf8'})
  if (r.status !== 0) note(`destroy ${name}: ${r.stderr.trim()}`)
}

/** The guest's step counter and the droppedSteps counter, with the time they were read. */
async function stepAt(root, domid) {
  const rt = await hv(root).runtime(domid)
  return {step: rt.step, dropped: rt.droppedSteps, t: performance.now(), paused: rt.paused, suspended: rt.suspended}
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], {encoding: 'utf8'}).stdout) || 100
/** CPU ticks (user + system) of every process of these hosts, by pid, with its role. */
function cpuTicks(roots, guestRoot) {
  const m = new Map()
  for (const p of processesOf(roots)) {
    try {
      const stat = fs.readFileSync(`/proc/${p.pid}/stat`, 'latin1')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      const role = p.cmd.includes('domain-main') && p.cmd.includes(guestRoot) ? 'guest' : 'toolstack'
      m.set(p.pid, {role, ticks: Number(f[11]) + Number(f[12])})
    } catch {
      // gone
    }
  }
  return m
}

/**
 * Steps/s of the guest over `seconds` from now, and the CPU (% of one core) used meanwhile by the
 * guest's process and by everything else of the hosts `roots` (Remus CLI, helpers, the backup).
 */
async function throughput(root, domid, seconds, roots = [root]) {
  const c0 = cpuTicks(roots, root)
  const a = await stepAt(root, domid)
  await sleep(seconds * 1000)
  const b = await stepAt(root, domid)
  const c1 = cpuTicks(roots, root)
  const cpu = {guest: 0, toolstack: 0}
  for (const [pid, x] of c1) cpu[x.role] += x.ticks - (c0.get(pid)?.ticks ?? 0)
  const ms = b.t - a.t
  const share = (ticks) => (ticks / CLK_TCK / (ms / 1000)) * 100
  return {stepsPerS: ((b.step - a.step) * 1000) / ms, dropped: b.dropped - a.dropped, ms, guestCpu: share(cpu.guest), toolstackCpu: share(cpu.toolstack)}
}

/**
 * One Remus session: start `xl-ts remus --json -i MS`, wait for the first checkpoint, let it run
 * (measuring the guest's throughput over `seconds` from 300 ms after the first checkpoint), stop
 * it with SIGINT, check the outcome and the backup host.
 */
async function remusSession(primary, backup, name, domid, intervalMs, seconds, stepRate) {
  if (interrupted) throw new Error('interrupted')
  const rune = `XL_TS_ROOT=${q(backup)} exec ${q(NODE)} ${q(BIN)} migrate-receive -r`
  const args = [BIN, '--root', primary, 'remus', '--json', '-i', String(intervalMs), '-s', '', name, rune]
  const t0 = performance.now()
  const child = spawn(NODE, args, {env: ENV, stdio: ['ignore', 'pipe', 'pipe']})
  sessions.add(child)
  const events = []
  let err = ''
  let buf = ''
  let firstAt
  let onFirst
  const first = new Promise((resolve) => (onFirst = resolve))
  child.stdout.on('data', (d) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (!line.trim()) continue
      let e
      try {
        e = JSON.parse(line)
      } catch {
        note(`remus -i ${intervalMs}: not JSON on stdout: ${line}`)
        continue
      }
      events.push(e)
      if (e.event === 'checkpoint' && firstAt === undefined) {
        firstAt = performance.now()
        onFirst()
      }
    }
  })
  child.stderr.on('data', (d) => (err += d))
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({code, signal})))

  // Unref'd: a race this lost must not keep the bench alive.
  const timeout = (ms, what) => new Promise((r) => setTimeout(() => r({timeout: what}), ms).unref())
  const started = await Promise.race([first.then(() => ({})), exited.then((x) => ({exitedEarly: x})), timeout(60000, 'first checkpoint')])
  if (!started.exitedEarly && !started.timeout) {
    await sleep(300)
  }
  let tp
  if (!started.exitedEarly && !started.timeout) tp = await throughput(primary, domid, seconds, [primary, backup])
  const stopAt = performance.now()
  if (child.exitCode === null) child.kill('SIGINT')
  const end = await Promise.race([exited, timeout(20000, 'exit after SIGINT')])
  if (end.timeout) {
    note(`remus -i ${intervalMs} on ${name}: still running 20 s after SIGINT; killed. stderr:\n${err}`)
    child.kill('SIGKILL')
    await exited
  }
  sessions.delete(child)
  const stopMs = performance.now() - stopAt
  const result = events.find((e) => e.event === 'result')
  const what = `remus -i ${intervalMs} on ${name}`
  if (started.exitedEarly) throw new Error(`${what} exited before its first checkpoint (${JSON.stringify(started.exitedEarly)}):\n${err}`)
  if (started.timeout) throw new Error(`${what}: no checkpoint within 60 s:\n${err}`)
  if (!end.timeout && (end.code !== 0 || result?.outcome !== 'stopped')) {
    note(`${what}: exit ${end.code ?? end.signal}, result ${JSON.stringify(result)}; stderr:\n${err.trim()}`)
  }
  // The backup discards its copy and its receiver exits.
  const until = performance.now() + 5000
  while ((domainIds(backup).length || processesOf([backup]).length) && performance.now() < until) await sleep(100)
  if (domainIds(backup).length) note(`${what}: the backup host still has domain(s) ${domainIds(backup).join(', ')} 5 s after the primary stopped`)
  for (const p of processesOf([backup])) note(`${what}: backup process [${p.pid}] still running 5 s after the primary stopped: ${p.cmd}`)
  const info = await stepAt(primary, domid).catch((e) => ({error: e.message}))
  if (info.error || info.paused || info.suspended) note(`${what}: the guest is not running at the primary after the stop: ${JSON.stringify(info)}`)

  const cps = events.filter((e) => e.event === 'checkpoint')
  const steady = cps.filter((e) => e.number >= FIRST_STEADY)
  const span = steady.length > 1 ? steady.at(-1).atMs - steady[0].atMs : NaN
  return {
    events,
    checkpoints: cps,
    steady,
    acks: events.filter((e) => e.event === 'ack').length,
    rate: ((steady.length - 1) * 1000) / span,
    // Share of the time between the first and last steady suspend the guest spent suspended.
    pausedShare: steady.slice(0, -1).reduce((x, c) => x + c.pausedMs, 0) / span,
    // The guest's own view: per checkpoint period, the time it did not run (period minus the steps
    // it made over its step rate). Covers what pausedMs does not (the suspend request and device
    // model save before its clock starts, steps lost to a CPU-starved guest's reset backlog).
    stalls: steady.slice(1).map((c, i) => c.atMs - steady[i].atMs - ((c.step - steady[i].step) * 1000) / stepRate),
    firstMs: firstAt - t0,
    stopMs,
    tp,
    result,
  }
}

// ---- baseline: dd of N 4 KiB blocks from the guest's memory file ------------------------------------
function ddPages(memPath, pages, reps = 11) {
  const walls = []
  const copies = []
  for (let i = 0; i < reps; i++) {
    const t = performance.now()
    const r = spawnSync('dd', [`if=${memPath}`, 'of=/dev/null', 'bs=4096', `count=${pages}`], {encoding: 'utf8', env: {...process.env, LC_ALL: 'C'}})
    const wall = performance.now() - t
    if (r.status !== 0) throw new Error(`dd: ${r.stderr}`)
    const m = /copied, ([0-9.e+-]+) s/.exec(r.stderr)
    walls.push(wall)
    if (m) copies.push(Number(m[1]) * 1000)
  }
  return {wallMs: median(walls), copyMs: median(copies)}
}

// ---- the runs -----------------------------------------------------------------------------------------
const began = performance.now()
const out = []
const print = (s = '') => {
  out.push(s)
  console.log(s)
}
function table(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (r) => r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ').trimEnd()
  print(line(head))
  print(widths.map((w) => '-'.repeat(w)).join('  '))
  for (const r of rows) print(line(r))
}

const A = newHost('a')
const B = newHost('b')
const results1 = []
const results2 = []

try {
  console.error(`remus bench: guest ${MIB} MiB, working set ${WS_MIB} MiB, ${SECONDS} s windows; progress on stderr, tables on stdout`)

  if (ONLY.has('1')) {
    for (const rate of RATES) {
      const all = []
      const ses = []
      for (let run = 0; run < PAUSE_RUNS; run++) {
        const name = `p${rate}`
        const domid = await createGuest(A, name, rate)
        await sleep(300)
        const s = await remusSession(A, B, name, domid, INTERVAL, SECONDS, Math.max(1000, rate))
        const memPath = hv(A).memoryPath(domid)
        s.memPath = memPath
        ses.push(s)
        all.push(...s.steady)
        console.error(`  (1) ${rate} pages/s run ${run + 1}: ${s.steady.length} checkpoints, ${fmt(s.rate)}/s, pages ${median(s.steady.map((c) => c.pages))}, pause ${fmt(median(s.steady.map((c) => c.pausedMs)))} ms; first checkpoint after ${fmt(s.firstMs, 0)} ms, stop took ${fmt(s.stopMs, 0)} ms`)
        if (run === PAUSE_RUNS - 1) {
          const pages = Math.round(median(all.map((c) => c.pages)))
          const dd = ddPages(memPath, Math.max(1, pages))
          results1.push({rate, all, ses, pages, dd})
        }
        await destroyGuest(A, name)
      }
    }
  }

  if (ONLY.has('2')) {
    const name = 'tp'
    const domid = await createGuest(A, name, TP_RATE)
    await sleep(500)
    const kinds = [0, ...INTERVALS]
    const by = new Map(kinds.map((k) => [k, []]))
    for (let run = 0; run < RUNS; run++) {
      for (const k of run % 2 ? [...kinds].reverse() : kinds) {
        if (k === 0) {
          const tp = await throughput(A, domid, SECONDS, [A, B])
          by.get(0).push({tp})
          console.error(`  (2) run ${run + 1} no Remus: ${fmt(tp.stepsPerS, 0)} steps/s`)
        } else {
          const s = await remusSession(A, B, name, domid, k, SECONDS, Math.max(1000, TP_RATE))
          by.get(k).push(s)
          console.error(`  (2) run ${run + 1} -i ${k}: ${fmt(s.tp.stepsPerS, 0)} steps/s, ${fmt(s.rate)} checkpoints/s, pause ${fmt(median(s.steady.map((c) => c.pausedMs)))} ms, pages ${median(s.steady.map((c) => c.pages))}`)
          await sleep(300)
        }
      }
    }
    results2.push({by, kinds})
    await destroyGuest(A, name)
  }

  // ---- tables -----------------------------------------------------------------------------------------
  const cpu = os.cpus()
  print(`guest ${MIB} MiB, dirty pages over a ${WS_MIB} MiB working set; ${SECONDS} s per measurement; node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model ?? '?'})`)
  if (results1.length) {
    print()
    print(`(1) checkpoint pause vs dirty pages per checkpoint, -i ${INTERVAL}, ${PAUSE_RUNS} session(s) per rate (checkpoints 2..; dd: bs=4k count=pages of the memory file to /dev/null, median of 11)`)
    const rows = results1.map(({rate, all, ses, pages, dd}) => {
      const pauses = all.map((c) => c.pausedMs)
      const med = median(pauses)
      const rate_ = median(ses.map((s) => s.rate))
      return [
        `${rate} pages/s`,
        all.length,
        fmt(rate_),
        pages,
        fmt(med),
        fmt(pct(pauses, 95)),
        fmt(median(ses.flatMap((s) => s.stalls))),
        fmt((med / Math.max(1, pages)) * 1000),
        `${fmt(dd.copyMs, 2)} / ${fmt(dd.wallMs, 2)}`,
        fmt(med / dd.wallMs, 1),
      ]
    })
    table(['dirty rate', 'ckpts', 'ckpt/s', 'pages/ckpt', 'pause med ms', 'p95 ms', 'guest stall ms', 'ms per 1000 pages', 'dd ms (copy / wall)', 'ours/dd'], rows)
    // pause = fixed + perPage * pages, least squares through each rate's (median pages, median pause).
    const pts = results1.map((r) => [r.pages, median(r.all.map((c) => c.pausedMs))])
    if (pts.length > 1) {
      const n = pts.length
      const mx = pts.reduce((s, p) => s + p[0], 0) / n
      const my = pts.reduce((s, p) => s + p[1], 0) / n
      const sxy = pts.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0)
      const sxx = pts.reduce((s, p) => s + (p[0] - mx) ** 2, 0)
      const slope = sxy / sxx
      const fixed = my - slope * mx
      const big = results1.reduce((a, b) => (b.pages > a.pages ? b : a))
      const small = results1.reduce((a, b) => (b.pages < a.pages ? b : a))
      print(`line through the medians: pause = ${fmt(fixed)} ms + ${fmt(slope * 1000, 2)} ms per 1000 pages`)
      print(`dd: ${fmt((big.dd.copyMs / big.pages) * 1000, 2)} ms per 1000 pages (its own copy time, ${big.pages} pages); exec + copy of ${small.pages} pages ${fmt(small.dd.wallMs, 2)} ms wall`)
    }
  }
  if (results2.length) {
    const {by, kinds} = results2[0]
    const base = median(by.get(0).map((x) => x.tp.stepsPerS))
    print()
    print(`(2) guest throughput (steps/s over ${SECONDS} s; nominal ${Math.max(1000, TP_RATE)}) dirtying ${TP_RATE} pages/s, without and with Remus; medians of ${RUNS} run(s)`)
    const rows = kinds.map((k) => {
      const list = by.get(k)
      const sps = median(list.map((x) => x.tp.stepsPerS))
      const cpu = `${fmt(median(list.map((x) => x.tp.guestCpu)), 0)}% / ${fmt(median(list.map((x) => x.tp.toolstackCpu)), 0)}%`
      if (k === 0) return ['no Remus', fmt(sps, 0), '1.00', '', '', '', '', '', cpu]
      const pauses = list.flatMap((s) => s.steady.map((c) => c.pausedMs))
      const rate = median(list.map((s) => s.rate))
      return [
        `remus -i ${k}${k === PAPER_INTERVAL ? ' (paper: 40/s)' : ''}`,
        fmt(sps, 0),
        fmt(sps / base, 2),
        fmt(rate),
        median(list.flatMap((s) => s.steady.map((c) => c.pages))),
        fmt(median(pauses)),
        fmt(median(list.flatMap((s) => s.stalls))),
        `${fmt(median(list.map((x) => x.pausedShare)) * 100, 0)}%`,
        cpu,
      ]
    })
    table(['run', 'steps/s', 'with/without', 'ckpt/s', 'pages/ckpt', 'pause med ms', 'guest stall ms', 'paused share', 'CPU guest / Remus'], rows)
    const dropped = [...by.values()].flat().reduce((s, x) => s + x.tp.dropped, 0)
    if (dropped) print(`the guest dropped ${dropped} steps (more than 1 s behind) in these windows`)
  }
  print()
  print(`total ${fmt((performance.now() - began) / 1000, 0)} s`)
} catch (e) {
  if (!interrupted) {
    console.error(`remus bench: ${e.stack ?? e}`)
    process.exitCode = 1
  }
} finally {
  if (interrupted) await new Promise(() => {}) // the signal handler cleans up and exits
  await stopSessions()
  cleanup()
  if (notes.length) {
    console.log('\nnotes (problems seen while measuring):')
    for (const n of notes) console.log(`- ${n}`)
    if (!process.exitCode) process.exitCode = 1
  }
}
