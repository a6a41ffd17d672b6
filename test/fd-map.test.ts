/**
 * The fd map (dup_cloexec, XEN-FACTS §5.2) as a child really sees it. A parent process (a separate
 * Node process, so that its own fds 0, 1 and 2 can be FIFOs and pipes we control) spawns a child
 * with spawnWithFds. The child is `/bin/sh`, which lists /proc/$$/fd before anything else runs (a Node
 * child would add a dozen fds of its own first), then execs a small Node script that echoes a token
 * through each passed fd: it writes one into each fd passed for writing and reads one from each fd
 * passed for reading. We check that exactly 0, 1, 2 and the passed fds are open in the child, and
 * that every token arrives where it should: through our fd 0 and fd 1 passed as the child's 3 and 4
 * (migrate-receive), through fd 2, through fds that already have the number they get, swapped fds,
 * and high fds. A last case shows what the map cannot prevent, an fd we inherited without
 * close-on-exec, and that buildFdMap names it in `strays`.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {buildFdMap, fdFlags, openFdPair, writeAllSync, type FdPair} from '../src/toolstack/fd/index.js'
import {ensureBuilt} from './support/build.js'
import {drain} from './support/fd.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const DIST_FD = path.join(ROOT, 'dist/toolstack/fd/index.js')


/** The child: list our fds as the kernel gave them at exec, then echo tokens in Node. */
const CHILD_SH = `
list=""
for f in /proc/$$/fd/*; do [ -e "$f" ] && list="$list \${f##*/}"; done
echo "fds:$list"
exec "$NODE" "$ECHO" "$@"
`

/** argv: `<childfd>:<r|w>:<token>` each. Writes the token into w fds, reads a line from r fds. */
const ECHO_JS = `
const fs = require('node:fs')
for (const spec of process.argv.slice(2)) {
  const [fd, dir, token] = spec.split(':')
  if (dir === 'w') {
    fs.writeSync(Number(fd), token + '\\n')
  } else {
    let line = ''
    const b = Buffer.alloc(1)
    while (fs.readSync(Number(fd), b, 0, 1, null) === 1 && b[0] !== 10) line += String.fromCharCode(b[0])
    console.log('got ' + fd + ' ' + line)
  }
}
`

/**
 * The parent. argv[2] is the scenario: which of its fds to pass (numbers, or `pairRead` / `pairWrite`
 * for the ends of an fd pair it opens itself), their directions, the child's stdio, and whether to
 * close the fds it inherited without close-on-exec first. It reports one JSON line on its stderr.
 */
const PARENT_MJS = (distFd: string) => `
import * as fs from 'node:fs'
import {spawnWithFds, inheritableFds, openFdPair, writeAllSync, readExactSync} from ${JSON.stringify(distFd)}
const sc = JSON.parse(process.argv[2])
const inherited = inheritableFds()
const closed = []
if (sc.closeStrays) for (const fd of inherited) if (fd > 2) { fs.closeSync(fd); closed.push(fd) }
const pair = sc.pass.some((p) => typeof p === 'string') ? await openFdPair() : undefined
const pass = sc.pass.map((p) => (p === 'pairRead' ? pair.childStdin : p === 'pairWrite' ? pair.childStdout : p))
const {child, childFds, strays} = spawnWithFds('/bin/sh', (fds) => ['-c', sc.script, 'sh', ...fds.map((fd, i) => fd + ':' + sc.dirs[i] + ':' + sc.tokens[i])], {
  stdin: sc.stdin, stdout: 'pipe', stderr: sc.stderr, pass, env: {...process.env, NODE: process.execPath, ECHO: sc.echo},
})
let out = ''
child.stdout.on('data', (c) => (out += c))
let pairGot
if (pair) {
  pair.closeChildEnds()
  writeAllSync(pair.sendFd, [Buffer.from('from-parent\\n')])
}
const code = await new Promise((resolve) => child.on('close', (c) => resolve(c)))
if (pair) {
  pairGot = readExactSync(pair.recvFd, 4096).toString()
  pair.close()
}
process.stderr.write(JSON.stringify({inherited, closed, pass, childFds, strays, out, code, pairGot}) + '\\n')
`

interface Scenario {
  pass: Array<number | 'pairRead' | 'pairWrite'>
  dirs: Array<'r' | 'w'>
  stdin: 'pipe' | 'ignore' | 'inherit'
  stderr: 'pipe' | 'ignore' | 'inherit'
  closeStrays: boolean
  /** Extra fds for the parent, at these numbers: sockets we write and read through. */
  extra?: number[]
}

interface Report {
  inherited: number[]
  closed: number[]
  pass: number[]
  childFds: number[]
  strays: number[]
  out: string
  code: number
  pairGot?: string
}

interface Result {
  report: Report
  /** fds open in the child at exec. */
  childFds: number[]
  /** `got <fd> <line>` lines of the child: what it read from each r fd. */
  got: Map<number, string>
  /** What arrived at our end of the parent's fd 1 (FIFO), and fd 2 (the lines that are not the report). */
  parentStdout: string
  parentStderr: string
  /** What arrived through each extra fd. */
  extraOut: Map<number, string>
}

let dir: string
let parentScript: string
let echoScript: string

beforeAll(async () => {
  await ensureBuilt()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-ts-fd-map-'))
  parentScript = path.join(dir, 'parent.mjs')
  echoScript = path.join(dir, 'echo.cjs')
  fs.writeFileSync(parentScript, PARENT_MJS(pathToFileURL(DIST_FD).href))
  fs.writeFileSync(echoScript, ECHO_JS)
})

afterAll(() => {
  fs.rmSync(dir, {recursive: true, force: true})
})

/**
 * Runs the parent with fd 0 = the read end of FIFO A (we write `in-token` into A) and fd 1 = the
 * write end of FIFO B (we read B), fd 2 a pipe to us, and any extra fds as sockets.
 */
async function runScenario(sc: Scenario): Promise<Result> {
  const pair: FdPair = await openFdPair()
  const extra = sc.extra ?? []
  const top = Math.max(2, ...extra)
  const stdio: Array<'pipe' | 'ignore' | number> = [pair.childStdin, pair.childStdout, 'pipe']
  for (let i = 3; i <= top; i++) stdio.push(extra.includes(i) ? 'pipe' : 'ignore')
  const tokens = sc.pass.map((_, i) => `tok-${i}`)
  const scenario = {...sc, tokens, script: CHILD_SH, echo: echoScript}
  const parent = spawn(process.execPath, [parentScript, JSON.stringify(scenario)], {stdio})
  pair.closeChildEnds()
  // What any child fd passed for reading from the parent's fd 0 gets.
  writeAllSync(pair.sendFd, [Buffer.from('in-token\n')])
  const extraOut = new Map<number, string>()
  for (const fd of extra) {
    const s = parent.stdio[fd] as unknown as NodeJS.ReadWriteStream
    extraOut.set(fd, '')
    s.on('data', (c: Buffer) => extraOut.set(fd, extraOut.get(fd) + c.toString()))
    // A token we wrote into a socket the child only writes to is never read: ECONNRESET at close.
    s.on('error', () => {})
    s.write(`sock-token-${fd}\n`)
  }
  let stderr = ''
  parent.stderr!.on('data', (c: Buffer) => (stderr += c.toString()))
  const stdoutP = drain(pair.recvFd)
  const code = await new Promise<number | null>((resolve) => parent.on('close', (c) => resolve(c)))
  const parentStdout = await stdoutP
  pair.close()
  const lines = stderr.split('\n').filter(Boolean)
  const reportLine = lines.find((l) => l.startsWith('{'))
  if (code !== 0 || !reportLine) throw new Error(`parent exited ${code}:\n${stderr}`)
  const report = JSON.parse(reportLine) as Report
  const fdsLine = report.out.split('\n').find((l) => l.startsWith('fds:'))!
  const childFds = fdsLine.slice(4).trim().split(/\s+/).map(Number).sort((a, b) => a - b)
  const got = new Map<number, string>()
  for (const l of report.out.split('\n')) {
    const m = /^got (\d+) (.*)$/.exec(l)
    if (m) got.set(Number(m[1]), m[2]!)
  }
  return {report, childFds, got, parentStdout, parentStderr: lines.filter((l) => !l.startsWith('{')).join('\n'), extraOut}
}

const range = (n: number): number[] => Array.from({length: n}, (_, i) => i)

describe('buildFdMap', () => {
  it('puts stdio at 0-2 and the passed fds at 3, 4, ... in order, whatever their numbers here', () => {
    const map = buildFdMap({stdin: 'pipe', stdout: 'pipe', stderr: 'inherit', pass: [0, 1]})
    expect(map.stdio).toEqual(['pipe', 'pipe', 'inherit', 0, 1])
    expect(map.childFds).toEqual([3, 4])
    const map2 = buildFdMap({stdin: 'ignore', stdout: 2, stderr: 'pipe', pass: [2, 0, 1]})
    expect(map2.stdio).toEqual(['ignore', 2, 'pipe', 2, 0, 1])
    expect(map2.childFds).toEqual([3, 4, 5])
  })

  it('refuses an fd that is not open, naming it', () => {
    expect(() => buildFdMap({stdin: 'pipe', stdout: 'pipe', stderr: 'inherit', pass: [999]})).toThrow(/passed fd #0 \(fd 999\): is not open \(EBADF\)/)
    expect(() => buildFdMap({stdin: 'pipe', stdout: 'pipe', stderr: 'inherit', pass: [-1]})).toThrow(RangeError)
  })

  it('lists as strays only fds without close-on-exec beyond the map', () => {
    const map = buildFdMap({stdin: 'pipe', stdout: 'pipe', stderr: 'inherit', pass: []})
    for (const fd of map.strays) {
      expect(fd).toBeGreaterThanOrEqual(3)
      expect(fdFlags(fd).cloexec).toBe(false)
    }
  })
})

describe('the fd map, seen from a real child', () => {
  it('migrate-receive: our stdin and stdout become the child fds 3 and 4, its own stdin/stdout are new pipes', async () => {
    const r = await runScenario({pass: [0, 1], dirs: ['r', 'w'], stdin: 'pipe', stderr: 'inherit', closeStrays: true})
    expect(r.report.childFds).toEqual([3, 4])
    expect(r.childFds).toEqual(range(5))
    expect(r.got.get(3)).toBe('in-token') // read from the parent's fd 0
    expect(r.parentStdout).toBe('tok-1\n') // written into the parent's fd 1
    expect(r.report.strays).toEqual([])
  })

  it('fds 2, 1, 0 passed together, child stdin /dev/null and stderr ignored', async () => {
    const r = await runScenario({pass: [2, 1, 0], dirs: ['w', 'w', 'r'], stdin: 'ignore', stderr: 'ignore', closeStrays: true})
    expect(r.report.childFds).toEqual([3, 4, 5])
    expect(r.childFds).toEqual(range(6))
    expect(r.parentStderr).toBe('tok-0') // through the parent's fd 2
    expect(r.parentStdout).toBe('tok-1\n') // through the parent's fd 1
    expect(r.got.get(5)).toBe('in-token') // from the parent's fd 0
  })

  it('fds that already have the number they get (3 -> 3, 4 -> 4)', async () => {
    const r = await runScenario({pass: [3, 4], dirs: ['r', 'w'], stdin: 'pipe', stderr: 'inherit', closeStrays: true, extra: [3, 4]})
    expect(r.childFds).toEqual(range(5))
    expect(r.got.get(3)).toBe('sock-token-3')
    expect(r.extraOut.get(4)).toBe('tok-1\n')
  })

  it('swapped fds (4 -> 3, 3 -> 4)', async () => {
    const r = await runScenario({pass: [4, 3], dirs: ['r', 'w'], stdin: 'pipe', stderr: 'inherit', closeStrays: true, extra: [3, 4]})
    expect(r.childFds).toEqual(range(5))
    expect(r.got.get(3)).toBe('sock-token-4')
    expect(r.extraOut.get(3)).toBe('tok-1\n')
  })

  it('high fds the parent opened (an fd pair of its own) next to its fd 1', async () => {
    const r = await runScenario({pass: ['pairRead', 'pairWrite', 1], dirs: ['r', 'w', 'w'], stdin: 'pipe', stderr: 'inherit', closeStrays: true})
    expect(Math.min(...r.report.pass.slice(0, 2))).toBeGreaterThan(4)
    expect(r.childFds).toEqual(range(6))
    expect(r.got.get(3)).toBe('from-parent')
    expect(r.report.pairGot).toBe('tok-1\n')
    expect(r.parentStdout).toBe('tok-2\n')
  })

  it('an fd inherited without close-on-exec leaks, and buildFdMap names it in strays', async () => {
    // Node marks its fds 0..15 close-on-exec at startup (and on up to the first closed one), so a
    // parent fd 40 inherited from us keeps the flag off: a stray.
    const r = await runScenario({pass: [0], dirs: ['r'], stdin: 'pipe', stderr: 'inherit', closeStrays: false, extra: [40]})
    expect(r.report.strays).toContain(40)
    expect(r.report.inherited).toContain(40)
    expect(r.childFds).toEqual([...range(4), ...r.report.strays].sort((a, b) => a - b))
    expect(r.got.get(3)).toBe('in-token')
  })
})
