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
import {spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import {parseArgs} from 'node:util'

import {runCheckpointSession} from './lib/checkpoint-sessions.mjs'
import {processesOf, sleep} from './lib/processes.mjs'
import {createSimHosts} from './lib/sim-hosts.mjs'
import {fmt, leastSquares, median, percentile as pct} from './lib/stats.mjs'
import {printTable} from './lib/table.mjs'

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
/** The Remus paper's anchor: 40 checkpoints/s. */
const PAPER_INTERVAL = 25

// ---- hosts, guests, sessions, and their cleanup -----------------------------------------------------
const hosts = createSimHosts({label: 'remus bench', hostPrefix: 'xlts-br', sessionWord: 'remus', mib: MIB, wsMib: WS_MIB})
const {note, newHost, hv, createGuest, destroyGuest} = hosts

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
  const what = `remus -i ${intervalMs} on ${name}`
  const s = await runCheckpointSession(hosts, {
    primary,
    second: backup,
    name,
    mode: ['-i', String(intervalMs)],
    receive: '-r',
    what,
    stepRate,
    onNotJson: (line) => note(`remus -i ${intervalMs}: not JSON on stdout: ${line}`),
    whileRunning: async () => {
      await sleep(300)
      return throughput(primary, domid, seconds, [primary, backup])
    },
  })
  if (s.left.domains.length) note(`${what}: the backup host still has domain(s) ${s.left.domains.join(', ')} 5 s after the primary stopped`)
  for (const p of s.left.processes) note(`${what}: backup process [${p.pid}] still running 5 s after the primary stopped: ${p.cmd}`)
  const info = await stepAt(primary, domid).catch((e) => ({error: e.message}))
  if (info.error || info.paused || info.suspended) note(`${what}: the guest is not running at the primary after the stop: ${JSON.stringify(info)}`)

  const {steady} = s
  return {
    events: s.events,
    checkpoints: s.checkpoints,
    steady,
    acks: s.events.filter((e) => e.event === 'ack').length,
    rate: s.rate,
    // Share of the time between the first and last steady suspend the guest spent suspended.
    pausedShare: steady.slice(0, -1).reduce((x, c) => x + c.pausedMs, 0) / s.span,
    // The guest's own view: per checkpoint period, the time it did not run (period minus the steps
    // it made over its step rate). Covers what pausedMs does not (the suspend request and device
    // model save before its clock starts, steps lost to a CPU-starved guest's reset backlog).
    stalls: s.stalls,
    firstMs: s.firstMs,
    stopMs: s.stopMs,
    tp: s.during,
    result: s.result,
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
const table = (head, rows) => printTable(head, rows, print)

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
      const {fixed, perPage: slope} = leastSquares(pts)
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
  hosts.fail(e)
} finally {
  await hosts.finish()
}
