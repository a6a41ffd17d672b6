/**
 * `xl-ts stream inspect` as an operator runs it: the built CLI (node bin/run.js) on synthetic
 * savefiles and captures, from files, stdin pipes and non-blocking FIFOs; exit codes, the listing,
 * the summary, NDJSON, and the one-line error on stderr.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {
  backChannelStream,
  checkpointedStream,
  libxcStream,
  libxlStream,
  xlFile,
  type SyntheticGuest,
} from './support/synthetic-guest.js'
import {ensureBuilt} from './support/build.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const BIN = path.join(ROOT, 'bin', 'run.js')
const GUEST: SyntheticGuest = {pages: 1500, xenstoreData: true}

/** Pages of the plain synthetic stream: every page, then the dirty round (pfn % 7 == 3). */
const PLAIN_PFNS = GUEST.pages + Array.from({length: GUEST.pages}, (_, i) => i).filter((p) => p % 7 === 3).length
/** Pages of a checkpointed stream of 3 checkpoints: every page, then ((pfn + round) % 5 == 0) per round. */
const CHECKPOINTED_PFNS =
  GUEST.pages + [1, 2].reduce((n, round) => n + Array.from({length: GUEST.pages}, (_, i) => i).filter((p) => (p + round) % 5 === 0).length, 0)

let dir: string
const files: Record<string, string> = {}


function write(name: string, data: Buffer): string {
  const p = path.join(dir, name)
  fs.writeFileSync(p, data)
  files[name] = p
  return p
}

interface Run {
  exitCode: number | null
  stdout: string
  stderr: string
}

/**
 * Runs the CLI. `stdin` is a raw fd that becomes the child's fd 0 as it is (same open file
 * description: same offset, same O_NONBLOCK); without it stdin is /dev/null.
 */
function inspect(args: string[], opts: {stdin?: number} = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'stream', 'inspect', ...args], {cwd: ROOT, stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe']})
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout!.on('data', (c: Buffer) => out.push(c))
    child.stderr!.on('data', (c: Buffer) => err.push(c))
    child.once('error', reject)
    child.once('close', (code) => resolve({exitCode: code, stdout: Buffer.concat(out).toString('utf8').trimEnd(), stderr: Buffer.concat(err).toString('utf8')}))
  })
}

// biome-ignore lint/suspicious/noExplicitAny: the events' fields are read as the test needs them
function jsonLines(stdout: string): Record<string, any>[] {
  return stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** The summary's value for a key, e.g. `checkpoints`. */
function summaryItem(stdout: string, key: string): string | undefined {
  const line = stdout.split('\n').find((l) => l.startsWith(`  ${key.padEnd(12)} `))
  return line?.slice(2 + 12 + 1)
}

function expectOneErrorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.length > 0)
  expect(lines).toHaveLength(1)
  expect(lines[0]).toMatch(/^xl-ts: stream inspect: /)
  expect(stderr).not.toMatch(/\n\s+at /) // no stack trace
  return lines[0]!
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-ts-inspect-'))
  try {
    await ensureBuilt()
    write('vm.save', xlFile(GUEST))
    write('libxl.stream', libxlStream(GUEST))
    write('libxc.stream', libxcStream(GUEST))
    write('colo.stream', checkpointedStream(GUEST, 'colo', 3))
    write('remus.stream', checkpointedStream(GUEST, 'remus', 3))
    write('back.channel', backChannelStream(3, (round) => [round, round + 7, 0x400 + round]))
  } catch (err) {
    fs.rmSync(dir, {recursive: true, force: true})
    throw err
  }
})

afterAll(() => {
  if (dir) fs.rmSync(dir, {recursive: true, force: true})
})

describe('valid streams', () => {
  it('lists an xl savefile, squashes PAGE_DATA and sums it up', async () => {
    const r = await inspect([files['vm.save']!])
    expect(r.exitCode).toBe(0)
    expect(r.stderr).toBe('')
    const out = r.stdout
    expect(out).toMatch(/^\s+0\s+xl\s+savefile header\s+\d+\s+flags 0x3 \(JSON, STREAMv2\), config \d+ bytes JSON, domain "synthetic"$/m)
    expect(out).toMatch(/\slibxl\s+header\s+16\s+version 2$/m)
    expect(out).toMatch(/\slibxc\s+image header\s+24\s+version 3$/m)
    expect(out).toMatch(/\slibxc\s+domain header\s+16\s+x86 HVM, from Xen 4\.17$/m)
    expect(out).toMatch(/\slibxc\s+#3-5\s+PAGE_DATA x 3\s+\d+\s+1714 pfns, 1714 pages of data, pfns 0x0-0x5db$/m)
    expect(out).toMatch(/X86_TSC_INFO .* mode 0, 2400000 kHz/)
    expect(out).toMatch(/HVM_PARAMS .* 4 params/)
    expect(out).toMatch(/X86_CPUID_POLICY .* 3 leaves/)
    expect(out).toMatch(/EMULATOR_CONTEXT .* qemu-upstream \(id 2\)/)
    expect(PLAIN_PFNS).toBe(1714)
    expect(summaryItem(out, 'pages')).toBe(`${PLAIN_PFNS} pfns in 3 PAGE_DATA records, ${PLAIN_PFNS} pages of data = ${PLAIN_PFNS * 4096} bytes (6.7 MiB)`)
    expect(summaryItem(out, 'records')).toBe('libxl 4, libxc 10 (and 4 headers)')
    expect(summaryItem(out, 'checkpoints')).toBe('0')
    expect(summaryItem(out, 'stream type')).toBe('plain (save or migration)')
    expect(summaryItem(out, 'bytes')).toMatch(new RegExp(`^${fs.statSync(files['vm.save']!).size} bytes`))
    expect(summaryItem(out, 'end')).toBe('END record')
    expect(summaryItem(out, 'result')).toBe('valid')
  })

  it('shows every PAGE_DATA record with --no-squash', async () => {
    const r = await inspect(['--no-squash', files['vm.save']!])
    expect(r.exitCode).toBe(0)
    const pageLines = r.stdout.split('\n').filter((l) => /\slibxc\s+#\d+\s+PAGE_DATA\s/.test(l))
    expect(pageLines).toHaveLength(3)
    expect(r.stdout).not.toMatch(/PAGE_DATA x/)
    expect(pageLines[0]).toMatch(/#3\s+PAGE_DATA\s+\d+\s+1024 pfns, 1024 pages of data, pfns 0x0-0x3ff$/)
  })

  it('reads a bare libxl stream and a bare libxc stream', async () => {
    const libxl = await inspect([files['libxl.stream']!])
    expect(libxl.exitCode).toBe(0)
    expect(summaryItem(libxl.stdout, 'format')).toMatch(/^libxl stream v2.*told from its first bytes$/)
    expect(summaryItem(libxl.stdout, 'result')).toBe('valid')

    const libxc = await inspect([files['libxc.stream']!])
    expect(libxc.exitCode).toBe(0)
    expect(summaryItem(libxc.stdout, 'format')).toMatch(/^libxc stream v3/)
    expect(summaryItem(libxc.stdout, 'records')).toBe('libxl 0, libxc 10 (and 2 headers)')
    expect(summaryItem(libxc.stdout, 'pages')).toMatch(new RegExp(`^${PLAIN_PFNS} pfns in 3 PAGE_DATA records`))

    const forced = await inspect(['-f', 'libxc', '--stream-type', 'plain', files['libxc.stream']!])
    expect(forced.exitCode).toBe(0)
    expect(summaryItem(forced.stdout, 'format')).toBe('libxc stream v3')
  })

  it('tells a COLO stream by its CHECKPOINT_STATE records and counts checkpoints', async () => {
    const r = await inspect([files['colo.stream']!])
    expect(r.exitCode).toBe(0)
    expect(r.stderr).toBe('')
    expect(r.stdout.match(/ CHECKPOINT_STATE\s+4\s+NEW \(0\)$/gm)).toHaveLength(2)
    expect(r.stdout.match(/ CHECKPOINT_END\s+0\s+end of checkpoint \d$/gm)).toHaveLength(3)
    expect(r.stdout).toMatch(/end of input\s+0\s+stream ends between checkpoints, after 3 checkpoints/)
    expect(summaryItem(r.stdout, 'stream type')).toBe('COLO (checkpointed)')
    expect(summaryItem(r.stdout, 'checkpoints')).toBe('3')
    expect(summaryItem(r.stdout, 'pages')).toMatch(new RegExp(`^${CHECKPOINTED_PFNS} pfns in 4 PAGE_DATA records`))
    expect(summaryItem(r.stdout, 'end')).toBe('end of input between checkpoints')
    expect(summaryItem(r.stdout, 'result')).toBe('valid')
  })

  it('tells a Remus stream and counts checkpoints', async () => {
    const r = await inspect([files['remus.stream']!])
    expect(r.exitCode).toBe(0)
    expect(r.stdout).not.toMatch(/CHECKPOINT_STATE/)
    expect(summaryItem(r.stdout, 'stream type')).toBe('Remus (checkpointed)')
    expect(summaryItem(r.stdout, 'checkpoints')).toBe('3')
    expect(summaryItem(r.stdout, 'result')).toBe('valid')
  })

  it('reads a COLO back channel capture', async () => {
    const r = await inspect([files['back.channel']!])
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toMatch(/^\s+0\s+back\s+#0\s+CHECKPOINT_STATE\s+4\s+SVM_READY \(2\)$/m)
    expect(r.stdout).toMatch(/\sback\s+#3\s+CHECKPOINT_DIRTY_PFN_LIST\s+24\s+3 pfns in 0x1-0x401$/m)
    expect(summaryItem(r.stdout, 'format')).toMatch(/^COLO back channel/)
    expect(summaryItem(r.stdout, 'checkpoints')).toBe('3')
    expect(summaryItem(r.stdout, 'dirty pfns')).toBe('6')
    expect(summaryItem(r.stdout, 'records')).toBe('back channel 10')
    expect(summaryItem(r.stdout, 'result')).toBe('valid')
  })

  it('has operator examples in its help', async () => {
    const r = await execa('node', [BIN, 'stream', 'inspect', '--help'], {cwd: ROOT, reject: false, stdin: 'ignore'})
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toContain('xl-ts stream inspect /var/lib/xen/save/vm.save')
    expect(r.stdout).toContain('xl-ts stream inspect --json - < capture')
  })
})

describe('--json', () => {
  it('prints one parseable object per event and ends with the summary', async () => {
    const r = await inspect(['--json', files['vm.save']!])
    expect(r.exitCode).toBe(0)
    const lines = r.stdout.trimEnd().split('\n')
    for (const l of lines) expect(l.length).toBeLessThan(2000) // no buffers dumped
    const events = jsonLines(r.stdout)
    expect(events.every((e) => e.v === 1)).toBe(true)
    expect(events[0]).toEqual({v: 1, event: 'format', format: 'xl', detected: true})
    expect(events[1]).toMatchObject({event: 'header', layer: 'xl', offset: 0, part: 'savefile header', domain: 'synthetic', flags: ['JSON', 'STREAMv2']})
    const records = events.filter((e) => e.event === 'record')
    expect(records.filter((e) => e.layer === 'libxl')).toHaveLength(4)
    expect(records.filter((e) => e.layer === 'libxc')).toHaveLength(10)
    const pages = records.filter((e) => e.type === 'PAGE_DATA')
    expect(pages).toHaveLength(3)
    expect(pages[0]).toMatchObject({layer: 'libxc', index: 3, typeId: 1, pfns: 1024, pagesWithData: 1024, pfnFirst: '0x0', pfnLast: '0x3ff'})
    expect(pages.reduce((n, e) => n + (e.pfns as number), 0)).toBe(PLAIN_PFNS)
    const tsc = records.find((e) => e.type === 'X86_TSC_INFO')!
    expect(tsc).toMatchObject({khz: 2400000, nsec: '123456789'})
    const params = records.find((e) => e.type === 'HVM_PARAMS')!
    expect(params.params[0]).toEqual({index: 1, name: 'STORE_PFN', value: '0xfeffc'})
    // Offsets increase and every record carries its length.
    for (let i = 1; i < events.length - 1; i++) {
      if (events[i]!.offset !== undefined && events[i - 1]!.offset !== undefined) expect(events[i]!.offset).toBeGreaterThanOrEqual(events[i - 1]!.offset)
    }
    expect(records.every((e) => typeof e.length === 'number' && typeof e.offset === 'number')).toBe(true)
    const last = events.at(-1)!
    expect(last).toMatchObject({
      event: 'summary',
      valid: true,
      format: 'xl',
      streamType: 'plain',
      checkpoints: 0,
      end: 'END',
      bytes: fs.statSync(files['vm.save']!).size,
      pages: {records: 3, pfns: PLAIN_PFNS, withData: PLAIN_PFNS, bytes: PLAIN_PFNS * 4096},
      records: {libxl: 4, libxc: 10, back: 0},
    })
  })

  it('reports a COLO stream with its checkpoints and end of input', async () => {
    const r = await inspect(['--json', files['colo.stream']!])
    expect(r.exitCode).toBe(0)
    const events = jsonLines(r.stdout)
    expect(events.filter((e) => e.type === 'CHECKPOINT_STATE').map((e) => e.state)).toEqual(['NEW', 'NEW'])
    expect(events.at(-2)).toMatchObject({event: 'eof', checkpoints: 3})
    expect(events.at(-1)).toMatchObject({event: 'summary', valid: true, streamType: 'colo', checkpoints: 3, end: 'eof'})
  })

  it('ends with an error object naming format, code, offset and record', async () => {
    const bad = await corruptedFirstPageData()
    const r = await inspect(['--json', bad.file])
    expect(r.exitCode).toBe(1)
    const events = jsonLines(r.stdout)
    const last = events.at(-1)!
    expect(last).toMatchObject({
      event: 'error',
      format: 'libxc',
      code: 'reserved',
      offset: bad.offset,
      record: {type: 'PAGE_DATA', typeId: 1, index: 3},
    })
    expect(last.message).toMatch(/PAGE_DATA record #3 at offset/)
    expect(events.some((e) => e.event === 'summary')).toBe(false)
    expectOneErrorLine(r.stderr)
  })
})

/** The xl savefile with the reserved word of its first PAGE_DATA record set. */
async function corruptedFirstPageData(): Promise<{file: string; offset: number}> {
  const listing = jsonLines((await inspect(['--json', files['vm.save']!])).stdout)
  const first = listing.find((e) => e.type === 'PAGE_DATA')!
  const data = fs.readFileSync(files['vm.save']!)
  data.writeUInt32LE(0xdead, first.offset + 8 + 4) // record header, then u32 count, u32 _res1
  return {file: write('reserved.save', data), offset: first.offset as number}
}

describe('invalid input', () => {
  it('a corrupted file: exit 1, the listing so far, one stderr line naming record and offset', async () => {
    const bad = await corruptedFirstPageData()
    const r = await inspect([bad.file])
    expect(r.exitCode).toBe(1)
    const line = expectOneErrorLine(r.stderr)
    expect(line).toBe(
      `xl-ts: stream inspect: libxc PAGE_DATA record #3 at offset ${bad.offset} (0x${bad.offset.toString(16)}): reserved field _res1 is 0xdead, must be zero`,
    )
    // What was read before the fault is listed.
    expect(r.stdout).toMatch(/savefile header/)
    expect(r.stdout).toMatch(/STATIC_DATA_END/)
    expect(summaryItem(r.stdout, 'result')).toMatch(/^invalid: libxc PAGE_DATA record #3/)
  })

  it('a truncated file: exit 1, names the record cut short', async () => {
    const whole = fs.readFileSync(files['colo.stream']!)
    const file = write('truncated.stream', whole.subarray(0, 5_000_000))
    const r = await inspect([file])
    expect(r.exitCode).toBe(1)
    const line = expectOneErrorLine(r.stderr)
    expect(line).toMatch(/^xl-ts: stream inspect: libxc PAGE_DATA record #\d+ at offset \d+ \(0x[0-9a-f]+\): stream ends after \d+ of \d+ body bytes$/)
    expect(summaryItem(r.stdout, 'bytes')).toMatch(/^5000000 bytes/)

    // Cut inside a record header: also invalid (only a cut between checkpoints is a clean end).
    const cutHeader = write('cut-header.stream', whole.subarray(0, 20))
    const h = await inspect([cutHeader])
    expect(h.exitCode).toBe(1)
    expectOneErrorLine(h.stderr)
  })

  it('a stream of the wrong type for --stream-type: exit 1', async () => {
    const r = await inspect(['--stream-type', 'colo', files['remus.stream']!])
    expect(r.exitCode).toBe(1)
    expect(expectOneErrorLine(r.stderr)).toMatch(/expected CHECKPOINT_STATE\(NEW\) after CHECKPOINT_END in a COLO stream/)
    const plain = await inspect(['--stream-type', 'plain', files['colo.stream']!])
    expect(plain.exitCode).toBe(1)
    expect(expectOneErrorLine(plain.stderr)).toMatch(/CHECKPOINT record #\d+ .*CHECKPOINT in a non-checkpointed stream/)
  })

  it('pfns beyond --p2m-size: exit 1', async () => {
    const r = await inspect(['--p2m-size', '0x100', files['vm.save']!])
    expect(r.exitCode).toBe(1)
    expect(expectOneErrorLine(r.stderr)).toMatch(/pfn 0x100 \(index 256\) is outside the domain/)
    const ok = await inspect(['--p2m-size', String(GUEST.pages), files['vm.save']!])
    expect(ok.exitCode).toBe(0)
  })

  it('something that is no stream, an empty file, a missing file, a directory: exit 1, one line', async () => {
    const junk = await inspect([write('junk.bin', Buffer.from('#!/bin/sh\necho not a stream\n'))])
    expect(junk.exitCode).toBe(1)
    expect(expectOneErrorLine(junk.stderr)).toMatch(/cannot tell the stream format from its first bytes \(2321\w+\)/)

    const empty = await inspect([write('empty.bin', Buffer.alloc(0))])
    expect(empty.exitCode).toBe(1)
    expect(expectOneErrorLine(empty.stderr)).toBe('xl-ts: stream inspect: the stream is empty')

    const missing = path.join(dir, 'no-such.save')
    const m = await inspect([missing])
    expect(m.exitCode).toBe(1)
    expect(m.stdout).toBe('')
    expect(expectOneErrorLine(m.stderr)).toBe(`xl-ts: stream inspect: cannot open ${missing}: no such file or directory`)

    const d = await inspect([dir])
    expect(d.exitCode).toBe(1)
    expectOneErrorLine(d.stderr)
  })

  it('bad usage exits 2', async () => {
    for (const args of [['-f', 'qcow2', files['vm.save']!], ['--stream-type', 'both', files['vm.save']!], ['--p2m-size', 'lots', files['vm.save']!], [], ['--frobnicate', files['vm.save']!]]) {
      const r = await inspect(args)
      expect(r.exitCode, args.join(' ')).toBe(2)
    }
  })
})

describe('standard input', () => {
  it('reads - from a shell pipe', async () => {
    const r = await execa('sh', ['-c', `cat "$1" | node "$2" stream inspect -`, 'sh', files['colo.stream']!, BIN], {cwd: ROOT, reject: false})
    expect(r.exitCode).toBe(0)
    expect(summaryItem(r.stdout, 'stream type')).toBe('COLO (checkpointed)')
    expect(summaryItem(r.stdout, 'checkpoints')).toBe('3')
  })

  it('reads - from a file on fd 0, with --json', async () => {
    const fd = fs.openSync(files['back.channel']!, 'r')
    try {
      const r = await inspect(['--json', '-'], {stdin: fd})
      expect(r.exitCode).toBe(0)
      expect(jsonLines(r.stdout).at(-1)).toMatchObject({event: 'summary', valid: true, format: 'back-channel', checkpoints: 3})
    } finally {
      fs.closeSync(fd)
    }
  })

  it('stops at the end of the stream and leaves what follows on stdin to the next reader', async () => {
    const trailer = Buffer.from('the next reader owns these bytes\n')
    const both = write('with-trailer.bin', Buffer.concat([fs.readFileSync(files['vm.save']!), trailer]))
    const rest = path.join(dir, 'rest.bin')
    const r = await execa('sh', ['-c', `cat "$1" | { node "$2" stream inspect - >/dev/null && cat > "$3"; }`, 'sh', both, BIN, rest], {cwd: ROOT, reject: false})
    expect(r.exitCode).toBe(0)
    expect(fs.readFileSync(rest)).toEqual(trailer)

    // Given the file by name, it says what it left unread.
    const named = await inspect([both])
    expect(named.exitCode).toBe(0)
    expect(summaryItem(named.stdout, 'end')).toBe(`END record; ${trailer.length} more bytes in the file after it, not read`)
  })

  it('reads a non-blocking FIFO on fd 0 written slowly by another process (EAGAIN)', async () => {
    const fifo = path.join(dir, 'slow.fifo')
    await execa('mkfifo', [fifo])
    const data = fs.readFileSync(files['colo.stream']!)
    // O_NONBLOCK belongs to the open file description, which the CLI's fd 0 shares with `rfd`.
    // libuv makes a child's fds 0-2 blocking when it spawns it, so pass the fd as fd 3 and let the
    // shell move it to fd 0, as a shell started by some other program would hand it over.
    const rfd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    // Our own write end keeps the FIFO from looking ended before the writer opens it.
    let hold: number | undefined = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
    const nonBlocking = () => (Number.parseInt(/flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${rfd}`, 'utf8'))![1]!, 8) & fs.constants.O_NONBLOCK) !== 0
    try {
      const cli = spawn('sh', ['-c', 'exec "$0" "$1" stream inspect - <&3 3<&-', process.execPath, BIN], {cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe', rfd]})
      const out: Buffer[] = []
      const err: Buffer[] = []
      cli.stdout!.on('data', (c: Buffer) => out.push(c))
      cli.stderr!.on('data', (c: Buffer) => err.push(c))
      const cliExit = new Promise<number | null>((resolve) => cli.once('close', resolve))
      const writer = spawn(
        process.execPath,
        [
          '-e',
          `const fs = require('node:fs'); const data = fs.readFileSync(process.argv[1]); const fd = fs.openSync(process.argv[2], 'w');
           let at = 0; const step = () => { if (at >= data.length) { fs.closeSync(fd); return }
             const n = Math.min(32 * 1024, data.length - at); let o = 0; while (o < n) o += fs.writeSync(fd, data, at + o, n - o); at += n; setTimeout(step, 5) }; step()`,
          files['colo.stream']!,
          fifo,
        ],
        {stdio: ['ignore', 'ignore', 'inherit']},
      )
      const writerExit = new Promise<number | null>((resolve) => writer.once('exit', resolve))
      // Should the CLI give up early, stop the writer rather than leave it blocked on a full pipe.
      if ((await Promise.race([writerExit.then(() => 'writer'), cliExit.then(() => 'cli')])) === 'cli') writer.kill()
      await writerExit
      fs.closeSync(hold)
      hold = undefined
      const code = await cliExit
      expect(Buffer.concat(err).toString('utf8')).toBe('')
      expect(code).toBe(0)
      // Still non-blocking after the run: the CLI read a non-blocking fd 0 all along.
      expect(nonBlocking()).toBe(true)
      const stdout = Buffer.concat(out).toString('utf8')
      expect(summaryItem(stdout, 'checkpoints')).toBe('3')
      expect(summaryItem(stdout, 'bytes')).toMatch(new RegExp(`^${data.length} bytes`))
      expect(summaryItem(stdout, 'result')).toBe('valid')
    } finally {
      fs.closeSync(rfd)
      if (hold !== undefined) fs.closeSync(hold)
    }
  })
})
