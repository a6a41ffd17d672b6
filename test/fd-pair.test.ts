/**
 * openFdPair: two FIFOs opened both ways at once, handed to a transport child (`sh -c RUNE`) as its
 * stdin and stdout, and nothing left on disk, on success or failure.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {FdError, fdFlags, openFdPair, readExact, readExactSync, writeAll, writeAllSync} from '../src/toolstack/fd/index.js'

function pattern(length: number, from = 0): Buffer {
  const b = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) b[i] = ((from + i) * 29 + 3) & 0xff
  return b
}

let base: string

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-ts-fd-pair-'))
})

afterAll(() => {
  fs.rmSync(base, {recursive: true, force: true})
})

function freshDir(name: string): string {
  const d = path.join(base, name)
  fs.mkdirSync(d)
  return d
}

function isOpen(fd: number): boolean {
  try {
    fs.fstatSync(fd)
    return true
  } catch {
    return false
  }
}

describe('openFdPair', () => {
  it('gives four blocking, close-on-exec FIFO fds and leaves nothing on disk', async () => {
    const tmpDir = freshDir('plain')
    const pair = await openFdPair({tmpDir})
    expect(fs.readdirSync(tmpDir)).toEqual([])
    const fds = [pair.childStdin, pair.childStdout, pair.sendFd, pair.recvFd]
    expect(new Set(fds).size).toBe(4)
    for (const fd of fds) {
      const f = fdFlags(fd)
      expect(f.nonBlocking).toBe(false)
      expect(f.cloexec).toBe(true)
      expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toMatch(/\(deleted\)$/)
    }
    expect(fdFlags(pair.childStdin).access).toBe('r')
    expect(fdFlags(pair.childStdout).access).toBe('w')
    expect(fdFlags(pair.sendFd).access).toBe('w')
    expect(fdFlags(pair.recvFd).access).toBe('r')
    pair.close()
    pair.close()
    for (const fd of fds) expect(isOpen(fd)).toBe(false)
  })

  it('carries a stream both ways through `sh -c RUNE`, and EOF when the transport exits', async () => {
    const pair = await openFdPair()
    // The rune answers a banner, then copies what it gets back, like a receiver would.
    const child = spawn('sh', ['-c', 'printf "banner\\n"; exec cat'], {stdio: [pair.childStdin, pair.childStdout, 'inherit']})
    pair.closeChildEnds()
    const exited = new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)))
    const banner = await readExact(pair.recvFd, 7, {what: 'banner', eof: 'error'})
    expect(banner.toString()).toBe('banner\n')
    const data = pattern(2 * 1024 * 1024 + 5)
    // A writer and a reader at once: the pipes hold only 64 KiB each way.
    const [, back] = await Promise.all([
      writeAll(pair.sendFd, [data], {what: 'to transport'}).then(() => pair.closeSend()),
      readExact(pair.recvFd, data.length + 10, {what: 'from transport'}),
    ])
    expect(back.length).toBe(data.length) // short: EOF after the transport saw EOF and exited
    expect(back.equals(data)).toBe(true)
    expect(await exited).toBe(0)
    expect(readExactSync(pair.recvFd, 1).length).toBe(0)
    pair.close()
  })

  it('many at once, all distinct, nothing left behind', async () => {
    const tmpDir = freshDir('many')
    const pairs = await Promise.all(Array.from({length: 6}, () => openFdPair({tmpDir})))
    expect(fs.readdirSync(tmpDir)).toEqual([])
    const all = pairs.flatMap((p) => [p.childStdin, p.childStdout, p.sendFd, p.recvFd])
    expect(new Set(all).size).toBe(all.length)
    for (const p of pairs) {
      writeAllSync(p.sendFd, [Buffer.from('x')])
      expect(readExactSync(p.childStdin, 1).toString()).toBe('x')
      p.close()
    }
  })

  it('a directory that cannot be made: FdError fifo, nothing made', async () => {
    const err = await openFdPair({tmpDir: path.join(base, 'does-not-exist')}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(FdError)
    expect(err).toMatchObject({code: 'fifo', fd: -1})
    expect((err as Error).message).toMatch(/cannot make a private directory: ENOENT/)
  })

  it('mkfifo failing (not on PATH): FdError fifo, the private directory removed', async () => {
    const tmpDir = freshDir('no-mkfifo')
    const savedPath = process.env.PATH
    process.env.PATH = path.join(base, 'empty-bin')
    let err: unknown
    try {
      await openFdPair({tmpDir})
    } catch (e) {
      err = e
    } finally {
      process.env.PATH = savedPath
    }
    expect(err).toBeInstanceOf(FdError)
    expect(err).toMatchObject({code: 'fifo'})
    expect((err as Error).message).toMatch(/mkfifo failed/)
    expect(fs.readdirSync(tmpDir)).toEqual([])
  })
})
