/**
 * The kernel copy (native/kernel-copy.c through fd/kernel-copy.ts) and what rides on it: exact
 * moves between files, pipes and sockets that never take a byte past their length (the next holder
 * of the fd reads on from there), short moves at end of input, errors with Node's codes, pipe sizes;
 * the libxc reader's deferred PAGE_DATA (page data moved straight into a file, or read into memory,
 * and a stream cut inside the page data named by record and offset); and a save and restore through
 * the CLI with the kernel copy and without it (XL_TS_KERNEL_COPY=0), both giving back the guest.
 */
import {spawn, spawnSync} from 'node:child_process'
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'
import {describe, expect, it} from 'vitest'

import {KERNEL_COPY_ENV, SyncFdSource, kernelCopy, kernelCopyUnavailable, moveRunsOrFail, openFdPair, runPairs, runsEndAt, type FdPair} from '../src/toolstack/fd/index.js'
import {HypervisorError} from '../src/toolstack/hypervisor/index.js'
import {FileGuestMemory} from '../src/toolstack/hypervisor/sim/memory.js'
import {BufferSource, LibxcReader, StreamError, pageFileRuns, pageTypeHasData, type PageDataRecord} from '../src/toolstack/stream/index.js'
import {libxcStream} from './support/synthetic-guest.js'
import {scratchDir} from './support/scratch.js'

const scratch = scratchDir('kernel-copy')

function pattern(length: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 17 + (i >> 12)) & 0xff
  return b
}

function file(data: Buffer): {fd: number; name: string} {
  const name = scratch.name('f')
  fs.writeFileSync(name, data)
  return {fd: fs.openSync(name, 'r+'), name}
}

function readAll(fd: number, length: number): Buffer {
  const out = Buffer.alloc(length)
  let got = 0
  while (got < length) {
    const k = fs.readSync(fd, out, got, length - got, null)
    if (k === 0) break
    got += k
  }
  return out.subarray(0, got)
}

const copy = kernelCopy()

/** Listens on a unix socket, takes one connection, prints how many bytes came and their sha256. */
const PY_SINK = `
import hashlib, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest())
`

describe('the kernel copy module', () => {
  it('is built by npm run build and loads here (CI has cc and Node headers)', () => {
    expect(kernelCopyUnavailable()).toBeUndefined()
    expect(copy).toBeDefined()
  })

  it(`is left alone with ${KERNEL_COPY_ENV}=0, and says so`, () => {
    const r = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', "import('./dist/toolstack/fd/kernel-copy.js').then((m) => console.log(JSON.stringify([m.kernelCopy() === undefined, m.kernelCopyUnavailable()])))"],
      {cwd: path.resolve(import.meta.dirname, '..'), env: {...process.env, [KERNEL_COPY_ENV]: '0'}, encoding: 'utf8'},
    )
    expect(JSON.parse(r.stdout)).toEqual([true, `${KERNEL_COPY_ENV}=0`])
  })
})

describe.runIf(copy)('move', () => {
  const k = copy!

  it('file to file at offsets and at the fds own positions', () => {
    const data = pattern(3 * 65536 + 100)
    const src = file(data)
    const dst = file(Buffer.alloc(0))
    expect(k.move(src.fd, 4096, dst.fd, 8192, 65536, false)).toBe(65536)
    expect(fs.readFileSync(dst.name).subarray(8192).equals(data.subarray(4096, 4096 + 65536))).toBe(true)
    // -1: the positions move, as read and write would move them
    fs.writeSync(dst.fd, Buffer.from('HEAD'), 0, 4, null)
    expect(k.move(src.fd, -1, dst.fd, -1, 10, false)).toBe(10)
    expect(k.move(src.fd, -1, dst.fd, -1, 6, false)).toBe(6)
    expect(fs.readFileSync(dst.name).subarray(0, 20)).toEqual(Buffer.concat([Buffer.from('HEAD'), data.subarray(0, 16)]))
    fs.closeSync(src.fd)
    fs.closeSync(dst.fd)
  })

  it('is short only at the end of the input', () => {
    const src = file(pattern(5000))
    const dst = file(Buffer.alloc(0))
    expect(k.move(src.fd, 1000, dst.fd, 0, 8192, false)).toBe(4000)
    expect(k.move(src.fd, 5000, dst.fd, 0, 8192, false)).toBe(0)
    fs.closeSync(src.fd)
    fs.closeSync(dst.fd)
  })

  for (const share of [true, false]) {
    it(`file to pipe and pipe to file (share ${share}), taking nothing past its length`, async () => {
      const pair: FdPair = await openFdPair()
      try {
        const data = pattern(256 * 1024, 3)
        const src = file(data)
        const dst = file(Buffer.alloc(0))
        // 40 KiB of pages, then a trailer that belongs to the next reader of the pipe
        expect(k.move(src.fd, 8192, pair.sendFd, -1, 40960, share)).toBe(40960)
        fs.writeSync(pair.sendFd, Buffer.from('next record'))
        expect(k.move(pair.childStdin, -1, dst.fd, 4096, 40960, false)).toBe(40960)
        expect(readAll(pair.childStdin, 11).toString()).toBe('next record')
        expect(fs.readFileSync(dst.name).subarray(4096).equals(data.subarray(8192, 8192 + 40960))).toBe(true)
        fs.closeSync(src.fd)
        fs.closeSync(dst.fd)
      } finally {
        pair.close()
      }
    })
  }

  it('into a non-blocking socket: waits with poll; through sendfile (share) and through its own buffer', async () => {
    const sock = scratch.name('s')
    const data = pattern(3 * 1024 * 1024, 5)
    const src = file(data)
    // The reader is another process, so move may block this one while the socket is full.
    const reader = spawn('python3', ['-c', PY_SINK, sock], {stdio: ['ignore', 'pipe', 'inherit']})
    let out = ''
    reader.stdout.on('data', (d: Buffer) => (out += d))
    const exited = new Promise<number | null>((r) => reader.on('exit', r))
    try {
      while (!fs.existsSync(sock)) await new Promise((r) => setTimeout(r, 10))
      const client = net.connect(sock)
      await new Promise<void>((r) => client.once('connect', () => r()))
      const fd = (client as unknown as {_handle: {fd: number}})._handle.fd
      expect(k.move(src.fd, 0, fd, -1, data.length, true)).toBe(data.length)
      expect(k.move(src.fd, 0, fd, -1, data.length, false)).toBe(data.length)
      client.destroy()
      expect(await exited).toBe(0)
      const twice = Buffer.concat([data, data])
      expect(out.trim()).toBe(`${twice.length} ${crypto.createHash('sha256').update(twice).digest('hex')}`)
    } finally {
      reader.kill()
      fs.closeSync(src.fd)
    }
  })

  it("throws Node's codes: EPIPE into a pipe nobody reads, EBADF for an fd that is not open", () => {
    const src = file(pattern(65536))
    const fifo = scratch.fifo('p')
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    const wr = fs.openSync(fifo, fs.constants.O_WRONLY)
    fs.closeSync(rd)
    expect(() => k.move(src.fd, 0, wr, -1, 4096, true)).toThrow(expect.objectContaining({code: 'EPIPE', syscall: 'splice'}))
    expect(() => k.move(src.fd, 0, wr, -1, 4096, false)).toThrow(expect.objectContaining({code: 'EPIPE', syscall: 'write'}))
    fs.closeSync(wr)
    expect(() => k.move(src.fd, 0, 99999, 0, 4096, false)).toThrow(expect.objectContaining({code: 'EBADF'}))
    expect(() => k.move(src.fd, 0, 1, -1, -5, false)).toThrow(RangeError)
    fs.closeSync(src.fd)
  })

  it('sizes a pipe, and refuses a file', async () => {
    const pair = await openFdPair()
    try {
      expect(k.pipeSize(pair.sendFd, 0)).toBe(65536)
      expect(k.pipeSize(pair.sendFd, 1024 * 1024)).toBe(1024 * 1024)
      expect(k.pipeSize(pair.childStdin, 0)).toBe(1024 * 1024)
    } finally {
      pair.close()
    }
    const f = file(Buffer.alloc(10))
    expect(() => k.pipeSize(f.fd, 65536)).toThrow(expect.objectContaining({code: 'EBADF'}))
    fs.closeSync(f.fd)
  })
})

/** Reads a FIFO to its end, prints how many bytes came and their sha256. */
const PY_FIFO_SINK = `
import hashlib, sys
h = hashlib.sha256(); n = 0
with open(sys.argv[1], 'rb') as f:
    while True:
        b = f.read(1 << 20)
        if not b: break
        h.update(b); n += len(b)
print(n, h.hexdigest())
`

/** Runs `write(fd)` into a FIFO that another process reads; what that process got (bytes, sha256). */
async function throughFifo(write: (fd: number) => void): Promise<string> {
  const fifo = scratch.fifo('runs')
  const reader = spawn('python3', ['-c', PY_FIFO_SINK, fifo], {stdio: ['ignore', 'pipe', 'inherit']})
  let out = ''
  reader.stdout.on('data', (d: Buffer) => (out += d))
  const exited = new Promise<number | null>((r) => reader.on('exit', r))
  try {
    const fd = fs.openSync(fifo, 'w')
    try {
      write(fd)
    } finally {
      fs.closeSync(fd)
    }
    expect(await exited).toBe(0)
    return out.trim()
  } finally {
    reader.kill()
  }
}

const digest = (b: Buffer): string => `${b.length} ${crypto.createHash('sha256').update(b).digest('hex')}`

/** Scattered runs of a file, as a checkpoint's dirty pages are: single pages, a 1.5 MiB run (longer than the 1 MiB buffer), pages out of order. */
function scatteredRuns(pages: number): {offset: number; length: number}[] {
  const runs = []
  for (let p = 3; p < pages / 2; p += 7) runs.push({offset: p * 4096, length: 4096})
  runs.push({offset: (pages / 2) * 4096, length: 384 * 4096})
  runs.push({offset: 4096, length: 2 * 4096}, {offset: 0, length: 100})
  return runs
}

describe.runIf(copy)('moveRuns and fileRuns', () => {
  const k = copy!
  const pages = 1024
  const data = pattern(pages * 4096, 9)
  const runs = scatteredRuns(pages)
  const expected = Buffer.concat(runs.map((r) => data.subarray(r.offset, r.offset + r.length)))

  for (const share of [false, true]) {
    it(`moves scattered runs of a file into a pipe in their order (share ${share})`, async () => {
      const src = file(data)
      try {
        let moved = 0
        const got = await throughFifo((fd) => (moved = k.moveRuns(src.fd, runPairs(runs), fd, share)))
        expect(moved).toBe(expected.length)
        expect(got).toBe(digest(expected))
      } finally {
        fs.closeSync(src.fd)
      }
    })
  }

  it('into a file (a savefile): at its position, which moves on', () => {
    const src = file(data)
    const dst = file(Buffer.alloc(0))
    try {
      fs.writeSync(dst.fd, Buffer.from('HEAD'), 0, 4, null)
      expect(k.moveRuns(src.fd, runPairs(runs), dst.fd, false)).toBe(expected.length)
      fs.writeSync(dst.fd, Buffer.from('TAIL'), 0, 4, null)
      expect(fs.readFileSync(dst.name).equals(Buffer.concat([Buffer.from('HEAD'), expected, Buffer.from('TAIL')]))).toBe(true)
    } finally {
      fs.closeSync(src.fd)
      fs.closeSync(dst.fd)
    }
  })

  it('stops short where the file ends, and says where', async () => {
    const src = file(data.subarray(0, 10 * 4096 + 100))
    const short = [{offset: 4096, length: 4096}, {offset: 10 * 4096, length: 4096}, {offset: 2 * 4096, length: 4096}]
    try {
      let moved = 0
      const got = await throughFifo((fd) => (moved = k.moveRuns(src.fd, runPairs(short), fd, false)))
      expect(moved).toBe(4096 + 100)
      expect(got).toBe(digest(Buffer.concat([data.subarray(4096, 8192), data.subarray(10 * 4096, 10 * 4096 + 100)])))
      expect(runsEndAt(short, moved)).toBe(10 * 4096 + 100)
    } finally {
      fs.closeSync(src.fd)
    }
  })

  it('refuses runs that are not whole (offset, length) pairs, and names the errno of a failed write', () => {
    const src = file(data.subarray(0, 65536))
    const fifo = scratch.fifo('p')
    const rd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    const wr = fs.openSync(fifo, fs.constants.O_WRONLY)
    fs.closeSync(rd)
    try {
      expect(() => k.moveRuns(src.fd, new Float64Array([0]), wr, false)).toThrow(TypeError)
      expect(() => k.moveRuns(src.fd, [0, 4096] as unknown as Float64Array, wr, false)).toThrow(TypeError)
      expect(() => k.moveRuns(src.fd, new Float64Array([0.5, 4096]), wr, false)).toThrow(RangeError)
      expect(() => k.moveRuns(src.fd, new Float64Array([-4096, 4096]), wr, false)).toThrow(RangeError)
      expect(() => k.moveRuns(src.fd, runPairs([{offset: 0, length: 4096}]), wr, false)).toThrow(expect.objectContaining({code: 'EPIPE', syscall: 'write'}))
      expect(() => moveRunsOrFail(k, src.fd, runPairs([{offset: 0, length: 4096}]), wr, true, 'the migration stream', 'writing pages')).toThrow(
        expect.objectContaining({message: expect.stringMatching(/writing pages failed: EPIPE/), errno: 'EPIPE', expected: 4096}),
      )
    } finally {
      fs.closeSync(wr)
      fs.closeSync(src.fd)
    }
  })

  it('writes and reads scattered runs of a file from and into one buffer', () => {
    const dst = file(Buffer.alloc(pages * 4096))
    try {
      expect(k.fileRuns(dst.fd, expected, runPairs(runs), true)).toBe(expected.length)
      const back = Buffer.alloc(expected.length)
      expect(k.fileRuns(dst.fd, back, runPairs(runs), false)).toBe(expected.length)
      expect(back.equals(expected)).toBe(true)
      // Every byte outside the runs is still zero; inside them is the source's.
      const whole = fs.readFileSync(dst.name)
      for (const r of runs) expect(whole.subarray(r.offset, r.offset + r.length).equals(data.subarray(r.offset, r.offset + r.length))).toBe(true)
      const outside = Buffer.from(whole)
      for (const r of runs) outside.fill(0, r.offset, r.offset + r.length)
      expect(outside.equals(Buffer.alloc(whole.length))).toBe(true)
      // A read that meets the end of the file is short; runs longer than the buffer are refused.
      expect(k.fileRuns(dst.fd, Buffer.alloc(8192), runPairs([{offset: (pages - 1) * 4096, length: 8192}]), false)).toBe(4096)
      expect(() => k.fileRuns(dst.fd, Buffer.alloc(4095), runPairs([{offset: 0, length: 4096}]), true)).toThrow(RangeError)
      expect(() => k.fileRuns(99999, Buffer.alloc(4096), runPairs([{offset: 0, length: 4096}]), true)).toThrow(expect.objectContaining({code: 'EBADF', syscall: 'pwrite'}))
    } finally {
      fs.closeSync(dst.fd)
    }
  })
})

describe('the simulated host\'s guest memory, with the native module and through Node\'s fs', () => {
  for (const [name, with_] of [['native', copy], ['fs', undefined]] as const) {
    if (name === 'native' && !copy) continue
    it(`${name}: writes and reads pages in pfn order, runs joined, and refuses what is out of bounds`, async () => {
      const pages = 64
      const f = file(Buffer.alloc(pages * 4096))
      fs.closeSync(f.fd)
      const mem = FileGuestMemory.open(f.name, pages, 7, with_)
      try {
        const pfns = [5, 6, 7, 40, 2, 63]
        const data = pattern(pfns.length * 4096, 4)
        await mem.writePages(pfns, data)
        const whole = fs.readFileSync(f.name)
        pfns.forEach((pfn, i) => expect(whole.subarray(pfn * 4096, (pfn + 1) * 4096).equals(data.subarray(i * 4096, (i + 1) * 4096))).toBe(true))
        const back = Buffer.alloc(data.length)
        await mem.readPages(pfns, back)
        expect(back.equals(data)).toBe(true)
        await expect(mem.readPages([64], Buffer.alloc(4096))).rejects.toThrow(/pfn 64 is outside its 64 pages/)
        await expect(mem.readPages([1, 2], Buffer.alloc(4096))).rejects.toThrow(/cannot hold 2 pages/)
        // A memory file shorter than the domain (the domain process went away mid-way): named.
        fs.truncateSync(f.name, 10 * 4096 + 512)
        await expect(mem.readPages([3, 10, 11], Buffer.alloc(3 * 4096))).rejects.toThrow(
          expect.objectContaining({code: 'backend-failure', message: expect.stringContaining(`memory file ended at byte ${10 * 4096 + 512}`)}),
        )
      } finally {
        await mem.close()
      }
      await expect(mem.readPages([1], Buffer.alloc(4096))).rejects.toBeInstanceOf(HypervisorError)
    })
  }
})

describe.runIf(copy)('LibxcReader with deferred page data', () => {
  const guest = {pages: 300, seed: 9}
  const stream = libxcStream(guest)

  /** Every record of the stream read plainly: the reference. */
  async function plainPages(): Promise<Map<number, Buffer>> {
    const r = new LibxcReader(new BufferSource(stream), {streamType: 'plain', p2mSize: guest.pages})
    await r.readHeaders()
    const mem = new Map<number, Buffer>()
    for (;;) {
      const {record} = await r.next()
      if (record.kind === 'PAGE_DATA') {
        const data = Buffer.concat(record.pages)
        let i = 0
        record.pfns.forEach((pfn, j) => pageTypeHasData(record.types[j]!) && mem.set(pfn, data.subarray(i * 4096, ++i * 4096)))
      }
      if (record.kind === 'END') return mem
    }
  }

  it('moves every page into a memory file where the plain reader would have put it, and reads on after it', async () => {
    const want = await plainPages()
    const src = file(Buffer.concat([stream, Buffer.from('after the stream')]))
    const mem = file(Buffer.alloc(guest.pages * 4096))
    const source = new SyncFdSource(src.fd)
    const r = new LibxcReader(source, {streamType: 'plain', p2mSize: guest.pages, deferPageData: true})
    await r.readHeaders()
    let deferred = 0
    for (;;) {
      const read = await r.next()
      const {record} = read
      if (record.kind === 'PAGE_DATA') {
        expect(record.pages).toEqual([])
        expect(read.pendingPageBytes).toBe(r.pendingPageBytes)
        await expect(r.next()).rejects.toThrow(/before the page data/)
        const pfns = record.pfns.filter((_, i) => pageTypeHasData(record.types[i]!))
        await r.movePendingPages(mem.fd, pageFileRuns(pfns))
        deferred++
      }
      if (record.kind === 'END') break
    }
    expect(deferred).toBeGreaterThan(0)
    expect(source.offset).toBe(stream.length)
    expect(readAll(src.fd, 100).toString()).toBe('after the stream')
    const image = fs.readFileSync(mem.name)
    for (const [pfn, page] of want) expect(image.subarray(pfn * 4096, pfn * 4096 + 4096).equals(page), `pfn ${pfn}`).toBe(true)
    fs.closeSync(src.fd)
    fs.closeSync(mem.fd)
  })

  it('refuses a pfn beyond the domain before any of its page data is taken', async () => {
    const src = file(stream)
    const source = new SyncFdSource(src.fd)
    const r = new LibxcReader(source, {streamType: 'plain', p2mSize: 100, deferPageData: true})
    await r.readHeaders()
    let err: unknown
    let before = 0
    for (;;) {
      before = source.offset
      try {
        if ((await r.next()).record.kind === 'END') break
      } catch (e) {
        err = e
        break
      }
    }
    expect(err).toBeInstanceOf(StreamError)
    expect(err).toMatchObject({code: 'pfn-out-of-range', offset: before, record: {name: 'PAGE_DATA'}})
    // the record header, count and pfn array were read; not one byte of its pages
    const count = Buffer.from(stream.subarray(before + 8, before + 12)).readUInt32LE(0)
    expect(source.offset).toBe(before + 16 + 8 * count)
    expect(r.pendingPageBytes).toBe(0)
    fs.closeSync(src.fd)
  })

  it('reads the page data into memory when asked (a checkpoint being buffered)', async () => {
    const r = new LibxcReader(new BufferSource(stream), {streamType: 'plain', p2mSize: guest.pages, deferPageData: true})
    await r.readHeaders()
    let record
    do record = (await r.next()).record
    while (record.kind !== 'PAGE_DATA')
    const bytes = r.pendingPageBytes
    const data = await r.readPendingPages()
    expect(data.length).toBe(bytes)
    expect(r.pendingPageBytes).toBe(0)
    const again = new LibxcReader(new BufferSource(stream), {streamType: 'plain', p2mSize: guest.pages})
    await again.readHeaders()
    let plain
    do plain = (await again.next()).record
    while (plain.kind !== 'PAGE_DATA')
    expect(data.equals(Buffer.concat((plain as PageDataRecord).pages))).toBe(true)
  })

  it('a stream cut inside the page data fails naming the record and its offset, moved or read', async () => {
    // find the first PAGE_DATA record's offset and cut 5000 bytes into its page data
    const probe = new LibxcReader(new BufferSource(stream), {streamType: 'plain', p2mSize: guest.pages, deferPageData: true})
    await probe.readHeaders()
    let first
    do first = await probe.next()
    while (first.record.kind !== 'PAGE_DATA')
    const head = 8 + 8 + 8 * (first.record as PageDataRecord).pfns.length
    const cut = stream.subarray(0, first.offset + head + 5000)
    for (const how of ['move', 'read'] as const) {
      const src = file(cut)
      const mem = file(Buffer.alloc(guest.pages * 4096))
      const r = new LibxcReader(new SyncFdSource(src.fd), {streamType: 'plain', p2mSize: guest.pages, deferPageData: true})
      await r.readHeaders()
      let read
      do read = await r.next()
      while (read.record.kind !== 'PAGE_DATA')
      const rec = read.record as PageDataRecord
      const pending = r.pendingPageBytes
      const take = how === 'move' ? r.movePendingPages(mem.fd, pageFileRuns(rec.pfns.filter((_, i) => pageTypeHasData(rec.types[i]!)))) : r.readPendingPages()
      const err = await take.then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toBeInstanceOf(StreamError)
      expect(err).toMatchObject({code: 'truncated', offset: first.offset, record: {name: 'PAGE_DATA', index: first.index}})
      expect((err as Error).message).toContain(`stream ends after ${head - 8 + 5000} of ${head - 8 + pending} body bytes`)
      fs.closeSync(src.fd)
      fs.closeSync(mem.fd)
    }
  })
})
