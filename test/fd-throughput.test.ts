/**
 * Measures, in one run, what the fd layer moves through a pipe against `cat`, and what a 4 MiB
 * record costs the helper's source. Prints a table; asserts only that every byte arrived and that
 * the pooled source allocated one record's memory (timings on these shared 2-core machines vary too
 * much run to run to assert on; compare the lines of one run).
 *
 * Pipelines (a FIFO between two processes; XL_TS_FD_BENCH_MIB MiB each, default 512):
 *   cat | cat                       baseline: cat writes 128 KiB at a time
 *   dd bs=16k | cat                 baseline: 16 KiB writes
 *   writeAllSync | cat              PAGE_DATA-shaped iovecs (16 B header, 8 KiB pfns, 1024 page views)
 *   writeAllSync(64 KiB) | cat      the same in 64 KiB calls (why 16 KiB is the default)
 *   writeAllSync | readExactSync    into one reused buffer
 *   writeAllSync | <helper source>  SyncFdSource with release, without release, readExactSync into a
 *                                   fresh Buffer per record, FdByteSource (async, fresh Buffer)
 * A node side times itself from its first to its last byte (its start-up excluded); pipelines of two
 * cats are timed from outside.
 *
 * Per-record cost: the same sources reading 4 MiB records from a file in /dev/shm (no pipe, no
 * partner: only the source's own work), median microseconds per record.
 */
import {spawn} from 'node:child_process'
import {randomFillSync} from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {ensureBuilt} from './support/build.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const DIST_FD = path.join(ROOT, 'dist/toolstack/fd/index.js')
const TOTAL_MIB = Number(process.env.XL_TS_FD_BENCH_MIB ?? 512)
const GUEST_MIB = 64
const RECORD = 16 + 8 * 1024 + 4096 * 1024


/** Writes TOTAL bytes of PAGE_DATA-shaped records (from a guest file) into a FIFO. */
const WRITER = (dist: string) => `
import * as fs from 'node:fs'
import {writeAllSync} from ${JSON.stringify(dist)}
const [fifo, guestFile, total, chunk] = [process.argv[2], process.argv[3], Number(process.argv[4]), Number(process.argv[5])]
const guest = fs.readFileSync(guestFile)
const hdr = Buffer.alloc(16), pfns = Buffer.alloc(8192)
const fd = fs.openSync(fifo, 'w')
let sent = 0, off = 0
const t0 = performance.now()
while (sent < total) {
  const parts = [hdr, pfns]
  for (let i = 0; i < 1024; i++) { parts.push(guest.subarray(off, off + 4096)); off = (off + 4096) % guest.length }
  sent += writeAllSync(fd, parts, {chunkSize: chunk})
}
const ms = performance.now() - t0
fs.closeSync(fd)
console.log(JSON.stringify({bytes: sent, ms}))
`

/** Reads a FIFO or file to EOF in RECORD-sized reads with one of the sources. */
const READER = (dist: string) => `
import * as fs from 'node:fs'
import {readExactSync, SyncFdSource, FdByteSource} from ${JSON.stringify(dist)}
const [file, mode, maxRecords] = [process.argv[2], process.argv[3], Number(process.argv[4] || Infinity)]
const REC = ${RECORD}
const fd = fs.openSync(file, 'r')
const into = Buffer.allocUnsafe(REC)
const src = new SyncFdSource(fd)
const asrc = new FdByteSource(fd)
let bytes = 0, t0 = 0, records = 0, x = 0
const per = []
for (;;) {
  const a = performance.now()
  let b
  if (mode === 'reuse') b = readExactSync(fd, REC, {into})
  else if (mode === 'fresh') b = readExactSync(fd, REC)
  else if (mode === 'pool' || mode === 'pool-norelease') b = src.readSync(REC)
  else b = await asrc.read(REC)
  if (t0 === 0) t0 = a
  // What a consumer does at least: look at each page.
  for (let i = 8208; i < b.length; i += 4096) x ^= b[i]
  if (mode === 'pool') src.release(b)
  per.push(performance.now() - a)
  bytes += b.length
  records++
  if (b.length < REC || records >= maxRecords) break
}
const ms = performance.now() - t0
per.sort((p, q) => p - q)
console.log(JSON.stringify({bytes, ms, records, medianUs: per[per.length >> 1] * 1000, allocated: src.stats.allocated, x}))
`

interface Side {
  bytes: number
  ms: number
  records?: number
  medianUs?: number
  allocated?: number
}

let dir: string
let guestFile: string
let writerJs: string
let readerJs: string
let fifoN = 0
const rows: string[] = []

beforeAll(async () => {
  await ensureBuilt()
  dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'xl-ts-fd-bench-'))
  guestFile = path.join(dir, 'guest')
  const guest = Buffer.allocUnsafe(GUEST_MIB * 1024 * 1024)
  randomFillSync(guest)
  fs.writeFileSync(guestFile, guest)
  writerJs = path.join(dir, 'writer.mjs')
  readerJs = path.join(dir, 'reader.mjs')
  const dist = pathToFileURL(DIST_FD).href
  fs.writeFileSync(writerJs, WRITER(dist))
  fs.writeFileSync(readerJs, READER(dist))
}, 120_000)

afterAll(() => {
  if (rows.length) {
    console.log(
      [`fd layer throughput (${TOTAL_MIB} MiB per pipeline, MB/s = 10^6 bytes/s; node ${process.version}, ${os.cpus()[0]?.model ?? '?'})`, ...rows].join(
        '\n',
      ),
    )
  }
  fs.rmSync(dir, {recursive: true, force: true})
})

function run(cmd: string, args: string[], stdout: 'pipe' | 'ignore' = 'pipe'): Promise<{out: string; code: number | null}> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, {stdio: ['ignore', stdout, 'inherit']})
    let out = ''
    c.stdout?.on('data', (d: Buffer) => (out += d.toString()))
    c.once('error', reject).once('close', (code) => resolve({out, code}))
  })
}

async function makeFifo(): Promise<string> {
  const p = path.join(dir, `fifo-${fifoN++}`)
  const r = await run('mkfifo', [p])
  if (r.code !== 0) throw new Error('mkfifo failed')
  return p
}

const total = TOTAL_MIB * 1024 * 1024
/** cat of the guest file, repeated up to `total` bytes. */
const catWriter = (target: string, tool: 'cat' | 'dd') => {
  const times = Math.ceil(TOTAL_MIB / GUEST_MIB)
  const one = tool === 'cat' ? `cat '${guestFile}'` : `dd if='${guestFile}' bs=16k status=none`
  return `for i in $(seq ${times}); do ${one}; done > '${target}'`
}

function mbps(bytes: number, ms: number): number {
  return bytes / ms / 1000
}

function row(name: string, bytes: number, ms: number, extra = ''): void {
  rows.push(`  ${name.padEnd(44)} ${mbps(bytes, ms).toFixed(0).padStart(6)} MB/s ${extra}`)
}

describe('pipe throughput (a FIFO between two processes)', () => {
  it('cat | cat and dd bs=16k | cat (baselines, timed from outside)', async () => {
    for (const tool of ['cat', 'dd'] as const) {
      const f = await makeFifo()
      const t0 = performance.now()
      const [w, r] = await Promise.all([run('sh', ['-c', catWriter(f, tool)]), run('sh', ['-c', `cat '${f}' | wc -c`])])
      const ms = performance.now() - t0
      expect(w.code).toBe(0)
      const bytes = Number(r.out.trim())
      expect(bytes).toBe(Math.ceil(TOTAL_MIB / GUEST_MIB) * GUEST_MIB * 1024 * 1024)
      row(tool === 'cat' ? 'cat | cat' : 'dd bs=16k | cat', bytes, ms)
    }
  })

  it.each([16384, 65536])('writeAllSync (chunk %i) | cat', async (chunk) => {
    const f = await makeFifo()
    const [w, r] = await Promise.all([run(process.execPath, [writerJs, f, guestFile, String(total), String(chunk)]), run('sh', ['-c', `cat '${f}' | wc -c`])])
    const side = JSON.parse(w.out) as Side
    expect(Number(r.out.trim())).toBe(side.bytes)
    row(`writeAllSync (${chunk / 1024} KiB calls) | cat`, side.bytes, side.ms)
  })

  it.each(['reuse', 'pool', 'pool-norelease', 'fresh', 'async'])('writeAllSync | reader %s', async (mode) => {
    const f = await makeFifo()
    const [w, r] = await Promise.all([run(process.execPath, [writerJs, f, guestFile, String(total), '16384']), run(process.execPath, [readerJs, f, mode])])
    const ws = JSON.parse(w.out) as Side
    const rs = JSON.parse(r.out) as Side
    expect(rs.bytes).toBe(ws.bytes)
    if (mode === 'pool') expect(rs.allocated).toBe(1)
    const name = {
      reuse: 'readExactSync into one buffer',
      pool: 'SyncFdSource + release',
      'pool-norelease': 'SyncFdSource, never released',
      fresh: 'readExactSync, fresh Buffer per record',
      async: 'FdByteSource (async, fresh Buffer)',
    }[mode]!
    row(`writeAllSync | ${name}`, rs.bytes, Math.max(rs.ms, ws.ms), `(writer ${mbps(ws.bytes, ws.ms).toFixed(0)}, reader ${mbps(rs.bytes, rs.ms).toFixed(0)})`)
  })
})

describe('cost of one 4 MiB record to the source (from a file in /dev/shm)', () => {
  it.each(['reuse', 'pool', 'pool-norelease', 'fresh', 'async'])('%s', async (mode) => {
    const file = path.join(dir, 'records')
    if (!fs.existsSync(file)) {
      // 64 records, built from the guest file.
      const guest = fs.readFileSync(guestFile)
      const fd = fs.openSync(file, 'w')
      for (let i = 0; i < 64; i++) fs.writeSync(fd, guest, (i * RECORD) % (guest.length - RECORD), RECORD)
      fs.closeSync(fd)
    }
    const r = await run(process.execPath, [readerJs, file, mode])
    const s = JSON.parse(r.out) as Side
    expect(s.bytes).toBe(64 * RECORD)
    if (mode === 'pool') expect(s.allocated).toBe(1)
    if (mode === 'pool-norelease') expect(s.allocated).toBeGreaterThanOrEqual(64)
    rows.push(`  per record, ${mode.padEnd(16)} median ${s.medianUs!.toFixed(0).padStart(5)} us  (${mbps(s.bytes, s.ms).toFixed(0)} MB/s over ${s.records} records)`)
  })
})

