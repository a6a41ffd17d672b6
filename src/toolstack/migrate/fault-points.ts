/**
 * Fault injection for the migration fault matrix (test/migrate-faults.test.ts): inert unless the
 * environment asks for it.
 *
 * XL_TS_TEST_HOOK_DIR=DIR   each side keeps DIR/<side>.json up to date with the pids a test may
 *                           kill (its own, its helper's, its transport's, its guardian's) and
 *                           the last point it passed (`point`).
 * XL_TS_TEST_STOP=POINT     at that point (`sender:precopy`, `receiver:after-go`, ...) the process
 *                           writes DIR/stopped.json ({point, pid}) and stops itself with SIGSTOP;
 *                           the test kills what it wants and sends SIGCONT.
 *
 * Stopping the process in place (rather than sleeping) freezes exactly the state of that moment:
 * nothing in it runs until the test has done its damage.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

export const HOOK_DIR_ENV = 'XL_TS_TEST_HOOK_DIR'
export const STOP_ENV = 'XL_TS_TEST_STOP'

export type FaultSide = 'sender' | 'receiver'

export type FaultPoint =
  | 'receiver:banner' // before the banner is written
  | 'receiver:header' // after the xl header is read, before the domain is built
  | 'receiver:before-ready' // the stream is in, before `ready` is written
  | 'receiver:after-ready' // `ready` written, before GO is read
  | 'receiver:after-go' // GO read (and the guardian told), before rename and unpause
  | 'sender:precopy' // a precopy round after the first has started
  | 'sender:stop-and-copy' // the guest is suspended, before the helper is told so
  | 'sender:after-ready' // `ready` read, before the rename and GO
  | 'sender:after-go' // GO written, before the report is read

export class FaultHooks {
  readonly #dir: string | undefined
  readonly #stopAt: string | undefined
  readonly #pids: Record<string, number | string> = {}

  constructor(
    readonly side: FaultSide,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.#dir = env[HOOK_DIR_ENV] || undefined
    this.#stopAt = env[STOP_ENV] || undefined
    this.note('pid', process.pid)
  }

  get active(): boolean {
    return this.#dir !== undefined
  }

  /** Records a pid under a name (`helper`, `transport`, `guardian`). */
  note(name: string, pid: number | undefined): void {
    if (!this.#dir || pid === undefined) return
    this.#pids[name] = pid
    this.#write(`${this.side}.json`, this.#pids)
  }

  /** Notes that this point was passed; stops this process here when the test asked for it. */
  at(point: FaultPoint): void {
    if (!this.#dir) return
    this.#pids.point = point
    this.#write(`${this.side}.json`, this.#pids)
    if (this.#stopAt !== point) return
    this.#write('stopped.json', {point, pid: process.pid, ...this.#pids})
    process.kill(process.pid, 'SIGSTOP')
  }

  #write(name: string, value: unknown): void {
    const file = path.join(this.#dir!, name)
    try {
      fs.writeFileSync(`${file}.tmp`, JSON.stringify(value))
      fs.renameSync(`${file}.tmp`, file)
    } catch {
      // a test directory that went away: nothing to report to
    }
  }
}
