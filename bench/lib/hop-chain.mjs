/**
 * The floor under a COLO checkpoint's pause in xl's process design: the messages on its critical
 * path passed between six Node processes that do nothing else but the secondary's apply, one round
 * per checkpoint interval.
 *
 * xl (and xl-ts) run a checkpoint across six processes: on each host the CLI (libxl's side), the
 * save or restore helper (libxc's side) and, on the simulated host, the domain process that answers
 * the hypervisor calls. Between the primary's suspend and its resume (and the secondary's
 * SVM_RESUMED read), the longest chain of messages that must follow one another is CHECKPOINT_PATH
 * below (the branches that run beside it, such as the primary's own suspend, the secondary's resume
 * or the pages themselves, are left out). Here each message is a few
 * bytes through a FIFO, read with a blocking read and passed on at once: no parsing, no work, the
 * cheapest way Node has to hand a message on. One piece of work stays, because no implementation can
 * skip it: the secondary buffers a checkpoint and writes its pages into guest memory only once the
 * checkpoint is complete (its copy must stay whole if the primary dies halfway), so the apply lies
 * between the last page and SVM_READY. The restore helper here `pwrite`s the round's pages, scattered
 * over the working set, into a memory file of its own in /dev/shm (unlinked as soon as it is open),
 * with the kernel copy module's `fileRuns` as ours does (one `fs.writeSync` a page without it).
 * A checkpoint of that many pages cannot take less than this chain does after the same idle
 * interval, whatever runs in the processes.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {spawnSync} from 'node:child_process'

import {KERNEL_COPY_MODULE} from '../../dist/toolstack/fd/index.js'
import {lineChild} from './line-child.mjs'

export const PROCESSES = ['primary CLI', 'primary save helper', 'primary domain', 'secondary CLI', 'secondary restore helper', 'secondary domain']
const [PC, PH, PD, SC, SH, SD] = PROCESSES.keys()

/**
 * [from, to, what, work]: the messages in order, from the primary's NEW to its resume answered.
 * `pause starts`: the primary's suspend callback reaches its CLI as the secondary reads NEW (both are
 * one message after the primary's CLI wrote NEW), so the time counts from the secondary passing NEW
 * on: 17 messages and the apply. `apply`: the sender applies the pages first.
 */
export const CHECKPOINT_PATH = [
  [PC, SC, 'CHECKPOINT_STATE NEW'],
  [SC, SH, 'answer to wait_checkpoint', 'pause starts'],
  [SH, SC, 'suspend callback'],
  [SC, SD, 'suspend the secondary'],
  [SD, SC, 'suspended'],
  [SC, SH, 'answer to suspend (SVM_SUSPENDED written)'],
  [SH, SD, 'log-dirty clean'],
  [SD, SH, 'the dirty bitmap'],
  [SH, PH, 'CHECKPOINT_DIRTY_PFN_LIST (back channel)'],
  [PH, PC, 'checkpoint callback (pages and CHECKPOINT sent)'],
  [PC, SC, 'EMULATOR_CONTEXT + CHECKPOINT_END'],
  [SC, SH, 'answer to checkpoint'],
  [SH, SD, 'vCPU context and HVM state'],
  [SD, SH, 'set'],
  [SH, SC, 'restore_results (checkpoint applied)', 'apply'],
  [SC, PC, 'SVM_READY'],
  [PC, PD, 'resume the primary'],
  [PD, PC, 'resumed'],
]
/** The messages timed: from the one the pause starts with. */
export const TIMED_MESSAGES = CHECKPOINT_PATH.length - CHECKPOINT_PATH.findIndex(([, , , work]) => work === 'pause starts')

/**
 * One process of the chain. A token is the round's page count (2 bytes), the time the pause started
 * (8) and the processes still to visit; the one that gets it passes the rest to the first of them,
 * and the last gets the header and END. A visit with APPLY set makes the sender apply the pages
 * first; with STAMP, the sender writes the time into the token. Process 0 (the primary CLI) also
 * runs the rounds: on "ROUNDS GAP_MS PAGES" it sleeps GAP_MS, sends a token down the path, waits for
 * END, and after ROUNDS rounds prints the times (ms from STAMP to END, space-separated).
 */
const HOP = `
const fs = require('node:fs')
const [dir, me, count, route, wsPages, copyModule] = process.argv.slice(1)
const fifo = []
for (let i = 0; i < Number(count); i++) fifo.push(fs.openSync(dir + '/hop' + i, 'r+'))
const END = 255
const APPLY = 128
const STAMP = 64
const HEADER = 10
let copy
try {
  copy = require(copyModule)
} catch {
  // not built: one write a page
}
/** The apply's memory file and, per page count, the pages and where they go (made once). */
let memory
const applies = new Map()
const apply = (pages) => {
  if (memory === undefined) {
    const file = '/dev/shm/xlts-hop-chain-' + process.pid
    memory = fs.openSync(file, 'w+')
    fs.unlinkSync(file)
    const zero = Buffer.alloc(1 << 20)
    for (let off = 0; off < Number(wsPages) * 4096; off += zero.length) fs.writeSync(memory, zero, 0, zero.length, off)
  }
  if (!applies.has(pages)) {
    const pfns = new Set()
    while (pfns.size < Math.min(pages, Number(wsPages))) pfns.add(Math.floor(Math.random() * Number(wsPages)))
    const runs = new Float64Array(pfns.size * 2)
    Uint32Array.from(pfns).sort().forEach((pfn, i) => ((runs[2 * i] = pfn * 4096), (runs[2 * i + 1] = 4096)))
    applies.set(pages, {runs, buf: Buffer.alloc(pfns.size * 4096, 0x5a)})
  }
  const {runs, buf} = applies.get(pages)
  if (copy) copy.fileRuns(memory, buf, runs, true)
  else for (let i = 0; i < runs.length / 2; i++) fs.writeSync(memory, buf, i * 4096, 4096, runs[2 * i])
}
const pass = (token) => {
  const to = token[HEADER]
  if (to & APPLY) apply(token.readUInt16LE(0))
  if (to & STAMP) token.writeBigInt64LE(process.hrtime.bigint(), 2)
  const rest = Buffer.concat([token.subarray(0, HEADER), token.length > HEADER + 1 ? token.subarray(HEADER + 1) : Buffer.from([END])])
  fs.writeSync(fifo[to & ~(APPLY | STAMP)], rest)
}
const buf = Buffer.alloc(256)
/** Reads tokens, passing them on, until END (process 0: returns the token) or for ever. */
const serve = () => {
  for (;;) {
    const n = fs.readSync(fifo[Number(me)], buf, 0, buf.length, null)
    if (n === HEADER + 1 && buf[HEADER] === END) return buf
    pass(buf.subarray(0, n))
  }
}
if (me !== '0') serve()
const nap = new Int32Array(new SharedArrayBuffer(4))
require('node:readline').createInterface({input: process.stdin}).on('line', (text) => {
  const [rounds, gap, pages] = text.split(' ').map(Number)
  const token = Buffer.concat([Buffer.alloc(HEADER), Buffer.from(route.split(',').map(Number))])
  token.writeUInt16LE(pages, 0)
  const ms = []
  for (let r = 0; r < rounds; r++) {
    Atomics.wait(nap, 0, 0, gap)
    pass(token)
    const end = serve()
    ms.push(Number(process.hrtime.bigint() - end.readBigInt64LE(2)) / 1e6)
  }
  process.stdout.write(ms.join(' ') + '\\n')
})
`

/**
 * Starts the six processes on FIFOs in `dir` (made there); `killSet` as for lineChild. The apply
 * scatters its pages over `wsPages` pages.
 */
export function startHopChain(dir, killSet, wsPages) {
  const flag = {apply: 0x80, 'pause starts': 0x40}
  const route = CHECKPOINT_PATH.map(([, to, , work]) => to | (flag[work] ?? 0)).join(',')
  for (const i of PROCESSES.keys()) {
    const r = spawnSync('mkfifo', ['-m', '0600', path.join(dir, `hop${i}`)], {encoding: 'utf8'})
    if (r.status !== 0) throw new Error(`mkfifo: ${r.stderr}`)
  }
  const args = (i) => [dir, String(i), String(PROCESSES.length), route, String(wsPages), KERNEL_COPY_MODULE]
  const procs = [...PROCESSES.keys()].map((i) => lineChild(`hop chain: ${PROCESSES[i]}`, HOP, args(i), killSet))
  return {
    /** ms per round: `rounds` rounds of a `pages`-page checkpoint, each after `gapMs` of all six asleep. */
    async run(rounds, gapMs, pages) {
      if (!(pages >= 1 && pages <= 0xffff)) throw new Error(`hop chain: ${pages} pages: 1 to 65535`)
      procs[0].send(`${rounds} ${gapMs} ${pages}`)
      const ms = (await procs[0].next(rounds * (gapMs + 1000))).split(' ').map(Number)
      if (ms.length !== rounds || ms.some((x) => !(x >= 0))) throw new Error(`hop chain: unexpected answer ${ms.join(' ')}`)
      return ms
    },
    async stop() {
      await Promise.all(procs.map((p) => p.stop()))
      for (const i of PROCESSES.keys()) fs.rmSync(path.join(dir, `hop${i}`), {force: true})
    },
  }
}
