/**
 * SyncFdSource, the helper's ByteSource: exact synchronous reads over FIFOs, short at EOF, EAGAIN on
 * non-blocking fds, and its pool: large reads reuse memory once released, never before; a view of a
 * released buffer (a decoded PAGE_DATA record's pages) releases it; the pool stays bounded. Also a
 * whole libxc stream read through it by LibxcReader, releasing each PAGE_DATA record, with one
 * record's worth of memory allocated in all.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import {describe, expect, it} from 'vitest'

import {SyncFdSource, fdFlags} from '../src/toolstack/fd/index.js'
import {BufferSource, LibxcReader} from '../src/toolstack/stream/index.js'
import {libxcStream} from './support/synthetic-guest.js'
import {scratchDir} from './support/scratch.js'

function pattern(length: number, from = 0): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = ((from + i) * 7 + 1) & 0xff
  return b
}

const scratch = scratchDir('sync-source')

/** A FIFO's read end (blocking unless asked) fed by `cat FILE` or a slow node writer; the data is in `data`. */
function feed(data: Buffer, opts: {nonBlocking?: boolean; slow?: boolean} = {}): {fd: number; done: Promise<void>} {
  const file = scratch.name('data')
  const fifo = scratch.fifo()
  fs.writeFileSync(file, data)
  const rnb = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  const args = opts.slow
    ? [process.execPath, ['-e', `const fs=require('fs');const d=fs.readFileSync(process.argv[1]);let o=0;const t=setInterval(()=>{if(o>=d.length){clearInterval(t);return}const k=Math.min(3000,d.length-o);let w=0;while(w<k)w+=fs.writeSync(1,d,o+w,k-w);o+=k},5)`, file]] as const
    : ['cat', [file]] as const
  const w = fs.openSync(fifo, 'w')
  const child = spawn(args[0], [...args[1]], {stdio: ['ignore', w, 'inherit']})
  fs.closeSync(w)
  let fd = rnb
  if (!opts.nonBlocking) {
    fd = fs.openSync(fifo, 'r')
    fs.closeSync(rnb)
  }
  fs.unlinkSync(fifo)
  return {fd, done: new Promise((resolve) => child.once('close', () => resolve()))}
}

describe('SyncFdSource', () => {
  it('reads exact lengths, keeps the offset, and is short only at EOF', async () => {
    const data = pattern(300000)
    const {fd, done} = feed(data, {slow: true})
    const src = new SyncFdSource(fd, {offset: 100, pieceSize: 4096})
    expect(src.readSync(5).equals(data.subarray(0, 5))).toBe(true)
    expect(src.offset).toBe(105)
    const big = await src.read(200000)
    expect(big.equals(data.subarray(5, 200005))).toBe(true)
    const rest = src.readSync(200000)
    expect(rest.length).toBe(100000 - 5)
    expect(rest.equals(data.subarray(200005))).toBe(true)
    expect(src.readSync(10).length).toBe(0)
    expect(src.offset).toBe(100 + data.length)
    expect(src.stats.syscalls).toBeGreaterThanOrEqual(Math.ceil(200000 / 4096))
    await done
    fs.closeSync(fd)
  })

  it('waits out EAGAIN on a non-blocking fd', async () => {
    const data = pattern(100000)
    const {fd, done} = feed(data, {nonBlocking: true, slow: true})
    expect(fdFlags(fd).nonBlocking).toBe(true)
    const src = new SyncFdSource(fd)
    expect(src.readSync(data.length).equals(data)).toBe(true)
    expect(src.stats.eagainWaits).toBeGreaterThan(0)
    await done
    fs.closeSync(fd)
  })

  it('reads into caller memory', async () => {
    const data = pattern(70000)
    const {fd, done} = feed(data)
    const src = new SyncFdSource(fd)
    const target = Buffer.alloc(80000)
    expect(src.readIntoSync(target, 10000, 70000)).toBe(70000)
    expect(target.subarray(10000).equals(data)).toBe(true)
    expect(() => src.readIntoSync(target, 79000, 2000)).toThrow(RangeError)
    await done
    fs.closeSync(fd)
  })

  it('reuses released memory for large reads, never memory still held', async () => {
    const rec = 4 * 1024 * 1024 + 8208
    const data = pattern(rec * 4)
    const {fd, done} = feed(data)
    const src = new SyncFdSource(fd, {maxIdle: 2})
    const a = src.readSync(rec)
    const b = src.readSync(rec) // a still held: new memory
    expect(b.buffer).not.toBe(a.buffer)
    expect(a.equals(data.subarray(0, rec))).toBe(true)
    src.release(a)
    const c = src.readSync(rec - 4096) // a's memory again (a little smaller fits)
    expect(c.buffer).toBe(a.buffer)
    expect(c.equals(data.subarray(2 * rec, 3 * rec - 4096))).toBe(true)
    expect(b.equals(data.subarray(rec, 2 * rec))).toBe(true) // untouched
    // A view of pooled memory releases it (a decoded record's pages are views of its body).
    src.release(b.subarray(8208))
    const d = src.readSync(rec)
    expect(d.buffer).toBe(b.buffer)
    expect(() => src.release(b)).not.toThrow() // b's memory is leased again (as d): not a double release
    src.release(c)
    expect(() => src.release(c)).toThrow(/released twice/)
    src.release(Buffer.alloc(10)) // not ours: ignored
    expect(src.stats).toMatchObject({allocated: 2, reused: 2})
    fs.closeSync(fd)
    await done
  })

  it('does not hand a huge idle buffer to a small read, and keeps at most maxIdle', () => {
    const data = pattern(8 * 1024 * 1024)
    const file = scratch.name('plain')
    fs.writeFileSync(file, data)
    const fd = fs.openSync(file, 'r')
    const src = new SyncFdSource(fd, {maxIdle: 2, poolMinSize: 1024})
    const big = src.readSync(4 * 1024 * 1024)
    src.release(big)
    const small = src.readSync(2000) // 4 MiB is more than 4x too big: fresh memory
    expect(small.buffer).not.toBe(big.buffer)
    const held = [src.readSync(100000), src.readSync(100000), src.readSync(100000)]
    for (const h of held) src.release(h)
    expect(src.stats.idle).toBe(2)
    src.drain()
    expect(src.stats.idle).toBe(0)
    fs.closeSync(fd)
  })

  it('serves LibxcReader as a ByteSource; releasing each PAGE_DATA record keeps one record of memory', async () => {
    const stream = libxcStream({pages: 3000, seed: 5})
    const expected: string[] = []
    const ref = new LibxcReader(new BufferSource(stream), {streamType: 'plain'})
    await ref.readHeaders()
    while (!ref.ended) {
      const r = await ref.next()
      expected.push(JSON.stringify(r.record, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)))
    }
    const {fd, done} = feed(stream)
    const src = new SyncFdSource(fd)
    const reader = new LibxcReader(src, {streamType: 'plain'})
    await reader.readHeaders()
    const got: string[] = []
    let pageRecords = 0
    while (!reader.ended) {
      const r = await reader.next()
      got.push(JSON.stringify(r.record, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)))
      if (r.record.kind === 'PAGE_DATA') {
        pageRecords++
        for (const p of r.record.pages) src.release(p)
      }
    }
    expect(got).toEqual(expected)
    expect(pageRecords).toBeGreaterThan(3)
    expect(src.stats.allocated).toBe(1)
    expect(src.offset).toBe(stream.length)
    await done
    fs.closeSync(fd)
  })
})
