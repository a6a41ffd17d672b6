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

import {KERNEL_COPY_ENV, SyncFdSource, kernelCopy, kernelCopyUnavailable, openFdPair, type FdPair} from '../src/toolstack/fd/index.js'
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
