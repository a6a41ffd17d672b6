/** Foreign access to a simulated domain's memory: pread/pwrite on its memory file. */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'

import {kernelCopy, runPairs, runsEndAt, type KernelCopy} from '../../fd/index.js'
import {HypervisorError} from '../index.js'
import type {GuestMemory} from '../index.js'
import {checkPage, PAGE_SIZE, SPECIAL_PAGES} from './page.js'
import type {IntegrityProblem, IntegrityReport} from '../index.js'

export class FileGuestMemory implements GuestMemory {
  private fd: number | undefined

  constructor(
    fd: number,
    readonly pages: number,
    readonly domid: number,
    /** Batches go through the native module when it is there, else through Node's fs run by run. */
    private readonly copy: KernelCopy | undefined = kernelCopy(),
  ) {
    this.fd = fd
  }

  static open(path: string, pages: number, domid: number, copy: KernelCopy | undefined = kernelCopy()): FileGuestMemory {
    let fd: number
    try {
      fd = fs.openSync(path, 'r+')
    } catch (e) {
      throw new HypervisorError('backend-failure', `domain ${domid}: cannot open its memory ${path}: ${(e as Error).message}`, domid)
    }
    return new FileGuestMemory(fd, pages, domid, copy)
  }

  /** The memory file, read and written at pfn * 4096 (undefined once closed). */
  get pagesFd(): number | undefined {
    return this.fd
  }

  async readPages(pfns: readonly number[], into: Buffer): Promise<void> {
    this.io(pfns, into, false)
  }

  async writePages(pfns: readonly number[], data: Buffer): Promise<void> {
    this.io(pfns, data, true)
  }

  async close(): Promise<void> {
    if (this.fd === undefined) return
    fs.closeSync(this.fd)
    this.fd = undefined
  }

  /** One pread/pwrite per run of consecutive pfns (consecutive in the list and in guest memory). */
  private io(pfns: readonly number[], buf: Buffer, write: boolean): void {
    const fd = this.fd
    if (fd === undefined) throw new HypervisorError('bad-state', `domain ${this.domid}: its memory mapping is closed`, this.domid)
    const n = pfns.length
    if (buf.length < n * PAGE_SIZE) {
      throw new HypervisorError('bad-request', `domain ${this.domid}: a buffer of ${buf.length} bytes cannot hold ${n} pages`, this.domid)
    }
    for (const pfn of pfns) {
      if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.pages) {
        throw new HypervisorError('bad-request', `domain ${this.domid}: pfn ${pfn} is outside its ${this.pages} pages`, this.domid)
      }
    }
    const runs: {offset: number; length: number}[] = []
    for (let i = 0; i < n; ) {
      let j = i + 1
      while (j < n && pfns[j] === pfns[j - 1]! + 1) j++
      runs.push({offset: pfns[i]! * PAGE_SIZE, length: (j - i) * PAGE_SIZE})
      i = j
    }
    // The native module does a batch in one call: a pread/pwrite per run without a trip through
    // Node's fs for each (scattered pages: 1.3 instead of 1.8 us a page).
    const copy = this.copy
    let done = 0
    try {
      if (copy) done = copy.fileRuns(fd, buf, runPairs(runs), write)
      else
        for (const run of runs) {
          const k = this.run(fd, buf, done, run, write)
          done += k
          if (k < run.length) break
        }
    } catch (e) {
      throw new HypervisorError('backend-failure', `domain ${this.domid}: ${write ? 'writing' : 'reading'} its memory failed: ${(e as Error).message}`, this.domid)
    }
    if (done < n * PAGE_SIZE) throw new HypervisorError('backend-failure', `domain ${this.domid}: memory file ended at byte ${runsEndAt(runs, done)}`, this.domid)
  }

  /** One run through Node's fs; the bytes done (fewer only at the end of the file). */
  private run(fd: number, buf: Buffer, bufOff: number, run: {offset: number; length: number}, write: boolean): number {
    let done = 0
    while (done < run.length) {
      const k = write
        ? fs.writeSync(fd, buf, bufOff + done, run.length - done, run.offset + done)
        : fs.readSync(fd, buf, bufOff + done, run.length - done, run.offset + done)
      if (k <= 0) break
      done += k
    }
    return done
  }
}


const CHUNK_PAGES = 1024
const MAX_REPORTED = 16

/** Checks every page of a memory file. `step`: generations above it are flagged (a page from the future). */
export function verifyMemoryFile(path: string, pages: number, domid: number, step: number | undefined): IntegrityReport {
  const fd = fs.openSync(path, 'r')
  try {
    const chunk = Buffer.alloc(CHUNK_PAGES * PAGE_SIZE)
    const scratch = Buffer.alloc(PAGE_SIZE)
    const pattern = Buffer.alloc(16)
    const firstSpecial = pages - SPECIAL_PAGES
    const bad: IntegrityProblem[] = []
    let badCount = 0
    let maxGeneration = 0
    for (let base = 0; base < pages; base += CHUNK_PAGES) {
      const n = Math.min(CHUNK_PAGES, pages - base)
      let done = 0
      while (done < n * PAGE_SIZE) {
        const k = fs.readSync(fd, chunk, done, n * PAGE_SIZE - done, base * PAGE_SIZE + done)
        if (k <= 0) break
        done += k
      }
      if (done < n * PAGE_SIZE) chunk.fill(0, done)
      for (let i = 0; i < n; i++) {
        const pfn = base + i
        const v = checkPage(chunk, i * PAGE_SIZE, pfn, pfn >= firstSpecial, scratch, pattern)
        let reason: string | undefined
        if (!v.ok) reason = v.reason
        else if (step !== undefined && v.gen > step) reason = `generation ${v.gen} is newer than the vCPU's step ${step}`
        else maxGeneration = Math.max(maxGeneration, v.gen)
        if (reason !== undefined) {
          badCount++
          if (bad.length < MAX_REPORTED) bad.push({pfn, reason})
        }
      }
    }
    return {domid, pages, ok: badCount === 0, badCount, bad, maxGeneration, ...(step !== undefined ? {step} : {})}
  } finally {
    fs.closeSync(fd)
  }
}

/** sha256 over the memory file followed by the vCPU context. */
export function checksumMemoryFile(path: string, pages: number, context: Buffer): string {
  const fd = fs.openSync(path, 'r')
  try {
    const hash = crypto.createHash('sha256')
    const chunk = Buffer.alloc(CHUNK_PAGES * PAGE_SIZE)
    const total = pages * PAGE_SIZE
    for (let off = 0; off < total; ) {
      const want = Math.min(chunk.length, total - off)
      const k = fs.readSync(fd, chunk, 0, want, off)
      if (k <= 0) throw new Error(`memory file ${path} ends at byte ${off}`)
      hash.update(chunk.subarray(0, k))
      off += k
    }
    hash.update(context)
    return hash.digest('hex')
  } finally {
    fs.closeSync(fd)
  }
}
