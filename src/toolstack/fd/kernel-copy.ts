/**
 * Moving bytes fd to fd inside the kernel (native/kernel-copy.c, built by `npm run build` into
 * dist/native/kernel-copy.node): copy_file_range between files, splice through pipes, sendfile into
 * sockets, and a copy through a C buffer for whatever else. The save/restore helper uses it for page
 * data, whose bytes then never enter JavaScript memory: the page phase of a save or restore goes at
 * the speed of `cp` instead of a read into a buffer and a write out of it.
 *
 * The module is optional. When it is missing (no C compiler or Node headers at build time), cannot
 * be loaded, or XL_TS_KERNEL_COPY=0 is set, `kernelCopy()` is undefined and `kernelCopyUnavailable()`
 * says why; callers then copy through their own buffers, with the same bytes on the wire.
 *
 * Sharing. Spliced into a pipe or sent into a socket, a file's page may travel by reference: what
 * leaves is the page as it is when the far side reads it, not when `move` returned. So `share` is
 * only set for pages sent while the guest runs: the dirty log catches any write after the round's
 * clean, and the page is sent again. A suspended guest's pages are copied, since it may run again
 * (after a checkpoint, a failed migration, save -c) before the far side has read them.
 */
import * as fs from 'node:fs'
import {createRequire} from 'node:module'
import * as path from 'node:path'

import {PACKAGE_ROOT} from '../entry-points.js'
import {FdError, errnoCode} from './errors.js'

export interface KernelCopy {
  /**
   * Moves `length` bytes from `inFd` (at `inOffset`, or its own position when -1) to `outFd` (at
   * `outOffset`, or its position when -1). Returns the bytes moved: fewer only when the input ended.
   * Never reads past `length`. Throws an Error with Node's `code`, `errno` and `syscall`.
   */
  move(inFd: number, inOffset: number, outFd: number, outOffset: number, length: number, share: boolean): number
  /**
   * Moves runs of a file (`runs`: offset, length pairs), in order, to `outFd` at its position.
   * Into a file, or with `share` into a pipe or socket, each run goes as `move` sends it; a copy
   * into a stream `pread`s the runs into one buffer and writes it 1 MiB at a time. Returns the bytes moved: fewer only when
   * the file ends inside a run.
   */
  moveRuns(fileFd: number, runs: Float64Array, outFd: number, share: boolean): number
  /**
   * `pread` (write false) or `pwrite` (write true) of runs of a file (offset, length pairs), back
   * to back in `buffer`. Returns the bytes: fewer only when a read meets the end of the file.
   */
  fileRuns(fd: number, buffer: Buffer, runs: Float64Array, write: boolean): number
  /** Asks for a pipe of `bytes` (F_SETPIPE_SZ); 0 reads the size. Returns the size it has. */
  pipeSize(fd: number, bytes: number): number
}

/** Set to 0 to copy pages through JavaScript buffers even where the module loads. */
export const KERNEL_COPY_ENV = 'XL_TS_KERNEL_COPY'
/** Where scripts/build-native.mjs puts the module. */
export const KERNEL_COPY_MODULE = path.join(PACKAGE_ROOT, 'dist', 'native', 'kernel-copy.node')

function load(): {copy?: KernelCopy; why?: string} {
  if (process.env[KERNEL_COPY_ENV] === '0') return {why: `${KERNEL_COPY_ENV}=0`}
  if (!fs.existsSync(KERNEL_COPY_MODULE)) return {why: `${KERNEL_COPY_MODULE} was not built`}
  try {
    const mod = createRequire(import.meta.url)(KERNEL_COPY_MODULE) as Partial<KernelCopy>
    if (typeof mod.move !== 'function' || typeof mod.moveRuns !== 'function' || typeof mod.fileRuns !== 'function' || typeof mod.pipeSize !== 'function') return {why: `${KERNEL_COPY_MODULE} is not the kernel copy module`}
    return {copy: mod as KernelCopy}
  } catch (err) {
    return {why: `${KERNEL_COPY_MODULE} cannot be loaded: ${(err as Error).message}`}
  }
}

/** One move, as KernelCopy.move takes it. */
export interface KernelMove {
  readonly inFd: number
  /** -1: the fd's own position. */
  readonly inOffset: number
  readonly outFd: number
  readonly outOffset: number
  readonly length: number
  readonly share: boolean
}

/**
 * `copy.move`, with a failure reported as the raw-io functions report theirs: an FdError naming
 * what the bytes are and the stream's fd, with the errno and what was being done.
 */
export function moveOrFail(copy: KernelCopy, m: KernelMove, what: string, streamFd: number, doing: string): number {
  try {
    return copy.move(m.inFd, m.inOffset, m.outFd, m.outOffset, m.length, m.share)
  } catch (err) {
    const code = errnoCode(err)
    throw new FdError('io', what, streamFd, `${doing} failed: ${code ?? String(err)}`, {expected: m.length, done: 0, ...(code ? {errno: code} : {}), cause: err})
  }
}

/** Runs as `moveRuns` and `fileRuns` take them: offset, length pairs. */
export function runPairs(runs: readonly {readonly offset: number; readonly length: number}[]): Float64Array {
  const pairs = new Float64Array(runs.length * 2)
  runs.forEach((r, i) => {
    pairs[2 * i] = r.offset
    pairs[2 * i + 1] = r.length
  })
  return pairs
}

/** Where in the file a move or read of `runs` stopped that did only `done` bytes of them. */
export function runsEndAt(runs: readonly {readonly offset: number; readonly length: number}[], done: number): number {
  let left = done
  for (const r of runs) {
    if (left < r.length) return r.offset + left
    left -= r.length
  }
  const last = runs[runs.length - 1]
  return last ? last.offset + last.length : 0
}

/** `copy.moveRuns`, a failure reported as `moveOrFail` reports one. */
export function moveRunsOrFail(copy: KernelCopy, fileFd: number, runs: Float64Array, outFd: number, share: boolean, what: string, doing: string): number {
  try {
    return copy.moveRuns(fileFd, runs, outFd, share)
  } catch (err) {
    const code = errnoCode(err)
    let expected = 0
    for (let i = 1; i < runs.length; i += 2) expected += runs[i]!
    throw new FdError('io', what, outFd, `${doing} failed: ${code ?? String(err)}`, {expected, done: 0, ...(code ? {errno: code} : {}), cause: err})
  }
}

let loaded: ReturnType<typeof load> | undefined

/** The kernel copy, when it is built and loads (loaded on first use). */
export function kernelCopy(): KernelCopy | undefined {
  loaded ??= load()
  return loaded.copy
}

/** Why `kernelCopy()` is undefined (for logs); undefined when it is there. */
export function kernelCopyUnavailable(): string | undefined {
  loaded ??= load()
  return loaded.why
}
