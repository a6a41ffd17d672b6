/**
 * The fd map handed to a child: what libxl's dup_cloexec + libxl__exec do (XEN-FACTS §5.2), as one
 * function over Node's spawn.
 *
 * libxl forks, dup()s a passed fd that is 0, 1 or 2 to a higher number (so that it survives the
 * child getting its own stdin/stdout), clears close-on-exec on it, and puts the resulting number in
 * the helper's argv. With Node the child's fds are laid out by libuv from the `stdio` array: entry i
 * becomes the child's fd i (dup2 in the child, which clears close-on-exec; libuv first moves any
 * source fd that a lower entry would overwrite). So the map puts the child's own stdin, stdout and
 * stderr at 0-2 and every passed fd after them, at 3, 4, ...: a passed fd never lands on the child's
 * stdio, whatever its number is here (our fd 0 and fd 1 in `migrate-receive`, where the stream is our
 * stdin and the way back our stdout, become the helper's fds 3 and 4 while its own stdin and stdout
 * are the callback pipes), and the numbers the child sees are known before it starts, for its argv.
 *
 * Nothing else leaks: every fd Node opens has close-on-exec. What can leak is an fd we inherited
 * without it from whoever started us; `strays` lists those, so a caller can warn (Node cannot set
 * FD_CLOEXEC on an fd, and closing fds we do not own is not ours to do).
 */
import {spawn, type ChildProcess} from 'node:child_process'
import * as fs from 'node:fs'

import {FdError, errnoCode} from './errors.js'
import {inheritableFds} from './fd-flags.js'

/** A child's fd 0, 1 or 2: a new pipe, /dev/null, ours, or one of our fds. */
export type ChildStdio = 'pipe' | 'ignore' | 'inherit' | number

export interface FdMapSpec {
  readonly stdin: ChildStdio
  readonly stdout: ChildStdio
  readonly stderr: ChildStdio
  /** Our fds to pass, in the order of the child fds they become (3, 4, ...). */
  readonly pass: readonly number[]
}

export interface FdMap {
  /** The `stdio` option for a spawn (child_process's or execa's): the child's 0-2, then the passed fds. */
  readonly stdio: readonly [ChildStdio, ChildStdio, ChildStdio, ...number[]]
  /** The fd number the child sees for each entry of `pass`, in order: 3, 4, ... */
  readonly childFds: readonly number[]
  /** Our fds without close-on-exec that the child will inherit as well although not passed. */
  readonly strays: readonly number[]
}

/** The first fd number a passed fd gets in the child. */
export const FIRST_PASSED_FD = 3

function checkOpen(fd: number, what: string): void {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`${what}: ${fd} is not a file descriptor`)
  try {
    fs.fstatSync(fd)
  } catch (err) {
    const errno = errnoCode(err)
    throw new FdError('io', what, fd, `is not open (${errno ?? String(err)})`, {cause: err, ...(errno ? {errno} : {})})
  }
}

/**
 * Builds the spawn `stdio` array and the child's fd numbers for the passed fds. Checks that every
 * fd named is open (FdError 'io' otherwise), so a closed fd fails here and not as a puzzling EBADF in
 * the child.
 */
export function buildFdMap(spec: FdMapSpec): FdMap {
  const stdio: [ChildStdio, ChildStdio, ChildStdio, ...number[]] = [spec.stdin, spec.stdout, spec.stderr]
  stdio.forEach((s, i) => {
    if (typeof s === 'number') checkOpen(s, `fd for the child's fd ${i}`)
  })
  const childFds: number[] = []
  spec.pass.forEach((fd, i) => {
    checkOpen(fd, `passed fd #${i}`)
    childFds.push(FIRST_PASSED_FD + i)
    stdio.push(fd)
  })
  let strays: number[] = []
  try {
    strays = inheritableFds().filter((fd) => fd >= stdio.length)
  } catch {
    // no /proc: nothing to report
  }
  return {stdio, childFds, strays}
}

export interface SpawnWithFdsOptions extends FdMapSpec {
  readonly env?: NodeJS.ProcessEnv
  readonly cwd?: string
  /** argv[0] as the child sees it (default: `file`). */
  readonly argv0?: string
  /**
   * Start the child in a session of its own (setsid), so that signals for our process group (a
   * terminal's Ctrl-C) do not reach it; it then has no controlling terminal either.
   */
  readonly ownSession?: boolean
}

export interface SpawnedWithFds {
  readonly child: ChildProcess
  readonly childFds: readonly number[]
  readonly strays: readonly number[]
}

/**
 * Spawns `file args` with the fd map of `opts`. The argv usually names the child fds, so `args`
 * may be a function of them.
 *
 * With node:child_process, not execa (the card's package, which the transport uses): this starts
 * the save/restore helper, which migrate-receive prestarts while its CLI loads
 * (xl/receiver-early.ts), synchronously, in a process that has not loaded execa and otherwise
 * never does. Loading it there costs 47-55 ms (measured after oclif has loaded, 7 runs), and the
 * receiver comes up only ~20 ms before the sender's xl header (bench/README.md, migrate): the
 * helper would start after the header again. It is the load that decides: once loaded, a spawn
 * through execa costs 0.4 ms more (spawn to exit of `true`: 1.8 ms against 1.4).
 */
export function spawnWithFds(
  file: string,
  args: readonly string[] | ((childFds: readonly number[]) => readonly string[]),
  opts: SpawnWithFdsOptions,
): SpawnedWithFds {
  const map = buildFdMap(opts)
  const argv = typeof args === 'function' ? args(map.childFds) : args
  const child = spawn(file, [...argv], {
    stdio: [...map.stdio],
    ...(opts.env ? {env: opts.env} : {}),
    ...(opts.cwd ? {cwd: opts.cwd} : {}),
    ...(opts.argv0 ? {argv0: opts.argv0} : {}),
    ...(opts.ownSession ? {detached: true} : {}),
  })
  return {child, childFds: map.childFds, strays: map.strays}
}
