/**
 * The host lock: a directory renamed into place (atomic) with its `owner` file "<pid> <start>" in it.
 * A lock whose owner process is gone is broken by renaming it away (atomic, so only one breaker wins).
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {HypervisorError} from '../index.js'
import {isAlive, selfIdentity, sleep} from '../../process/index.js'

const STALE_NO_OWNER_MS = 10_000
const WAIT_MS = 30_000

function readOwner(dir: string): string | undefined {
  try {
    return fs.readFileSync(path.join(dir, 'owner'), 'utf8')
  } catch {
    return undefined
  }
}

function ownerAlive(owner: string): boolean {
  const [pid, start] = owner.trim().split(' ').map(Number)
  return isAlive(pid ?? 0, start ?? -1)
}

function tryBreak(dir: string, sawOwner: string | undefined): void {
  const moved = `${dir}.stale-${crypto.randomBytes(6).toString('hex')}`
  try {
    fs.renameSync(dir, moved)
  } catch {
    return // someone else broke or released it
  }
  const owner = readOwner(moved)
  if (owner !== sawOwner && owner !== undefined && ownerAlive(owner)) {
    // We took a lock that a live process had just acquired: give it back.
    try {
      fs.renameSync(moved, dir)
      return
    } catch {
      // a third process holds the lock now; nothing better to do
    }
  }
  fs.rmSync(moved, {recursive: true, force: true})
}

export async function withLock<T>(dir: string, fn: () => T | Promise<T>): Promise<T> {
  const me = selfIdentity()
  const token = `${me.pid} ${me.start}\n`
  const until = Date.now() + WAIT_MS
  for (let wait = 1; ; wait = Math.min(wait * 2, 20)) {
    // The lock appears with its owner file complete: made aside, then renamed into place. (Made in
    // place, a reader between mkdir and the owner's write saw no owner, or an empty one, and took
    // a live holder for a dead one.)
    const staging = `${dir}.${me.pid}.${crypto.randomBytes(4).toString('hex')}.new`
    fs.mkdirSync(staging, {mode: 0o700})
    fs.writeFileSync(path.join(staging, 'owner'), token)
    try {
      fs.renameSync(staging, dir)
      break
    } catch (e) {
      fs.rmSync(staging, {recursive: true, force: true})
      const code = (e as NodeJS.ErrnoException).code
      if (code !== 'EEXIST' && code !== 'ENOTEMPTY') throw e
    }
    const owner = readOwner(dir)
    if (owner !== undefined ? !ownerAlive(owner) : lockAge(dir) > STALE_NO_OWNER_MS) {
      tryBreak(dir, owner)
      continue
    }
    if (Date.now() > until) throw new HypervisorError('backend-failure', `could not take the host lock ${dir} (held by ${owner?.trim() ?? 'unknown'})`)
    await sleep(wait)
  }
  try {
    return await fn()
  } finally {
    // Release only our own lock, and as a whole: renamed away, then removed.
    if (readOwner(dir) === token) {
      const gone = `${dir}.released-${crypto.randomBytes(6).toString('hex')}`
      try {
        fs.renameSync(dir, gone)
      } catch {
        // broken by someone who took us for dead: nothing of ours is left
      }
      fs.rmSync(gone, {recursive: true, force: true})
    }
  }
}

function lockAge(dir: string): number {
  try {
    return Date.now() - fs.statSync(dir).mtimeMs
  } catch {
    return 0
  }
}
