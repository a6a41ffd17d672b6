/**
 * readExact / writeAll (sync and async) over real FIFOs and pipes with real processes at the other
 * end: exact lengths across partial transfers, no read-ahead, short reads and typed errors at EOF,
 * lists of more than IOV_MAX parts, non-blocking fds that answer EAGAIN, EPIPE, and the batching of
 * writes into calls of at most 16 KiB (a property test of WriteCursor under random partial writes).
 * Also fdFlags and reopenBlocking on non-blocking FIFOs and sockets.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as net from 'node:net'
import fc from 'fast-check'
import {describe, expect, it} from 'vitest'

import {
  FdError,
  IOV_MAX,
  WRITE_CHUNK,
  WriteCursor,
  blockingFd,
  fdFlags,
  readExact,
  readExactSync,
  reopenBlocking,
  sleepSync,
  writeAll,
  writeAllSync,
} from '../src/toolstack/fd/index.js'
import {scratchDir} from './support/scratch.js'

function pattern(length: number, from = 0): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = ((from + i) * 131 + 17) & 0xff
  return b
}

const scratch = scratchDir('raw-io')
const mkfifo = (): string => scratch.fifo()

/**
 * Runs `sh -c script` with `fd` as its stdin or stdout; resolves with what it wrote to stdout (into
 * a file: a pipe back to us would deadlock against a sync writer on this thread) and its exit code.
 */
function shell(script: string, io: {stdin?: number; stdout?: number}): {done: Promise<{code: number | null; out: Buffer}>} {
  const outFile = scratch.name('out')
  const outFd = io.stdout ?? fs.openSync(outFile, 'w')
  const child = spawn('sh', ['-c', script], {stdio: [io.stdin ?? 'ignore', outFd, 'inherit']})
  if (io.stdout === undefined) fs.closeSync(outFd)
  return {
    done: new Promise((resolve, reject) =>
      child.once('error', reject).once('close', (code) => {
        const out = io.stdout === undefined ? fs.readFileSync(outFile) : Buffer.alloc(0)
        if (io.stdout === undefined) fs.rmSync(outFile)
        resolve({code, out})
      }),
    ),
  }
}

/** Opens both ends of a new FIFO (read end first, non-blocking, so neither open waits). */
function fifoPair(opts: {readNonBlocking?: boolean; writeNonBlocking?: boolean} = {}): {r: number; w: number; close(): void} {
  const p = mkfifo()
  const rnb = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  const w = fs.openSync(p, fs.constants.O_WRONLY | (opts.writeNonBlocking ? fs.constants.O_NONBLOCK : 0))
  let r = rnb
  if (!opts.readNonBlocking) {
    r = fs.openSync(p, fs.constants.O_RDONLY)
    fs.closeSync(rnb)
  }
  fs.unlinkSync(p)
  const open = new Set([r, w])
  return {
    r,
    w,
    close() {
      for (const fd of open) fs.closeSync(fd)
      open.clear()
    },
  }
}

describe('WriteCursor', () => {
  it('cuts any list of parts into batches of <= chunk bytes and <= IOV_MAX parts, in order, across partial writes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({min: 0, max: 5000}), {maxLength: 40}),
        fc.integer({min: 256, max: 20000}),
        fc.array(fc.oneof(fc.constant(1), fc.double({min: 0.2, max: 1, noNaN: true})), {minLength: 1, maxLength: 20}),
        (sizes, chunk, fractions) => {
          let k = 0
          const parts = sizes.map((s) => pattern(s, (k += s)))
          const expected = Buffer.concat(parts)
          const cursor = new WriteCursor(parts, chunk)
          expect(cursor.total).toBe(expected.length)
          const written = Buffer.alloc(expected.length)
          let at = 0
          let i = 0
          while (cursor.done < cursor.total) {
            const batch = cursor.batch()
            const bytes = batch.reduce((a, b) => a + b.length, 0)
            expect(batch.length).toBeGreaterThan(0)
            expect(batch.length).toBeLessThanOrEqual(IOV_MAX)
            expect(bytes).toBeLessThanOrEqual(chunk)
            // The kernel takes some prefix of the batch (at least one byte).
            const take = Math.max(1, Math.floor(bytes * fractions[i++ % fractions.length]!))
            let left = take
            for (const part of batch) {
              if (left === 0) break
              const k = Math.min(left, part.length)
              part.copy(written, at, 0, k)
              at += k
              left -= k
            }
            cursor.advance(take)
          }
          expect(at).toBe(expected.length)
          expect(written.equals(expected)).toBe(true)
        },
      ),
      {numRuns: 200},
    )
  })

  it('takes at most IOV_MAX parts per call even when they are tiny', () => {
    const parts = Array.from({length: 3000}, (_, i) => pattern(3, i * 3))
    const cursor = new WriteCursor(parts, WRITE_CHUNK)
    const first = cursor.batch()
    expect(first.length).toBe(IOV_MAX)
    expect(first.every((p, i) => p === parts[i])).toBe(true) // whole parts are not copied or sliced
  })
})

describe('writeAllSync / writeAll', () => {
  it.each(['sync', 'async'] as const)('%s: a record iovec (header, pfns, 1024 pages) arrives exactly through a FIFO', async (mode) => {
    const {r, w} = fifoPair()
    const reader = shell('cat', {stdin: r})
    fs.closeSync(r)
    const guest = pattern(1024 * 4096)
    const parts = [pattern(16), pattern(8192, 5)]
    for (let i = 0; i < 1024; i++) parts.push(guest.subarray(i * 4096, (i + 1) * 4096))
    parts.push(Buffer.alloc(0), pattern(7, 3)) // an empty part and an odd tail
    const total = parts.reduce((a, p) => a + p.length, 0)
    const wrote = mode === 'sync' ? writeAllSync(w, parts, {what: 'test record'}) : await writeAll(w, parts, {what: 'test record'})
    expect(wrote).toBe(total)
    fs.closeSync(w)
    const {code, out} = await reader.done
    expect(code).toBe(0)
    expect(out.equals(Buffer.concat(parts))).toBe(true)
  })

  it('more parts than IOV_MAX', async () => {
    const {r, w} = fifoPair()
    const reader = shell('cat', {stdin: r})
    fs.closeSync(r)
    const parts = Array.from({length: 5000}, (_, i) => pattern(1 + (i % 13), i))
    writeAllSync(w, parts)
    await writeAll(w, parts)
    fs.closeSync(w)
    const {out} = await reader.done
    const one = Buffer.concat(parts)
    expect(out.equals(Buffer.concat([one, one]))).toBe(true)
  })

  it.each(['sync', 'async'] as const)('%s: a non-blocking fd whose reader is slow (EAGAIN) still gets every byte', async (mode) => {
    const {r, w} = fifoPair({writeNonBlocking: true})
    expect(fdFlags(w).nonBlocking).toBe(true)
    const reader = shell('sleep 0.3; cat', {stdin: r})
    fs.closeSync(r)
    const data = pattern(3 * 1024 * 1024 + 123)
    const wrote = mode === 'sync' ? writeAllSync(w, [data]) : await writeAll(w, [data])
    expect(wrote).toBe(data.length)
    fs.closeSync(w)
    const {out} = await reader.done
    expect(out.equals(data)).toBe(true)
  })

  it('a reader that has gone: FdError closed, EPIPE, with how far it got', async () => {
    const {r, w} = fifoPair()
    const reader = shell('head -c 100000 >/dev/null', {stdin: r})
    fs.closeSync(r)
    let err: unknown
    try {
      writeAllSync(w, [pattern(4 * 1024 * 1024)], {what: 'migration stream'})
    } catch (e) {
      err = e
    }
    await reader.done
    fs.closeSync(w)
    expect(err).toBeInstanceOf(FdError)
    const fe = err as FdError
    expect(fe.code).toBe('closed')
    expect(fe.errno).toBe('EPIPE')
    expect(fe.what).toBe('migration stream')
    expect(fe.done).toBeGreaterThanOrEqual(100000)
    expect(fe.expected).toBe(4 * 1024 * 1024)
    expect(fe.message).toMatch(/^migration stream \(fd \d+\): the reader has gone \(EPIPE\) after \d+ of 4194304 bytes$/)
  })

  it('a closed fd: FdError io, EBADF', async () => {
    const {r, w} = fifoPair()
    fs.closeSync(r)
    fs.closeSync(w)
    expect(() => writeAllSync(w, [pattern(10)])).toThrow(/EBADF/)
    await expect(writeAll(w, [pattern(10)], {what: 'x'})).rejects.toMatchObject({code: 'io', errno: 'EBADF'})
  })
})

describe('readExactSync / readExact', () => {
  /** A child that writes `total` pattern bytes into fd 1 in pieces of `piece`, sleeping between. */
  const slowWriter = (fd: number, total: number, piece: number, delayMs: number) => {
    const js = `const fs=require('fs');const [t,p,d]=process.argv.slice(1).map(Number);let s=0;const pat=(n,f)=>{const b=Buffer.allocUnsafe(n);for(let i=0;i<n;i++)b[i]=((f+i)*131+17)&255;return b};const next=()=>{if(s>=t)return;const n=Math.min(p,t-s);const b=pat(n,s);let o=0;while(o<n)o+=fs.writeSync(1,b,o,n-o);s+=n;setTimeout(next,d)};next()`
    const child = spawn(process.execPath, ['-e', js, String(total), String(piece), String(delayMs)], {stdio: ['ignore', fd, 'inherit']})
    return new Promise<void>((resolve) => child.once('close', () => resolve()))
  }

  it.each(['sync', 'async'] as const)('%s: exact lengths across small writes, then no read-ahead: a second reader gets the rest', async (mode) => {
    const {r, w} = fifoPair()
    const done = slowWriter(w, 50000, 777, 1)
    fs.closeSync(w)
    const read = (len: number) => (mode === 'sync' ? Promise.resolve(readExactSync(r, len, {pieceSize: 1000})) : readExact(r, len, {pieceSize: 1000}))
    const a = await read(3)
    const b = await read(20000)
    expect(a.equals(pattern(3))).toBe(true)
    expect(b.equals(pattern(20000, 3))).toBe(true)
    const rest = await shell('cat', {stdin: r}).done
    await done
    expect(rest.out.equals(pattern(50000 - 20003, 20003))).toBe(true)
    fs.closeSync(r)
  })

  it.each(['sync', 'async'] as const)('%s: short at EOF by default, FdError eof with eof: error', async (mode) => {
    const {r, w} = fifoPair()
    writeAllSync(w, [pattern(10)])
    fs.closeSync(w)
    const short = mode === 'sync' ? readExactSync(r, 4) : await readExact(r, 4)
    expect(short.length).toBe(4)
    const rest = mode === 'sync' ? readExactSync(r, 100) : await readExact(r, 100)
    expect(rest.equals(pattern(6, 4))).toBe(true)
    const none = mode === 'sync' ? readExactSync(r, 100) : await readExact(r, 100)
    expect(none.length).toBe(0)
    fs.closeSync(r)

    const p2 = fifoPair()
    writeAllSync(p2.w, [pattern(20)])
    fs.closeSync(p2.w)
    const call = () => (mode === 'sync' ? Promise.resolve().then(() => readExactSync(p2.r, 34, {what: 'ready message', eof: 'error'})) : readExact(p2.r, 34, {what: 'ready message', eof: 'error'}))
    const err = await call().then(
      () => undefined,
      (e: unknown) => e,
    )
    fs.closeSync(p2.r)
    expect(err).toBeInstanceOf(FdError)
    expect(err).toMatchObject({code: 'eof', what: 'ready message', expected: 34, done: 20})
    expect((err as Error).message).toMatch(/^ready message \(fd \d+\): ended after 20 of 34 bytes$/)
  })

  it('reads into a given buffer at an offset', () => {
    const {r, w} = fifoPair()
    writeAllSync(w, [pattern(100)])
    fs.closeSync(w)
    const into = Buffer.alloc(200)
    const got = readExactSync(r, 100, {into, intoOffset: 50})
    expect(got.buffer).toBe(into.buffer)
    expect(into.subarray(50, 150).equals(pattern(100))).toBe(true)
    expect(() => readExactSync(r, 100, {into, intoOffset: 150})).toThrow(RangeError)
    fs.closeSync(r)
  })

  it.each(['sync', 'async'] as const)('%s: a non-blocking fd with a slow writer (EAGAIN)', async (mode) => {
    const {r, w} = fifoPair({readNonBlocking: true})
    expect(fdFlags(r).nonBlocking).toBe(true)
    const done = slowWriter(w, 30000, 5000, 20)
    fs.closeSync(w)
    const got = mode === 'sync' ? readExactSync(r, 30000) : await readExact(r, 30000)
    expect(got.equals(pattern(30000))).toBe(true)
    await done
    fs.closeSync(r)
  })
})

describe('fdFlags / reopenBlocking', () => {
  it('reports access mode, O_NONBLOCK and close-on-exec', () => {
    const {r, w, close} = fifoPair({writeNonBlocking: true})
    expect(fdFlags(r)).toMatchObject({access: 'r', nonBlocking: false, cloexec: true})
    expect(fdFlags(w)).toMatchObject({access: 'w', nonBlocking: true, cloexec: true})
    close()
  })

  it('gives a blocking description of a non-blocking FIFO, write and read end', async () => {
    const {r, w} = fifoPair({writeNonBlocking: true, readNonBlocking: true})
    const w2 = reopenBlocking(w)
    const r2 = reopenBlocking(r)
    expect(fdFlags(w2)).toMatchObject({access: 'w', nonBlocking: false})
    expect(fdFlags(r2)).toMatchObject({access: 'r', nonBlocking: false})
    expect(fdFlags(w).nonBlocking).toBe(true) // the old description is untouched
    writeAllSync(w2, [pattern(1000)])
    expect(readExactSync(r2, 1000).equals(pattern(1000))).toBe(true)
    for (const fd of [r, w, r2, w2]) fs.closeSync(fd)
  })

  it('blockingFd: the fd itself when blocking, a reopened one when not', () => {
    const a = fifoPair()
    const same = blockingFd(a.w)
    expect(same).toMatchObject({fd: a.w, reopened: false})
    a.close()
    const b = fifoPair({writeNonBlocking: true})
    const re = blockingFd(b.w)
    expect(re.reopened).toBe(true)
    expect(fdFlags(re.fd).nonBlocking).toBe(false)
    re.close()
    re.close()
    b.close()
  })

  it('refuses a write end whose reader has gone, instead of blocking', () => {
    const {r, w} = fifoPair()
    fs.closeSync(r)
    expect(() => reopenBlocking(w, 'back channel')).toThrow(/back channel \(fd \d+\): its reader has gone/)
    fs.closeSync(w)
  })

  it('refuses a socket', async () => {
    const server = net.createServer((s) => s.end())
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
    const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()))
    const fd = (sock as unknown as {_handle: {fd: number}})._handle.fd
    let err: unknown
    try {
      reopenBlocking(fd, 'ssh socket')
    } catch (e) {
      err = e
    }
    sock.destroy()
    server.close()
    expect(err).toBeInstanceOf(FdError)
    expect(err).toMatchObject({code: 'not-reopenable'})
    expect((err as Error).message).toMatch(/is a socket/)
  })

  it('sleepSync sleeps', () => {
    const t0 = performance.now()
    sleepSync(20)
    expect(performance.now() - t0).toBeGreaterThanOrEqual(19)
  })
})
