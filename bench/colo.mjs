#!/usr/bin/env node
/**
 * xl-ts COLO between two simulated hosts on this machine (`-s ''`: the secondary is
 * `XL_TS_ROOT=B xl-ts migrate-receive --colo`), the whole CLI as an operator runs it, its numbers
 * read from `--json` (NDJSON checkpoint events). Runs on the build: `npm run bench -- colo`.
 *
 *   (1) pause time per checkpoint vs |A u B|: a --mib guest dirtying each of --rates pages/s over
 *       --ws-mib MiB, a fresh guest per rate, run as a COLO pair (`remus -c -p --max-interval MS`, no
 *       comparator keys on the vif: only the timer asks for checkpoints) for --seconds. Per
 *       checkpoint from the 2nd: pausedMs (median, p95), |A| (primaryDirty), |B| (secondaryDirty)
 *       and |A u B| (pages; medians), the guest stall (from its step counter).
 *       Baseline in the same run: the time to push |A u B| x 4096 bytes through a FIFO from one
 *       process to another (two Node processes started once, kept for the whole run, like the save
 *       and restore helpers: the writer preads the pages, scattered over the working set as the dirty
 *       pages are, from the guest's memory file and writes them into the FIFO in batches of up to
 *       1024 pages; the reader reads them out in 1 MiB reads; time = the writer's first pread to the
 *       reader's last byte, CLOCK_MONOTONIC in both), median of --push-runs. Ratio pause / push per
 *       rate against the goal (<= 1.5x). For reference, `dd if=<memory file> bs=4k count=N | dd
 *       of=/dev/null bs=64k` wall time (with sh and both execs). The floor: the 17 messages a
 *       checkpoint's pause must wait for one after another, passed between six Node processes that
 *       do nothing else but the secondary's apply of the pages, after --max-interval asleep
 *       (lib/hop-chain.mjs), median of --push-runs: floor / push is what pause / push would be if the
 *       pages took no time to cross; where it is above the goal, xl's processes cannot meet it here.
 *       Lines pause = fixed + per-page and push = fixed + per-page through the rates' medians.
 *   (2) the same rates with Remus (`remus -i --max-interval`, network buffering on as by default),
 *       a fresh guest per rate: what COLO adds to a checkpoint over Remus's (same kind of line).
 *
 * Every session is stopped as an operator does (SIGINT: exit 0, the secondary/backup destroys its
 * copy) and checked: outcome "stopped", nothing left on the second host, the guest running on the
 * first; checkpoints asked for by anything but the timer are reported. Whatever goes wrong (or
 * Ctrl-C), the sessions are stopped, the guests destroyed, the push processes ended, leftover
 * processes of these hosts killed and reported, and the host folders removed.
 *
 * Options: --mib N (256) --seconds S (5) --rates a,b,.. (1000,4000,16000,64000) --ws-mib N (64)
 * --max-interval MS (100) --push-runs N (11) --only 1,2. One run: 60-95 s on 2 cores.
 */
import {spawnSync} from 'node:child_process'
import * as os from 'node:os'
import * as path from 'node:path'
import {parseArgs} from 'node:util'

import {runCheckpointSession} from './lib/checkpoint-sessions.mjs'
import {startHopChain, TIMED_MESSAGES} from './lib/hop-chain.mjs'
import {lineChild} from './lib/line-child.mjs'
import {shellQuote as q, sleep} from './lib/processes.mjs'
import {createSimHosts} from './lib/sim-hosts.mjs'
import {fmt, leastSquares as line, median, percentile as pct} from './lib/stats.mjs'
import {printTable as table} from './lib/table.mjs'

const {values: opt} = parseArgs({
  options: {
    mib: {type: 'string', default: '256'},
    seconds: {type: 'string', default: '5'},
    rates: {type: 'string', default: '1000,4000,16000,64000'},
    'ws-mib': {type: 'string', default: '64'},
    'max-interval': {type: 'string', default: '100'},
    'push-runs': {type: 'string', default: '11'},
    only: {type: 'string', default: '1,2'},
  },
  allowPositionals: true,
})
const MIB = Number(opt.mib)
const SECONDS = Number(opt.seconds)
const RATES = opt.rates.split(',').map(Number)
const WS_MIB = Math.min(Number(opt['ws-mib']), MIB)
const MAX_INTERVAL = Number(opt['max-interval'])
const PUSH_RUNS = Math.max(1, Number(opt['push-runs']))
const ONLY = new Set(opt.only.split(','))
const GOAL = 1.5
/** The sim guest's step rate floor (MIN_STEP_RATE in hypervisor/sim/context.ts). */
const MIN_STEP_RATE = 1000

// ---- hosts, guests, sessions, and their cleanup -----------------------------------------------------
const hosts = createSimHosts({label: 'colo bench', hostPrefix: 'xlts-bc', sessionWord: 'session', mib: MIB, wsMib: WS_MIB})
const {note, newHost, hv, createGuest, destroyGuest} = hosts
/** The push baseline's writer and reader and the hop chain's processes (SIGKILLed at clean-up). */
const pushers = hosts.killOnCleanup

/**
 * One session: start `xl-ts remus --json -c --max-interval MS` (or Remus `-i MS`), wait for its
 * first checkpoint, let it run `seconds`, stop it with SIGINT, check the outcome and both hosts.
 */
async function session(kind, primary, second, name, domid, seconds) {
  const colo = kind === 'colo'
  const what = `${colo ? 'remus -c --max-interval' : 'remus -i'} ${MAX_INTERVAL} on ${name}`
  const s = await runCheckpointSession(hosts, {
    primary,
    second,
    name,
    mode: colo ? ['-c', '-p', '--max-interval', String(MAX_INTERVAL)] : ['-i', String(MAX_INTERVAL)],
    receive: colo ? '--colo' : '-r',
    what,
    stepRate: Math.max(MIN_STEP_RATE, rateOf(name)),
    whileRunning: () => sleep(seconds * 1000),
  })
  if (s.left.domains.length) note(`${what}: the second host still has domain(s) ${s.left.domains.join(', ')} 5 s after the primary stopped`)
  for (const p of s.left.processes) note(`${what}: process [${p.pid}] of the second host still running 5 s after the primary stopped: ${p.cmd}`)
  const rt = await hv(primary)
    .runtime(domid)
    .catch((e) => ({error: e.message}))
  if (rt.error || rt.paused || rt.suspended) note(`${what}: the guest is not running at the primary after the stop: ${JSON.stringify(rt.error ?? {paused: rt.paused, suspended: rt.suspended})}`)

  const {steady} = s
  if (colo) {
    const other = steady.filter((e) => e.reason !== 'timer')
    if (other.length) note(`${what}: ${other.length} checkpoint(s) not by the timer: ${JSON.stringify(other.slice(0, 3))}`)
    const bad = steady.filter((e) => !(e.pages >= e.primaryDirty && e.pages >= e.secondaryDirty && e.pages <= e.primaryDirty + e.secondaryDirty))
    if (bad.length) note(`${what}: ${bad.length} checkpoint(s) where pages is not |A u B|: ${JSON.stringify(bad.slice(0, 3))}`)
  }
  return {
    checkpoints: s.checkpoints,
    steady,
    rate: s.rate,
    // The guest's own view: per checkpoint period, the time it did not run.
    stalls: s.stalls,
    firstMs: s.firstMs,
    stopMs: s.stopMs,
    result: s.result,
  }
}
const guestRates = new Map()
const rateOf = (name) => guestRates.get(name)

// ---- baseline: pushing N pages through a FIFO from one process to another -------------------------
/** The writer: on "FILE N SEED WSPAGES", preads N scattered pages of FILE and writes them into the FIFO. */
const WRITER = `
const fs = require('node:fs')
const fifo = fs.openSync(process.argv[1], 'w')
const rl = require('node:readline').createInterface({input: process.stdin})
const batch = Buffer.allocUnsafe(1024 * 4096)
const files = new Map()
rl.on('line', (text) => {
  const [file, n, seed, ws] = text.split(' ')
  const N = Number(n)
  const WS = Number(ws)
  if (!files.has(file)) files.set(file, fs.openSync(file, 'r'))
  const mem = files.get(file)
  // N distinct pfns in [0, WS), in ascending order, as a dirty bitmap gives them (not timed).
  let s = Number(seed) | 0
  const rnd = () => {
    // mulberry32
    s = (s + 0x6d2b79f5) | 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const set = new Set()
  while (set.size < Math.min(N, WS)) set.add(Math.floor(rnd() * WS))
  const pfns = Uint32Array.from(set).sort()
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < pfns.length; i += 1024) {
    const k = Math.min(1024, pfns.length - i)
    for (let j = 0; j < k; j++) fs.readSync(mem, batch, j * 4096, 4096, pfns[i + j] * 4096)
    let off = 0
    while (off < k * 4096) off += fs.writeSync(fifo, batch, off, k * 4096 - off)
  }
  process.stdout.write('w ' + t0 + '\\n')
})
`
/** The reader: on "BYTES", says "armed", then reads BYTES from the FIFO and says when it had the last. */
const READER = `
const fs = require('node:fs')
const fifo = fs.openSync(process.argv[1], 'r')
const rl = require('node:readline').createInterface({input: process.stdin})
const buf = Buffer.allocUnsafe(1 << 20)
rl.on('line', (text) => {
  const want = Number(text)
  process.stdout.write('armed\\n')
  let got = 0
  while (got < want) {
    const n = fs.readSync(fifo, buf, 0, Math.min(buf.length, want - got), null)
    if (n === 0) throw new Error('end of file after ' + got + ' bytes')
    got += n
  }
  process.stdout.write('r ' + process.hrtime.bigint() + '\\n')
})
`

let pair
/** The hop chain (the floor), while part (1) runs. */
let chain
function startPushPair() {
  const dir = newHost('fifo')
  const fifo = path.join(dir, 'pages')
  const r = spawnSync('mkfifo', ['-m', '0600', fifo], {encoding: 'utf8'})
  if (r.status !== 0) throw new Error(`mkfifo: ${r.stderr}`)
  pair = {writer: lineChild('push writer', WRITER, [fifo], pushers), reader: lineChild('push reader', READER, [fifo], pushers), seed: 1}
}
async function stopPushPair() {
  if (!pair) return
  await Promise.all([pair.writer.stop(), pair.reader.stop()])
  pair = undefined
}

/** ms from the writer's first pread to the reader's last byte, for `pages` pages of `memPath`. */
async function pushOnce(memPath, pages) {
  pair.reader.send(String(pages * 4096))
  if ((await pair.reader.next()) !== 'armed') throw new Error('push reader: not armed')
  pair.writer.send(`${memPath} ${pages} ${pair.seed++} ${WS_MIB * 256}`)
  const w = await pair.writer.next()
  const r = await pair.reader.next()
  if (!w.startsWith('w ') || !r.startsWith('r ')) throw new Error(`push: unexpected answers ${w} / ${r}`)
  return Number(BigInt(r.slice(2)) - BigInt(w.slice(2))) / 1e6
}
async function pushPages(memPath, pages) {
  for (let i = 0; i < 2; i++) await pushOnce(memPath, pages) // warm-up
  const ms = []
  for (let i = 0; i < PUSH_RUNS; i++) ms.push(await pushOnce(memPath, pages))
  return median(ms)
}
/** `dd bs=4k count=N | dd bs=64k` wall time, sh and execs included. */
function ddPipe(memPath, pages) {
  const walls = []
  for (let i = 0; i < PUSH_RUNS; i++) {
    const t = performance.now()
    const r = spawnSync('sh', ['-c', `dd if=${q(memPath)} bs=4k count=${pages} status=none | dd of=/dev/null bs=64k status=none`], {encoding: 'utf8'})
    walls.push(performance.now() - t)
    if (r.status !== 0) throw new Error(`dd: ${r.stderr}`)
  }
  return median(walls)
}

// ---- the runs -----------------------------------------------------------------------------------------
const began = performance.now()
const print = (s = '') => console.log(s)

const A = newHost('a')
const B = newHost('b')
const colo = []
const remus = []

try {
  console.error(`colo bench: guest ${MIB} MiB, working set ${WS_MIB} MiB, ${SECONDS} s per session; progress on stderr, tables on stdout`)
  if (ONLY.has('1')) {
    startPushPair()
    chain = startHopChain(newHost('hops'), pushers, WS_MIB * 256)
  }
  for (const kind of ['colo', 'remus']) {
    if (!ONLY.has(kind === 'colo' ? '1' : '2')) continue
    for (const rate of RATES) {
      const name = `${kind[0]}${rate}`
      guestRates.set(name, rate)
      const domid = await createGuest(A, name, rate)
      await sleep(300)
      const s = await session(kind, A, B, name, domid, SECONDS)
      const pages = Math.round(median(s.steady.map((c) => c.pages)))
      const row = {rate, s, pages, pauses: s.steady.map((c) => c.pausedMs)}
      console.error(
        `  ${kind} ${rate} pages/s: ${s.steady.length} checkpoints, ${fmt(s.rate)}/s, pages ${pages}, pause ${fmt(median(row.pauses))} ms; first checkpoint after ${fmt(s.firstMs, 0)} ms, stop took ${fmt(s.stopMs, 0)} ms`,
      )
      if (kind === 'colo') {
        // With the primary guest still running (as it did during the checkpoints).
        const memPath = hv(A).memoryPath(domid)
        row.push = await pushPages(memPath, Math.max(1, pages))
        row.dd = ddPipe(memPath, Math.max(1, pages))
        row.floor = median(await chain.run(PUSH_RUNS, MAX_INTERVAL, Math.max(1, pages)))
        console.error(`    push ${pages} pages: ${fmt(row.push, 2)} ms (FIFO, Node pair), dd|dd ${fmt(row.dd, 2)} ms wall; floor ${fmt(row.floor, 2)} ms`)
        colo.push(row)
      } else {
        remus.push(row)
      }
      await destroyGuest(A, name)
    }
  }
  await stopPushPair()
  await chain?.stop()
  chain = undefined

  // ---- tables -----------------------------------------------------------------------------------------
  const cpu = os.cpus()
  print(`guest ${MIB} MiB, dirty pages over a ${WS_MIB} MiB working set; ${SECONDS} s per session; node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model ?? '?'}), load average ${os.loadavg().map((x) => fmt(x)).join(' ')}`)
  if (colo.length) {
    print()
    print(`(1) COLO checkpoint pause vs |A u B|, remus -c --max-interval ${MAX_INTERVAL} (timer only), checkpoints 2..; push: |A u B| pages through a FIFO between two Node processes, median of ${PUSH_RUNS}`)
    print(`floor: the checkpoint's ${TIMED_MESSAGES} messages in a row between six Node processes doing nothing else but the secondary's apply of the pages, after ${MAX_INTERVAL} ms asleep (bench/lib/hop-chain.mjs), median of ${PUSH_RUNS}; floor/push: what pause/push would be if the pages took no time to cross, so where it is above the goal no implementation of xl's processes meets it here`)
    const rows = colo.map(({rate, s, pages, pauses, push, dd, floor}) => {
      const med = median(pauses)
      const ratio = med / push
      return [
        `${rate} pages/s`,
        s.steady.length,
        fmt(s.rate),
        median(s.steady.map((c) => c.primaryDirty)),
        median(s.steady.map((c) => c.secondaryDirty)),
        pages,
        fmt(med),
        fmt(pct(pauses, 95)),
        fmt(median(s.stalls)),
        fmt(push, 2),
        fmt(dd, 2),
        fmt(floor, 2),
        fmt(floor / push, 1),
        fmt(ratio, 1),
        ratio <= GOAL ? 'met' : 'not met',
      ]
    })
    table(['dirty rate', 'ckpts', 'ckpt/s', '|A|', '|B|', '|A u B|', 'pause med ms', 'p95 ms', 'guest stall ms', 'push ms', 'dd|dd wall ms', 'floor ms', 'floor/push', 'pause/push', `goal <= ${GOAL}x`], rows)
    if (colo.length > 1) {
      const p = line(colo.map((r) => [r.pages, median(r.pauses)]))
      const u = line(colo.map((r) => [r.pages, r.push]))
      print(`line through the medians: pause = ${fmt(p.fixed)} ms + ${fmt(p.perPage * 1000, 2)} ms per 1000 pages`)
      print(`                          push  = ${fmt(u.fixed, 2)} ms + ${fmt(u.perPage * 1000, 2)} ms per 1000 pages`)
    }
  }
  if (remus.length) {
    print()
    print(`(2) for comparison, Remus at the same rates: remus -i ${MAX_INTERVAL}, checkpoints 2..`)
    table(
      ['dirty rate', 'ckpts', 'ckpt/s', 'pages', 'pause med ms', 'p95 ms', 'guest stall ms'],
      remus.map(({rate, s, pages, pauses}) => [`${rate} pages/s`, s.steady.length, fmt(s.rate), pages, fmt(median(pauses)), fmt(pct(pauses, 95)), fmt(median(s.stalls))]),
    )
    if (remus.length > 1) {
      const p = line(remus.map((r) => [r.pages, median(r.pauses)]))
      print(`line through the medians: pause = ${fmt(p.fixed)} ms + ${fmt(p.perPage * 1000, 2)} ms per 1000 pages`)
    }
  }
  print()
  print(`total ${fmt((performance.now() - began) / 1000, 0)} s`)
} catch (e) {
  await sleep(100) // a Ctrl-C that killed a child we waited for synchronously: let its handler run first
  hosts.fail(e)
} finally {
  await hosts.finish(() => Promise.all([stopPushPair(), chain?.stop()]).catch(() => undefined))
}
