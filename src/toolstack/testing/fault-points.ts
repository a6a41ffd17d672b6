/**
 * Fault points for the migration fault matrix (test/migrate-faults.test.ts): the tests'
 * implementation of FaultPoints (hooks.ts). Only a test entry program makes one
 * (test/support/install-test-hooks.mjs); the toolstack itself never does.
 *
 * dir    each side keeps DIR/<side>.json up to date with the pids a test may kill (its own, its
 *        helper's, its transport's, its guardian's) and the last point it passed (`point`).
 * stop   at that point (`sender:precopy`, `receiver:after-go`, ...) the process writes
 *        DIR/stopped.json ({point, pid}) and stops itself with SIGSTOP; the test kills what it
 *        wants and sends SIGCONT.
 *
 * Stopping the process in place (rather than sleeping) freezes exactly the state of that moment:
 * nothing in it runs until the test has done its damage.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import type {FaultPoint, FaultPoints, FaultSide} from '../test-hooks.js'

export type {FaultPoint, FaultSide} from '../test-hooks.js'

export interface FaultHooksOptions {
  readonly dir: string
  readonly stop?: FaultPoint
}

export class FaultHooks implements FaultPoints {
  readonly #dir: string
  readonly #stopAt: string | undefined
  readonly #pids: Record<string, number | string> = {}

  constructor(
    readonly side: FaultSide,
    opts: FaultHooksOptions,
  ) {
    this.#dir = opts.dir
    this.#stopAt = opts.stop
    this.note('pid', process.pid)
  }

  /** Records a pid under a name (`helper`, `transport`, `guardian`). */
  note(name: string, pid: number | undefined): void {
    if (pid === undefined) return
    this.#pids[name] = pid
    this.#write(`${this.side}.json`, this.#pids)
  }

  /** Notes that this point was passed; stops this process here when the test asked for it. */
  at(point: FaultPoint): void {
    this.#pids.point = point
    this.#write(`${this.side}.json`, this.#pids)
    if (this.#stopAt !== point) return
    this.#write('stopped.json', {point, pid: process.pid, ...this.#pids})
    process.kill(process.pid, 'SIGSTOP')
  }

  #write(name: string, value: unknown): void {
    const file = path.join(this.#dir, name)
    try {
      fs.writeFileSync(`${file}.tmp`, JSON.stringify(value))
      fs.renameSync(`${file}.tmp`, file)
    } catch {
      // a test directory that went away: nothing to report to
    }
  }
}
