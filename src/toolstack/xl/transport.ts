/**
 * The migration transport: the child `sh -c RUNE` (ssh, usually) on the fd pair, as xl's
 * create_migration_child makes it, and the end of it as migration_child_report waits for it.
 *
 * It stays in our session and process group, as xl's does (ssh may need the terminal to ask for a
 * password). So when it has to go (a timeout, an interrupt, a transport that does not exit) it is
 * killed by pid, and so is every other process still holding the far end of one of our FIFOs: a
 * rune without `exec` leaves a grandchild (`sh -c 'cmd | cmd'`) that would keep our reads from
 * ever seeing end of file. Those are found in /proc by the FIFOs' inodes, never by name.
 *
 * It is started with execa (the fd map from buildFdMap: its stdin and stdout are the pair's child
 * ends, nothing else passed), loaded when the transport starts: migrate-receive imports this module
 * and must not pay execa's 47-55 ms at start-up, while every side that starts a transport has just
 * loaded it to make the pair (openFdPair). execa's own ways are turned off where they would change
 * what xl does: no `cleanup` (our death reaches the transport as end of file on its stdin, as xl's
 * does; with `-s ''` the transport is migrate-receive itself, which must see EOF, not a SIGTERM
 * from our exit handler), no `forceKillAfterDelay` (killAll is the one escalation), the
 * environment exactly as given (`extendEnv: false`), and no rejection: its exit is a result.
 */
import * as fs from 'node:fs'
import type {Options, ResultPromise} from 'execa'

import {buildFdMap, type FdPair} from '../fd/index.js'

export interface TransportExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

const sleep = (ms: number): Promise<'timeout'> => new Promise((r) => setTimeout(() => r('timeout'), ms).unref())

export class Transport {
  readonly #child: ResultPromise
  readonly #pair: FdPair
  readonly #inodes: readonly string[]
  readonly exit: Promise<TransportExit>
  #exited = false

  private constructor(child: ResultPromise, pair: FdPair, onError: (why: string) => void) {
    this.#child = child
    this.#pair = pair
    this.#inodes = [pair.sendFd, pair.recvFd].map((fd) => {
      try {
        const st = fs.fstatSync(fd)
        return `${st.dev}:${st.ino}`
      } catch {
        return ''
      }
    })
    this.exit = child.then((r) => {
      this.#exited = true
      // Neither a status nor a signal: it never ran (r.originalMessage is Node's `spawn sh ENOENT`).
      if (r.exitCode === undefined && r.signal === undefined) {
        onError(`cannot run the migration transport (sh -c ...): ${r.originalMessage ?? r.shortMessage ?? 'unknown error'}`)
        return {code: 127, signal: null}
      }
      return {code: r.exitCode ?? null, signal: r.signal ?? null}
    })
  }

  /** Spawns `sh -c rune` with stdin = FIFO A's read end, stdout = FIFO B's write end, and closes those here. */
  static async start(rune: string, pair: FdPair, env: NodeJS.ProcessEnv | undefined, onError: (why: string) => void, opts: {ownSession?: boolean} = {}): Promise<Transport> {
    const map = buildFdMap({stdin: pair.childStdin, stdout: pair.childStdout, stderr: 'inherit', pass: []})
    const {execa} = await import('execa')
    const child = execa('sh', ['-c', rune], {
      // execa's types name the fds 0-9 only; any fd number is passed to spawn as it is (a single
      // value per fd is `native`: lib/stdio/handle.js), as test/transport.test.ts checks with fds
      // above 9.
      stdio: map.stdio as Options['stdio'],
      ...(env ? {env, extendEnv: false} : {}),
      // In a session of its own (setsid) when asked, so that a terminal's Ctrl-C does not reach it.
      detached: opts.ownSession ?? false,
      cleanup: false,
      forceKillAfterDelay: false,
      reject: false,
    })
    const t = new Transport(child, pair, onError)
    // The child has its ends now: closing ours lets its death reach us as EOF / EPIPE.
    pair.closeChildEnds()
    return t
  }

  get pid(): number | undefined {
    return this.#child.pid
  }

  get exited(): boolean {
    return this.#exited
  }

  kill(signal: NodeJS.Signals): void {
    if (this.#exited) return
    try {
      this.#child.kill(signal)
    } catch {
      // gone
    }
  }

  /** Other processes holding the far end of our FIFOs (the transport, its children). */
  holders(): number[] {
    const wanted = new Set(this.#inodes.filter(Boolean))
    const out: number[] = []
    if (wanted.size === 0) return out
    let entries: string[]
    try {
      entries = fs.readdirSync('/proc')
    } catch {
      return out
    }
    for (const e of entries) {
      if (!/^[0-9]+$/.test(e) || Number(e) === process.pid) continue
      let fds: string[]
      try {
        fds = fs.readdirSync(`/proc/${e}/fd`)
      } catch {
        continue
      }
      for (const fd of fds) {
        try {
          const st = fs.statSync(`/proc/${e}/fd/${fd}`)
          if (wanted.has(`${st.dev}:${st.ino}`)) {
            out.push(Number(e))
            break
          }
        } catch {
          // closed meanwhile
        }
      }
    }
    return out
  }

  /** Kills the transport (SIGTERM, then SIGKILL after `graceMs`) and every other holder of our FIFOs. */
  async killAll(graceMs = 1000): Promise<void> {
    this.kill('SIGTERM')
    if ((await Promise.race([this.exit, sleep(graceMs)])) === 'timeout') this.kill('SIGKILL')
    for (const pid of this.holders()) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
    await Promise.race([this.exit, sleep(graceMs)])
  }

  /**
   * migration_child_report: closes our send end (the transport sees EOF) and waits up to `ms` for
   * the transport to exit. Returns its exit, or 'timeout' (then the caller says so, and kills it).
   */
  async wait(ms: number): Promise<TransportExit | 'timeout'> {
    this.#pair.closeSend()
    return Promise.race([this.exit, sleep(ms)])
  }
}
