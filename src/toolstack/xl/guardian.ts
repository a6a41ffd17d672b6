/**
 * The guarded side's end of its guardian (guardian-main.ts): starts it in its own session and tells
 * it, line by line, how far the migration has come. Every message is in the kernel's pipe buffer
 * before the promise resolves, so a process killed right after still has it delivered.
 */
import {spawn, type ChildProcess} from 'node:child_process'

import {entryPointFile, nodeProgramEnv} from '../entry-points.js'
import {procStart} from '../process/index.js'
import {encodeTieBreaker, type TieBreakerSpec} from './tie-breaker.js'

export type GuardianRole =
  | {
      readonly role: 'receiver'
      readonly incomingName: string
      readonly finalName: string
      readonly leavePaused: boolean
      /**
       * The stream (our stdin) and the way back (our stdout): the guardian holds them as its fds 3
       * and 4, so that if we die after `ready` it can take the GO and send the report itself.
       */
      readonly stream?: {readonly inFd: number; readonly outFd: number}
      /** A Remus stream: there is no GO or report; G means the failover has begun. */
      readonly checkpointed?: boolean
      /** Who decides whether the copy here may go live when we die (--witness, --fence). */
      readonly tieBreaker?: TieBreakerSpec
    }
  | {readonly role: 'sender'; readonly domid: number; readonly name: string; readonly awayName: string}
  /** A Remus primary: once the backup holds a checkpoint, our death means its failover. */
  | {readonly role: 'remus-primary'; readonly domid: number; readonly name: string; readonly tieBreaker?: TieBreakerSpec}

/** What names the host a guardian acts on (as for the helper: libxl/helper-env.ts). */
const HOST_ENV = ['XL_TS_BACKEND', 'XL_TS_ROOT'] as const

export function guardianScript(): string {
  return entryPointFile('guardian-main')
}

function argv(r: GuardianRole): string[] {
  return r.role === 'receiver'
    ? ['receiver', r.incomingName, r.finalName, r.leavePaused ? '1' : '0', r.checkpointed ? 'checkpointed' : 'plain', encodeTieBreaker(r.tieBreaker)]
    : r.role === 'sender'
      ? ['sender', String(r.domid), r.name, r.awayName]
      : ['remus-primary', String(r.domid), r.name, encodeTieBreaker(r.tieBreaker)]
}

export class Guardian {
  readonly #child: ChildProcess
  #closed = false

  private constructor(child: ChildProcess) {
    this.#child = child
  }

  /**
   * Starts the guardian with the environment that names the host (XL_TS_BACKEND, XL_TS_ROOT);
   * undefined (and `onError` told) when it cannot run.
   */
  static start(role: GuardianRole, env: NodeJS.ProcessEnv, onError: (why: string) => void): Guardian | undefined {
    const stream = role.role === 'receiver' ? role.stream : undefined
    return Guardian.#spawn(argv(role), stream, env, onError)
  }

  /**
   * A receiver's guardian started before its role is known (the names come with the xl header),
   * so that its start does not fall between the header and the first page; `assign` gives the
   * role. Until then it has nothing to guard: if we die first, it just exits.
   */
  static prestart(stream: {readonly inFd: number; readonly outFd: number} | undefined, env: NodeJS.ProcessEnv, onError: (why: string) => void): Guardian | undefined {
    return Guardian.#spawn(['await'], stream, env, onError)
  }

  /**
   * The role of a prestarted guardian (the stream fds it holds are the receiver's stdin and
   * stdout), and the variables that name its host (XL_TS_BACKEND, XL_TS_ROOT: it may have been
   * started before the command line was read).
   */
  assign(role: GuardianRole, env: NodeJS.ProcessEnv): Promise<void> {
    const host: Record<string, string> = {}
    for (const k of HOST_ENV) if (env[k] !== undefined) host[k] = env[k]
    return this.#send(`I ${JSON.stringify({argv: argv(role), env: host})}`)
  }

  /**
   * With node:child_process, not execa (the card's package): migrate-receive prestarts its
   * guardian beside its helper while the CLI loads (receiver-early.ts), synchronously, before
   * anything has loaded execa, which would cost 47-55 ms there (measured after oclif has loaded,
   * 7 runs) when the receiver comes up ~20 ms before the sender's header (see fd/fd-map.ts,
   * spawnWithFds). It is detached and lives on after us by design, so execa would have to be told
   * `cleanup: false` as well.
   */
  static #spawn(args: readonly string[], stream: {readonly inFd: number; readonly outFd: number} | undefined, env: NodeJS.ProcessEnv, onError: (why: string) => void): Guardian | undefined {
    let child: ChildProcess
    try {
      const fds = stream ? [stream.inFd, stream.outFd] : []
      child = spawn(process.execPath, [guardianScript(), ...args], {detached: true, stdio: ['pipe', 'ignore', 'inherit', ...fds], env: nodeProgramEnv(env)})
    } catch (err) {
      onError(err instanceof Error ? err.message : String(err))
      return undefined
    }
    child.on('error', (err) => onError(err.message))
    child.stdin?.on('error', () => {})
    // It must never keep us alive: it lives on only to finish what we leave.
    child.unref()
    ;(child.stdin as unknown as {unref?: () => void} | null)?.unref?.()
    return new Guardian(child)
  }

  get pid(): number | undefined {
    return this.#child.pid
  }

  /** Still running. Its exit may not have reached our event loop yet (we may have been stopped meanwhile): a zombie counts as gone. */
  get alive(): boolean {
    const c = this.#child
    if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return false
    return procStart(c.pid) !== undefined
  }

  #send(line: string): Promise<void> {
    const stdin = this.#child.stdin
    if (this.#closed || !stdin || stdin.destroyed) return Promise.resolve()
    return new Promise((resolve) => stdin.write(`${line}\n`, () => resolve()))
  }

  /** Receiver: the domain is built. */
  created(domid: number): Promise<void> {
    return this.#send(`C ${domid}`)
  }

  /** Sender: the save helper's pid. */
  helper(pid: number): Promise<void> {
    return this.#send(`H ${pid}`)
  }

  /** Receiver: `ready` is written (if I die: take the GO from the stream yourself). */
  ready(): Promise<void> {
    return this.#send('R')
  }

  /** Remus primary: the backup acknowledged a checkpoint (if I die, it takes over: stop the guest here). */
  acknowledged(): Promise<void> {
    return this.#send('K')
  }

  /** GO received (receiver: start the domain if I die) / about to be sent (sender: leave it be). */
  go(): Promise<void> {
    return this.#send('G')
  }

  /** Back to before GO: the receiver's start failed; the sender's GO never left. */
  abandon(): Promise<void> {
    return this.#send('A')
  }

  /** Nothing is left to finish: the guardian exits. */
  async done(): Promise<void> {
    await this.#send('D')
    this.#closed = true
    this.#child.stdin?.end()
  }
}
