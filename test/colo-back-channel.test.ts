/**
 * The COLO primary's read of the secondary's dirty pfn list (helper/dirty-list.ts) on a real FIFO,
 * as Xen 4.17 secondaries (and ours) write it, 8-byte record header, and as Xen 4.18+ ones do,
 * 16-byte header with a NULL pointer (XEN-FACTS §12.1): the same pfns either way, the 4.18 form
 * noticed once, and the channel left exactly at the next record (SVM_READY), which the toolstack
 * reads with readCheckpointState.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'

import {afterEach, describe, expect, it} from 'vitest'

import {openFdPair, type FdPair} from '../src/toolstack/fd/index.js'
import {dirtyListReader, QUIRK_WAIT_MS} from '../src/toolstack/save-helper/dirty-list.js'
import {readCheckpointState} from '../src/toolstack/libxl/checkpoint-state.js'
import {encodeLibxlRecord, StreamError} from '../src/toolstack/stream/index.js'

const DIRTY_LIST = 0x0f
let pair: FdPair | undefined

afterEach(() => {
  pair?.close()
  pair = undefined
})

/** The record as a 4.17 secondary writes it: type, length, the u64 pfns. */
function list417(pfns: readonly number[]): Buffer {
  const b = Buffer.alloc(8 + 8 * pfns.length)
  b.writeUInt32LE(DIRTY_LIST, 0)
  b.writeUInt32LE(8 * pfns.length, 4)
  pfns.forEach((p, i) => b.writeBigUInt64LE(BigInt(p), 8 + 8 * i))
  return b
}

/** As Xen 4.18+ writes it: struct xc_sr_record (type, length, NULL data pointer), then the pfns. */
function list418(pfns: readonly number[]): Buffer {
  const b = list417(pfns)
  return Buffer.concat([b.subarray(0, 8), Buffer.alloc(8), b.subarray(8)])
}

const svmReady = (): Buffer => Buffer.concat(encodeLibxlRecord({kind: 'CHECKPOINT_STATE', state: 'SVM_READY'}))

async function channel(): Promise<{write: (b: Buffer) => void; writeLater: (b: Buffer, ms: number) => Promise<void>; recvFd: number}> {
  pair = await openFdPair()
  const w = pair.childStdout
  return {
    write: (b) => fs.writeSync(w, b),
    // Another process writes, so the bytes come while this one is blocked in a read.
    writeLater: (b, ms) => {
      const child = spawn(process.execPath, ['-e', `setTimeout(() => require('fs').writeSync(1, Buffer.from('${b.toString('hex')}', 'hex')), ${ms})`], {stdio: ['ignore', w, 'inherit']})
      return new Promise((resolve, reject) => child.on('error', reject).on('exit', () => resolve()))
    },
    recvFd: pair.recvFd,
  }
}

/** One checkpoint's list as `form` writes it, read; then SVM_READY. Returns the ms the read took. */
async function checkpoint(ch: Awaited<ReturnType<typeof channel>>, read: () => Promise<number[]>, form: (p: readonly number[]) => Buffer, pfns: number[]): Promise<number> {
  ch.write(form(pfns))
  const t0 = performance.now()
  expect(await read()).toEqual(pfns)
  const ms = performance.now() - t0
  ch.write(svmReady())
  await readCheckpointState(ch.recvFd, 'SVM_READY')
  return ms
}

describe('the secondary dirty pfn list on the back channel', () => {
  const cases: [string, (p: readonly number[]) => Buffer, number[], boolean][] = [
    ['4.17 form', list417, [3, 9, 12, 4095], false],
    ['4.18+ form', list418, [3, 9, 12, 4095], true],
    ['4.18+ form, pfn 0 dirty', list418, [0, 5, 7], true],
    ['4.17 form, pfn 0 dirty (a leading 0 that is a pfn)', list417, [0, 5, 7], false],
    ['4.17 form, empty', list417, [], false],
    ['4.18+ form, empty', list418, [], true],
  ]
  for (const [name, form, pfns, quirk] of cases) {
    it(`${name}: reads ${JSON.stringify(pfns)}, then SVM_READY is the next record`, async () => {
      const ch = await channel()
      let noticed = 0
      const read = dirtyListReader(ch.recvFd, () => noticed++)
      ch.write(form(pfns))
      const t0 = performance.now()
      expect(await read()).toEqual(pfns)
      const waited = performance.now() - t0
      expect(noticed).toBe(quirk ? 1 : 0)
      // Only a list that starts with 0 waits to tell the forms apart, and not longer than the bound.
      if (pfns[0] !== 0) expect(waited).toBeLessThan(QUIRK_WAIT_MS / 2)
      ch.write(svmReady())
      await readCheckpointState(ch.recvFd, 'SVM_READY')
    })
  }

  it('notices the 4.18+ form once over many checkpoints', async () => {
    const ch = await channel()
    let noticed = 0
    const read = dirtyListReader(ch.recvFd, () => noticed++)
    for (let i = 0; i < 5; i++) {
      ch.write(list418([0, i + 1]))
      expect(await read()).toEqual([0, i + 1])
      ch.write(svmReady())
      await readCheckpointState(ch.recvFd, 'SVM_READY')
    }
    expect(noticed).toBe(1)
  })

  it('learns the 4.17 form from a list that starts with another pfn, and then never waits for pfn 0', async () => {
    const ch = await channel()
    const read = dirtyListReader(ch.recvFd, () => {})
    // Not known yet: a list with pfn 0 dirty waits to see whether 8 more bytes follow.
    expect(await checkpoint(ch, read, list417, [0, 4])).toBeGreaterThanOrEqual(QUIRK_WAIT_MS * 0.9)
    expect(read.form()).toBe('unknown')
    await checkpoint(ch, read, list417, [2, 4])
    expect(read.form()).toBe('4.17')
    for (let i = 0; i < 5; i++) expect(await checkpoint(ch, read, list417, [0, i + 1])).toBeLessThan(QUIRK_WAIT_MS / 2)
    expect(await checkpoint(ch, read, list417, [])).toBeLessThan(QUIRK_WAIT_MS / 2)
  })

  it('once the 4.18+ form is known, waits for a list\'s last pfn however late it comes', async () => {
    const ch = await channel()
    const read = dirtyListReader(ch.recvFd, () => {})
    await checkpoint(ch, read, list418, [1, 2])
    expect(read.form()).toBe('4.18')
    // The record but its last pfn now, that pfn well after the bound an unknown form waits.
    const rec = list418([7, 8, 9])
    ch.write(rec.subarray(0, rec.length - 8))
    const late = ch.writeLater(rec.subarray(rec.length - 8), QUIRK_WAIT_MS * 2)
    expect(await read()).toEqual([7, 8, 9])
    await late
    ch.write(svmReady())
    await readCheckpointState(ch.recvFd, 'SVM_READY')
  })

  it('reads a 4.18+ list whose last 8 bytes came in part before the check and in part after it', async () => {
    const ch = await channel()
    const read = dirtyListReader(ch.recvFd, () => {})
    const rec = list418([0, 3])
    ch.write(rec.subarray(0, rec.length - 5))
    const late = ch.writeLater(rec.subarray(rec.length - 5), QUIRK_WAIT_MS * 2)
    expect(await read()).toEqual([0, 3])
    await late
    expect(read.form()).toBe('4.18')
  })

  it('refuses a 4.18+ header whose pointer is not NULL once the form is known, naming the record', async () => {
    const ch = await channel()
    const read = dirtyListReader(ch.recvFd, () => {})
    await checkpoint(ch, read, list418, [5])
    const bad = list418([6, 7])
    bad.writeBigUInt64LE(0xdeadn, 8)
    ch.write(bad)
    const err = await read().catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StreamError)
    expect((err as StreamError).message).toMatch(/CHECKPOINT_DIRTY_PFN_LIST.*pointer is not NULL \(0xdead\)/)
  })

  // 12 bytes: a pfn and a half; 4 bytes: less than one pfn (once read as a RangeError, not a StreamError).
  for (const length of [12, 4]) {
    it(`refuses a list of ${length} bytes (not a multiple of 8), naming the back channel record`, async () => {
      const ch = await channel()
      const read = dirtyListReader(ch.recvFd, () => {})
      const b = Buffer.alloc(8 + length)
      b.writeUInt32LE(DIRTY_LIST, 0)
      b.writeUInt32LE(length, 4)
      ch.write(Buffer.concat([b, Buffer.alloc(8 - (length % 8))]))
      const err = await read().catch((e: unknown) => e)
      expect(err).toBeInstanceOf(StreamError)
      expect((err as StreamError).format).toBe('back-channel')
      expect((err as StreamError).code).toBe('bad-length')
      expect((err as StreamError).message).toContain('CHECKPOINT_DIRTY_PFN_LIST')
    })
  }

  it('refuses another record where the list is due (libxc: "Expect dirty bitmap record")', async () => {
    const ch = await channel()
    const read = dirtyListReader(ch.recvFd, () => {})
    ch.write(svmReady())
    const err = await read().catch((e: unknown) => e)
    expect((err as Error).message).toContain('Expect dirty bitmap record, but received 5')
  })
})
