/**
 * FdByteSource over real files and real pipes (FIFOs written by child processes in small pieces
 * with pauses): exact-length reads across partial writes, short read at EOF, non-blocking fds that
 * answer EAGAIN, and no read-ahead: a second reader given the same fd gets exactly the rest.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import {describe, expect, it} from 'vitest'

import {FdByteSource, ReplaySource, errnoText, openForReading} from '../src/toolstack/fd/index.js'
import {BufferSource} from '../src/toolstack/stream/index.js'
import {scratchDir} from './support/scratch.js'

/** The bytes every writer sends: byte i of a stream is a simple function of i. */
function pattern(length: number, from = 0): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = ((from + i) * 31 + 7) & 0xff
  return b
}

/** A child that opens `target` for writing and sends `total` pattern bytes in pieces of `piece`, pausing `delayMs` between them. */
const WRITER = `
const fs = require('node:fs')
const [target, total, piece, delayMs] = [process.argv[1], ...process.argv.slice(2).map(Number)]
const fd = fs.openSync(target, 'w')
const pattern = (n, from) => { const b = Buffer.allocUnsafe(n); for (let i = 0; i < n; i++) b[i] = ((from + i) * 31 + 7) & 0xff; return b }
let sent = 0
const next = () => {
  if (sent >= total) { fs.closeSync(fd); return }
  const n = Math.min(piece, total - sent)
  const b = pattern(n, sent)
  let off = 0
  while (off < n) off += fs.writeSync(fd, b, off, n - off)
  sent += n
  setTimeout(next, delayMs)
}
next()
`

interface Child {
  exited: Promise<number | null>
}

function writer(target: string, total: number, piece: number, delayMs: number): Child {
  const child = spawn(process.execPath, ['-e', WRITER, target, String(total), String(piece), String(delayMs)], {stdio: ['ignore', 'ignore', 'inherit']})
  return {exited: new Promise((resolve, reject) => child.once('error', reject).once('exit', (code) => resolve(code)))}
}

/** Runs a command with `fd` as its stdin and returns what it wrote to stdout. */
function readerChild(cmd: string, args: string[], fd: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {stdio: [fd, 'pipe', 'inherit']})
    const chunks: Buffer[] = []
    child.stdout!.on('data', (c: Buffer) => chunks.push(c))
    child.once('error', reject)
    child.once('close', (code) => (code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`${cmd} exited ${code}`))))
  })
}

const scratch = scratchDir('fd-source')

describe('FdByteSource on a regular file', () => {
  it('reads exactly the lengths asked for, in chunks, and tracks the offset', async () => {
    const data = pattern(300_000)
    const file = scratch.name('plain')
    fs.writeFileSync(file, data)
    const input = await openForReading(file)
    try {
      expect(input.size).toBe(data.length)
      const src = new FdByteSource(input.fd)
      expect(src.offset).toBe(0)
      expect(await src.read(0)).toHaveLength(0)
      const a = await src.read(13)
      expect(a).toEqual(data.subarray(0, 13))
      // Larger than one 64 KiB chunk: several read(2) calls into one buffer.
      const b = await src.read(200_000)
      expect(b.length).toBe(200_000)
      expect(b.equals(data.subarray(13, 200_013))).toBe(true)
      expect(src.offset).toBe(200_013)
      // A short read at EOF, then empty reads.
      const c = await src.read(100_000 + 50)
      expect(c.length).toBe(data.length - 200_013)
      expect(c.equals(data.subarray(200_013))).toBe(true)
      expect(src.offset).toBe(data.length)
      expect(await src.read(8)).toHaveLength(0)
      expect(src.offset).toBe(data.length)
    } finally {
      await input.close()
    }
  })

  it('honours a small chunk size and a start offset', async () => {
    const data = pattern(1000)
    const file = scratch.name('small-chunks')
    fs.writeFileSync(file, data)
    const input = await openForReading(file)
    try {
      const src = new FdByteSource(input.fd, {chunkSize: 7, offset: 4096})
      expect((await src.read(999)).equals(data.subarray(0, 999))).toBe(true)
      expect(src.offset).toBe(4096 + 999)
      expect(await src.read(5)).toEqual(data.subarray(999))
    } finally {
      await input.close()
    }
  })

  it('leaves the rest of a shared file to the next reader of the fd', async () => {
    const data = pattern(100_000)
    const file = scratch.name('shared')
    fs.writeFileSync(file, data)
    const input = await openForReading(file)
    try {
      const src = new FdByteSource(input.fd)
      expect((await src.read(12_345)).equals(data.subarray(0, 12_345))).toBe(true)
      const rest = await readerChild('cat', [], input.fd)
      expect(rest.length).toBe(data.length - 12_345)
      expect(rest.equals(data.subarray(12_345))).toBe(true)
    } finally {
      await input.close()
    }
  })

  it('refuses a second read while one is in progress, and bad arguments', async () => {
    const file = scratch.name('busy')
    fs.writeFileSync(file, pattern(10))
    const input = await openForReading(file)
    try {
      const src = new FdByteSource(input.fd)
      const first = src.read(5)
      await expect(src.read(5)).rejects.toThrow(/already in progress/)
      expect(await first).toEqual(pattern(5))
      await expect(src.read(-1)).rejects.toThrow(RangeError)
      await expect(src.read(1.5)).rejects.toThrow(RangeError)
      expect(() => new FdByteSource(-1)).toThrow(RangeError)
    } finally {
      await input.close()
    }
  })

  it('reports open errors as errno exceptions with a plain text', async () => {
    const missing = scratch.name('does-not-exist')
    const err = await openForReading(missing).catch((e: unknown) => e)
    expect((err as NodeJS.ErrnoException).code).toBe('ENOENT')
    expect(errnoText(err)).toBe('no such file or directory')
    const isDir = await openForReading(scratch.dir).catch((e: unknown) => e)
    expect((isDir as NodeJS.ErrnoException).code).toBe('EISDIR')
  })

  it('surfaces a read error that is not EAGAIN', async () => {
    const src = new FdByteSource(1_000_000)
    await expect(src.read(8)).rejects.toMatchObject({code: 'EBADF'})
  })
})

describe('FdByteSource on a pipe', () => {
  it('reads exact lengths across partial writes and returns a short read at EOF', async () => {
    const fifo = scratch.fifo()
    const total = 50_000
    const child = writer(fifo, total, 1_000, 2)
    // Opening a FIFO for reading waits (in the thread pool) for the writer to open it.
    const input = await openForReading(fifo)
    try {
      const src = new FdByteSource(input.fd)
      const data = pattern(total)
      let at = 0
      // Sizes that straddle the writer's 1000-byte pieces.
      for (const n of [3, 997, 1_001, 2_500, 7, 16_384, 10_000]) {
        const got = await src.read(n)
        expect(got.length).toBe(n)
        expect(got.equals(data.subarray(at, at + n))).toBe(true)
        at += n
      }
      const last = await src.read(total) // more than is left: EOF after the rest
      expect(last.length).toBe(total - at)
      expect(last.equals(data.subarray(at))).toBe(true)
      expect(src.offset).toBe(total)
      expect(await src.read(1)).toHaveLength(0)
      expect(await child.exited).toBe(0)
    } finally {
      await input.close()
    }
  })

  it('does not read ahead: after N bytes, a second reader of the fd gets exactly the rest', async () => {
    const fifo = scratch.fifo()
    const total = 40_000
    const child = writer(fifo, total, 333, 1)
    const input = await openForReading(fifo)
    try {
      const src = new FdByteSource(input.fd)
      const n = 10_007
      const mine = await src.read(n)
      expect(mine.equals(pattern(n))).toBe(true)
      const rest = await readerChild('head', ['-c', String(total)], input.fd)
      expect(rest.length).toBe(total - n)
      expect(rest.equals(pattern(total - n, n))).toBe(true)
      expect(await child.exited).toBe(0)
    } finally {
      await input.close()
    }
  })

  it('waits out EAGAIN on a non-blocking pipe', async () => {
    const fifo = scratch.fifo()
    // Open the read end non-blocking (as a shell's stdin may be), and hold a write end ourselves
    // so the pipe does not look ended before the child opens it.
    const rfd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    const hold = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
    try {
      const total = 20_000
      const child = writer(fifo, total, 2_000, 15)
      const src = new FdByteSource(rfd)
      const got = await src.read(total)
      expect(got.length).toBe(total)
      expect(got.equals(pattern(total))).toBe(true)
      expect(src.eagainWaits).toBeGreaterThan(0)
      expect(await child.exited).toBe(0)
      fs.closeSync(hold)
      // No writer left: EOF, not EAGAIN forever.
      expect(await src.read(10)).toHaveLength(0)
    } finally {
      fs.closeSync(rfd)
      try {
        fs.closeSync(hold)
      } catch {
        // already closed
      }
    }
  })
})

describe('ReplaySource', () => {
  it('gives back a peeked prefix, then reads on, keeping stream offsets', async () => {
    const data = pattern(100)
    const inner = new BufferSource(data)
    const head = await inner.read(8)
    const src = new ReplaySource(head, inner)
    expect(src.offset).toBe(0)
    expect(await src.read(3)).toEqual(data.subarray(0, 3))
    expect(src.offset).toBe(3)
    expect(await src.read(10)).toEqual(data.subarray(3, 13))
    expect(src.offset).toBe(13)
    expect(await src.read(200)).toEqual(data.subarray(13))
    expect(src.offset).toBe(100)
  })

  it('returns a short read when the source ends inside the request', async () => {
    const inner = new BufferSource(pattern(10))
    const src = new ReplaySource(await inner.read(8), inner)
    expect(await src.read(8)).toEqual(pattern(8))
    expect(await src.read(8)).toEqual(pattern(2, 8))
    expect(await src.read(8)).toHaveLength(0)
  })
})
