/**
 * The migration transport (`sh -c RUNE` on the fd pair), started with execa: the child sees exactly
 * its stdin and stdout (the pair's child ends, fd numbers above 9 here) and our stderr, nothing else;
 * its exit comes back as a status or a signal; a transport that cannot run says so with Node's
 * words; the environment is exactly the one given; `ownSession` gives it a session of its own; and
 * our exit does not take it with it (execa's `cleanup` is off: the far end learns of our death as
 * end of file, as with xl).
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {inheritableFds, openFdPair, readExact, writeAllSync, type FdPair} from '../src/toolstack/fd/index.js'
import {Transport} from '../src/toolstack/xl/transport.js'
import {ensureBuilt} from './support/build.js'
import {drain} from './support/fd.js'
import {scratchDir} from './support/scratch.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const scratch = scratchDir('transport')

/** fds opened only so that the pair's fds get numbers above 9. */
const padding: number[] = []

beforeAll(() => {
  for (let i = 0; i < 10; i++) padding.push(fs.openSync('/dev/null', 'r'))
})

afterAll(() => {
  for (const fd of padding) fs.closeSync(fd)
})

/** Starts `rune` on a new pair, sends `input` and closes our send end, reads all it says. */
async function run(rune: string, opts: {input?: string; env?: NodeJS.ProcessEnv; ownSession?: boolean} = {}) {
  const pair: FdPair = await openFdPair()
  const errors: string[] = []
  const t = await Transport.start(rune, pair, opts.env, (why) => errors.push(why), opts.ownSession ? {ownSession: true} : {})
  if (opts.input !== undefined) writeAllSync(pair.sendFd, [Buffer.from(opts.input)])
  pair.closeSend()
  const out = await drain(pair.recvFd)
  const exit = await t.exit
  pair.close()
  return {pair, out, exit, errors, pid: t.pid}
}

describe('Transport', () => {
  it('gives the transport its stdin and stdout from the pair (fds above 9) and nothing else', async () => {
    const rune = 'for f in /proc/$$/fd/*; do [ -e "$f" ] && printf " %s" "${f##*/}"; done; echo; exec cat'
    const r = await run(rune, {input: 'through the pair\n'})
    expect(Math.min(r.pair.childStdin, r.pair.childStdout)).toBeGreaterThan(9)
    const [fds, echoed] = r.out.split('\n')
    // Besides 0-2, only what no fd map can keep out: fds we inherited without close-on-exec
    // (vitest's worker has one), as buildFdMap's strays name them.
    const strays = inheritableFds().filter((fd) => fd > 2)
    expect(fds!.trim().split(/\s+/).map(Number).sort((a, b) => a - b)).toEqual([0, 1, 2, ...strays].sort((a, b) => a - b))
    expect(echoed).toBe('through the pair')
    expect(r.exit).toEqual({code: 0, signal: null})
    expect(r.errors).toEqual([])
  })

  it('reports an exit status and a fatal signal', async () => {
    expect((await run('exit 3')).exit).toEqual({code: 3, signal: null})
    expect((await run('kill -TERM $$')).exit).toEqual({code: null, signal: 'SIGTERM'})
  })

  it('a transport that cannot run: the error in Node\'s words, status 127', async () => {
    const r = await run('true', {env: {PATH: path.join(scratch.dir, 'no-such-bin')}})
    expect(r.errors).toEqual(['cannot run the migration transport (sh -c ...): spawn sh ENOENT'])
    expect(r.exit).toEqual({code: 127, signal: null})
    expect(r.pid).toBeUndefined()
  })

  it('gets the environment as given, not ours added to it', async () => {
    process.env.XL_TS_TRANSPORT_TEST_OURS = 'ours'
    try {
      const r = await run('echo "given=${GIVEN-unset} ours=${XL_TS_TRANSPORT_TEST_OURS-unset}"', {env: {PATH: process.env.PATH, GIVEN: 'yes'}})
      expect(r.out).toBe('given=yes ours=unset\n')
    } finally {
      delete process.env.XL_TS_TRANSPORT_TEST_OURS
    }
  })

  it('stays in our session, or gets one of its own with ownSession', async () => {
    // The session id: the 4th field after the command name, `(comm)`, which may hold spaces (ours
    // does under vitest; sh's does not).
    const ours = fs.readFileSync('/proc/self/stat', 'utf8').split(') ').pop()!.split(' ')[3]
    const rune = 'read -r _ _ _ _ _ sid _ < /proc/$$/stat; echo "$$ $sid"'
    const [pid, sid] = (await run(rune)).out.trim().split(' ')
    expect(sid).toBe(ours)
    expect(pid).not.toBe(sid)
    const [ownPid, ownSid] = (await run(rune, {ownSession: true})).out.trim().split(' ')
    expect(ownSid).toBe(ownPid)
  })

  it('killAll: SIGTERM, then SIGKILL after the grace, from us alone', async () => {
    const pair = await openFdPair()
    const t = await Transport.start('trap "" TERM; echo up; while :; do sleep 1; done', pair, undefined, () => {})
    expect((await readExact(pair.recvFd, 3)).toString()).toBe('up\n')
    const t0 = Date.now()
    await t.killAll(300)
    expect(await t.exit).toEqual({code: null, signal: 'SIGKILL'})
    expect(Date.now() - t0).toBeLessThan(3000)
    pair.close()
  })

  it('outlives our exit: no exit handler kills it (the far end sees end of file instead)', async () => {
    await ensureBuilt()
    const dist = (p: string) => JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', p)).href)
    const script = `
      import {openFdPair} from ${dist('toolstack/fd/index.js')}
      import {Transport} from ${dist('toolstack/xl/transport.js')}
      const pair = await openFdPair()
      const t = await Transport.start('exec sleep 30', pair, undefined, () => {})
      process.stdout.write(String(t.pid))
      process.exit(0)
    `
    // Its stderr is the transport's (inherited): /dev/null, or we would wait for the sleep to end.
    const r = await execa(process.execPath, ['--input-type=module', '-e', script], {stdio: ['ignore', 'pipe', 'ignore'], timeout: 20_000})
    const pid = Number(r.stdout)
    expect(pid).toBeGreaterThan(0)
    try {
      await new Promise((resolve) => setTimeout(resolve, 200))
      expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('sleep')
    } finally {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  })
})
