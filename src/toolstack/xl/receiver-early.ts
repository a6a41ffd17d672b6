/**
 * What `migrate-receive` starts before its command line is even read: its guardian and a restore
 * helper (helper/prestart.ts), on its stdin and stdout. Each is a Node program with ~40 ms of CPU
 * to start. The sender writes the xl header as soon as it reads our banner, so anything started
 * by the command itself still starts after the header, on the same cores as the domain's own
 * process. Started while the CLI loads (src/cli/main.ts), they are up when the header comes.
 *
 * Neither knows the host yet (a `--root` is not parsed): the guardian learns it with its role, the
 * helper with its argv. The command takes them (takeReceiverEarly); what it cannot use (a Remus or
 * COLO stream: their helper starts around a built domain) it disposes of. If the command never
 * takes them (a usage error), they end with this process: their stdin closes.
 */
import {prestartHelper} from '../helper/index.js'
import type {PrestartedHelper} from '../helper/index.js'
import {Guardian} from './guardian.js'

export interface ReceiverEarlyStart {
  readonly guardian: Guardian | undefined
  readonly helper: PrestartedHelper | undefined
  /** Why the guardian could not be started, if it could not. */
  readonly guardianFailure?: string
}

let early: ReceiverEarlyStart | undefined

/**
 * Starts them (once) for the stream on `inFd` and the way back on `outFd`. The helper gets a
 * blocking reopen of a non-blocking stream, as any helper does (prestart.ts); the guardian reads
 * the GO with non-blocking reads too.
 */
export function startReceiverEarly(inFd = 0, outFd = 1, env: NodeJS.ProcessEnv = process.env): ReceiverEarlyStart {
  if (early) return early
  let guardianFailure: string | undefined
  const guardian = Guardian.prestart({inFd, outFd}, env, (why) => (guardianFailure ??= why))
  const helper = prestartHelper({mode: 'restore', ioFd: inFd, env, stderr: 'pipe', background: true})
  early = {guardian, helper, ...(guardianFailure !== undefined ? {guardianFailure} : {})}
  return early
}

/** What startReceiverEarly started, once; undefined if nothing was. */
export function takeReceiverEarly(): ReceiverEarlyStart | undefined {
  const e = early
  early = undefined
  return e
}
