/**
 * The helper client against a fake helper of ours: a real process that plays a scripted sequence of
 * messages (encoded with our protocol.ts), reads our replies from its stdin exactly as Xen's helper
 * does (and reports them on stderr), and can also report its argv and fds, use its stream fd, send raw
 * garbage, exit early, die by a signal, or handle SIGTERM like Xen's save helper. Good runs (save,
 * restore, async callbacks) and bad ones (failure retval, no completion, no results, wrong order,
 * unannounced or wrong-mode callbacks, garbage, bytes while a reply is owed, callbacks that throw,
 * abort, a helper that cannot be started).
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {fdFlags, openFdPair, readExact, writeAllSync, type FdPair} from '../src/toolstack/fd/index.js'
import {
  HELPER_ENV,
  HelperError,
  STREAM_TYPE,
  XCFLAGS,
  defaultHelperScript,
  resolveHelperCommand,
  startHelper,
  type HelperCallbacks,
  type HelperLogEvent,
  type HelperMessage,
  type HelperParams,
  type StartHelperOptions,
} from '../src/toolstack/helper/index.js'
import {ensureBuilt} from './support/build.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const DIST_PROTOCOL = path.join(ROOT, 'dist/toolstack/helper/protocol.js')


type Step =
  | {send: HelperMessage; noWait?: boolean}
  | {raw: string}
  | {exit: number}
  | {kill: NodeJS.Signals}
  | {sleep: number}
  | {report: true}
  | {readIo: number}
  | {writeIo: string}
  | {onTerm: 'complete' | 'die'}
  | {block: true}

/** The fake helper. Its script comes in FAKE_SCRIPT (JSON; bigints as strings ending in n). */
const FAKE = (protocol: string) => `
import * as fs from 'node:fs'
import {encodeHelperMessage, decodeHelperReply} from ${JSON.stringify(protocol)}
const steps = JSON.parse(process.env.FAKE_SCRIPT, (k, v) => (typeof v === 'string' && /^\\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v))
const argv = process.argv.slice(2)
const ioFd = Number(argv[1])
const writeAll = (fd, b) => { let o = 0; while (o < b.length) o += fs.writeSync(fd, b, o, b.length - o) }
const readN = (fd, n) => { const b = Buffer.alloc(n); let o = 0; while (o < n) { const k = fs.readSync(fd, b, o, n - o, null); if (k === 0) return null; o += k } return b }
const note = (t) => fs.writeSync(2, 'fake: ' + t + '\\n')
const NEEDS_REPLY = new Set(['suspend', 'postcopy', 'checkpoint', 'wait_checkpoint', 'switch_qemu_logdirty', 'static_data_done', 'complete'])
const send = (m, noWait) => {
  writeAll(1, encodeHelperMessage(m))
  if (!NEEDS_REPLY.has(m.type) || noWait) return
  const r = readN(0, 4)
  if (!r) { note('EOF instead of a reply'); process.exit(254) }
  note('reply ' + m.type + ' ' + decodeHelperReply(r))
}
const link = (fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd) } catch { return null } }
const nonBlocking = (fd) => { try { return (parseInt(/flags:\\s*([0-7]+)/.exec(fs.readFileSync('/proc/self/fdinfo/' + fd, 'latin1'))[1], 8) & 0o4000) !== 0 } catch { return null } }
const sleeper = new Int32Array(new SharedArrayBuffer(4))
for (const s of steps) {
  if (s.send) send(s.send, s.noWait)
  else if (s.raw !== undefined) writeAll(1, Buffer.from(s.raw, 'hex'))
  else if (s.exit !== undefined) process.exit(s.exit)
  else if (s.kill) process.kill(process.pid, s.kill)
  else if (s.sleep) Atomics.wait(sleeper, 0, 0, s.sleep)
  else if (s.report) send({type: 'log', level: 5, errnoval: 0, context: 'fake', formatted: JSON.stringify({argv, fd3: link(3), fd4: link(4), nb3: nonBlocking(3), nb4: nonBlocking(4), certs: process.env.NODE_EXTRA_CA_CERTS ?? null, mark: process.env.FAKE_MARK ?? null})})
  else if (s.readIo) send({type: 'log', level: 5, errnoval: 0, context: 'fake-io', formatted: String(readN(ioFd, s.readIo))})
  else if (s.writeIo) writeAll(ioFd, Buffer.from(s.writeIo))
  else if (s.onTerm === 'complete') process.on('SIGTERM', () => { send({type: 'complete', retval: -1, errnoval: 4}); process.exit(0) })
  else if (s.onTerm === 'die') process.on('SIGTERM', () => process.exit(143))
  else if (s.block) { setInterval(() => {}, 1000); break }
}
`

let dir: string
let fakeJs: string
const pairs: FdPair[] = []

beforeAll(async () => {
  await ensureBuilt()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-ts-helper-client-'))
  fakeJs = path.join(dir, 'fake-helper.mjs')
  fs.writeFileSync(fakeJs, FAKE(pathToFileURL(DIST_PROTOCOL).href))
})

afterAll(() => {
  for (const p of pairs) p.close()
  fs.rmSync(dir, {recursive: true, force: true})
})

async function pair(): Promise<FdPair> {
  const p = await openFdPair()
  pairs.push(p)
  return p
}

const json = (v: unknown): string => JSON.stringify(v, (_, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x))

interface Played {
  run: ReturnType<typeof startHelper>
  logs: HelperLogEvent[]
  calls: string[]
}

function play(steps: Step[], params: HelperParams, callbacks: HelperCallbacks = {}, extra: Partial<StartHelperOptions> = {}): Played {
  const logs: HelperLogEvent[] = []
  const calls: string[] = []
  const run = startHelper({
    params,
    callbacks: {onLog: (e) => logs.push(e), ...callbacks},
    command: {file: process.execPath, args: [fakeJs]},
    env: {...process.env, FAKE_SCRIPT: json(steps)},
    stderr: 'pipe',
    ...extra,
  })
  return {run, logs, calls}
}

async function failure(p: Played): Promise<HelperError> {
  const e = await p.run.done.then(
    () => undefined,
    (err: unknown) => err,
  )
  expect(e).toBeInstanceOf(HelperError)
  return e as HelperError
}

const save = async (more: Partial<Extract<HelperParams, {mode: 'save'}>> = {}): Promise<HelperParams> => ({
  mode: 'save',
  ioFd: (await pair()).sendFd,
  domid: 7,
  xcflags: XCFLAGS.LIVE,
  streamType: STREAM_TYPE.PLAIN,
  ...more,
})
const restore = async (more: Partial<Extract<HelperParams, {mode: 'restore'}>> = {}): Promise<HelperParams> => ({
  mode: 'restore',
  ioFd: (await pair()).childStdin,
  domid: 9,
  storeEvtchn: 1,
  storeDomid: 0,
  consoleEvtchn: 2,
  consoleDomid: 0,
  streamType: STREAM_TYPE.PLAIN,
  ...more,
})

const replies = (stderr: string | undefined): string[] => (stderr ?? '').split('\n').filter((l) => l.startsWith('fake: reply ')).map((l) => l.slice(12))

describe('resolving the helper command', () => {
  it('LIBXL_SAVE_HELPER wins, run as it is; else our helper, built and bundled (dist/bundle/save-helper.js), under this Node', () => {
    expect(resolveHelperCommand({[HELPER_ENV]: '/usr/lib/xen/bin/libxl-save-helper'})).toEqual({file: '/usr/lib/xen/bin/libxl-save-helper', args: []})
    expect(resolveHelperCommand({})).toEqual({file: process.execPath, args: [path.join(ROOT, 'dist/bundle/save-helper.js')]})
    expect(defaultHelperScript()).toBe(path.join(ROOT, 'dist/bundle/save-helper.js'))
  })

  it('a helper run by this Node starts without NODE_EXTRA_CA_CERTS (40 ms of every Node start), with the rest of the environment', async () => {
    const steps: Step[] = [{report: true}, {send: {type: 'complete', retval: 0, errnoval: 0}}]
    const played = play(steps, await save(), {suspend: () => 1}, {
      env: {...process.env, NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt', FAKE_MARK: 'kept', FAKE_SCRIPT: json(steps)},
    })
    await played.run.done
    expect(JSON.parse(played.logs[0]!.message)).toMatchObject({certs: null, mark: 'kept'})
  })

  it('a helper named by LIBXL_SAVE_HELPER gets the environment as given', async () => {
    const wrapper = path.join(dir, 'helper-wrapper-env.sh')
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec "${process.execPath}" "${fakeJs}" "$@"\n`, {mode: 0o755})
    const steps: Step[] = [{report: true}, {send: {type: 'complete', retval: 0, errnoval: 0}}]
    const logs: HelperLogEvent[] = []
    const run = startHelper({
      params: await save(),
      callbacks: {suspend: () => 1, onLog: (e) => logs.push(e)},
      env: {...process.env, [HELPER_ENV]: wrapper, NODE_EXTRA_CA_CERTS: '/etc/ssl/certs/ca-certificates.crt', FAKE_SCRIPT: json(steps)},
      stderr: 'pipe',
    })
    await run.done
    expect(JSON.parse(logs[0]!.message)).toMatchObject({certs: '/etc/ssl/certs/ca-certificates.crt'})
  })

  it('runs what LIBXL_SAVE_HELPER names when no command is given', async () => {
    const wrapper = path.join(dir, 'helper-wrapper.sh')
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec "${process.execPath}" "${fakeJs}" "$@"\n`, {mode: 0o755})
    const steps: Step[] = [{send: {type: 'complete', retval: 0, errnoval: 0}}]
    const run = startHelper({
      params: await save(),
      callbacks: {suspend: () => 1},
      env: {...process.env, [HELPER_ENV]: wrapper, FAKE_SCRIPT: json(steps)},
      stderr: 'pipe',
    })
    expect(run.argv[0]).toBe(wrapper)
    const out = await run.done
    expect(out.retval).toBe(0)
  })
})

describe('good runs', () => {
  it('save: argv, fd map, logs, progress, callbacks in order with their replies, complete', async () => {
    const p = await pair()
    const calls: string[] = []
    const progress: string[] = []
    const steps: Step[] = [
      {report: true},
      {send: {type: 'log', level: 1, errnoval: 0, context: 'libxl-save-helper', formatted: 'starting save'}},
      {send: {type: 'switch_qemu_logdirty', domid: 7, enable: 1}},
      {writeIo: 'page data'},
      {send: {type: 'progress', context: 'xc', doingWhat: 'Frames', done: 512, total: 1024}},
      {send: {type: 'suspend'}},
      {send: {type: 'switch_qemu_logdirty', domid: 7, enable: 0}},
      {send: {type: 'log', level: 7, errnoval: 11, context: 'xc', formatted: 'a warning'}},
      {send: {type: 'complete', retval: 0, errnoval: 0}},
    ]
    const played = play(steps, {mode: 'save', ioFd: p.sendFd, domid: 7, xcflags: XCFLAGS.LIVE, streamType: STREAM_TYPE.PLAIN}, {
      onProgress: (e) => progress.push(`${e.doingWhat} ${e.done}/${e.total}`),
      switchQemuLogdirty: (domid, enable) => (calls.push(`logdirty ${domid} ${enable}`), enable ? 0 : 5),
      suspend: async () => {
        calls.push('suspend')
        await new Promise((r) => setTimeout(r, 30))
        return 1
      },
    })
    expect(played.run.cbflags).toBe(0x88)
    expect(played.run.argv.slice(2)).toEqual(['--save-domain', '3', '-1', '7', '1', '136', '0'])
    expect(played.run.args).toMatchObject({mode: 'save', ioFd: 3, recvFd: -1})
    const out = await played.run.done
    expect(out).toMatchObject({retval: 0, errnoval: 0, messages: 8, exit: {code: 0, signal: null}})
    expect(out.restoreResults).toBeUndefined()
    expect(calls).toEqual(['logdirty 7 true', 'suspend', 'logdirty 7 false'])
    expect(replies(out.stderr)).toEqual(['switch_qemu_logdirty 0', 'suspend 1', 'switch_qemu_logdirty 5', 'complete 0'])
    expect(progress).toEqual(['Frames 512/1024'])
    const report = JSON.parse(played.logs[0]!.message) as {argv: string[]; fd3: string; fd4: string | null}
    expect(report.argv).toEqual(['--save-domain', '3', '-1', '7', '1', '136', '0'])
    expect(report.fd3).toBe(fs.readlinkSync(`/proc/self/fd/${p.sendFd}`))
    expect((await readExact(p.childStdin, 9)).toString()).toBe('page data')
    expect(played.logs.slice(1)).toEqual([
      {level: 1, levelName: 'debug', errnoval: 0, context: 'libxl-save-helper', message: 'starting save'},
      {level: 7, levelName: 'warn', errnoval: 11, errnoName: 'EAGAIN', context: 'xc', message: 'a warning'},
    ])
  })

  it('COLO save: stream and back channel become fds 3 and 4', async () => {
    const p = await pair()
    const f = (): number => 1
    const played = play([{report: true}, {send: {type: 'complete', retval: 0, errnoval: 0}}], {
      mode: 'save',
      ioFd: p.sendFd,
      recvFd: p.recvFd,
      domid: 3,
      xcflags: XCFLAGS.LIVE,
      streamType: STREAM_TYPE.COLO,
    }, {suspend: f, postcopy: f, checkpoint: f, waitCheckpoint: f, switchQemuLogdirty: f})
    await played.run.done
    const report = JSON.parse(played.logs[0]!.message) as {argv: string[]; fd3: string; fd4: string}
    expect(report.argv).toEqual(['--save-domain', '3', '4', '3', '1', '248', '2'])
    expect(report.fd3).toBe(fs.readlinkSync(`/proc/self/fd/${p.sendFd}`))
    expect(report.fd4).toBe(fs.readlinkSync(`/proc/self/fd/${p.recvFd}`))
  })

  it('a non-blocking stream fd (our stdout under oclif) reaches the helper as a blocking reopen of the same pipe', async () => {
    const fifo = path.join(dir, 'nb-fifo')
    await execa('mkfifo', [fifo])
    const r = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    const w = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
    fs.unlinkSync(fifo)
    try {
      const played = play([{report: true}, {writeIo: 'through a blocking copy'}, {send: {type: 'complete', retval: 0, errnoval: 0}}], {
        mode: 'save',
        ioFd: w,
        domid: 1,
        xcflags: 0,
        streamType: STREAM_TYPE.PLAIN,
      })
      expect(played.run.reopened).toEqual([w])
      expect(played.run.warnings).toEqual([])
      await played.run.done
      const report = JSON.parse(played.logs[0]!.message) as {fd3: string; nb3: boolean}
      expect(report.nb3).toBe(false)
      expect(report.fd3).toBe(fs.readlinkSync(`/proc/self/fd/${w}`))
      expect(fdFlags(w).nonBlocking).toBe(true) // ours is left as it was
      const got = Buffer.alloc(23)
      expect(fs.readSync(r, got)).toBe(23)
      expect(got.toString()).toBe('through a blocking copy')
      // Without ensureBlocking the helper gets the non-blocking description itself.
      const asIs = play([{report: true}, {send: {type: 'complete', retval: 0, errnoval: 0}}], {mode: 'save', ioFd: w, domid: 1, xcflags: 0, streamType: STREAM_TYPE.PLAIN}, {}, {ensureBlocking: false})
      await asIs.run.done
      expect(asIs.run.reopened).toEqual([])
      expect((JSON.parse(asIs.logs[0]!.message) as {nb3: boolean}).nb3).toBe(true)
    } finally {
      fs.closeSync(r)
      fs.closeSync(w)
    }
  })

  it('restore: reads its stream, static_data_done (sync), restore_results, complete', async () => {
    const p = await pair()
    writeAllSync(p.sendFd, [Buffer.from('libxc stream')])
    const got: string[] = []
    const played = play(
      [
        {readIo: 12},
        {send: {type: 'static_data_done', missing: 1}},
        {send: {type: 'restore_results', storeGfn: 0xfeffcn, consoleGfn: 0xfeffbn}},
        {send: {type: 'complete', retval: 0, errnoval: 0}},
      ],
      {mode: 'restore', ioFd: p.childStdin, sendBackFd: p.childStdout, domid: 9, storeEvtchn: 1, storeDomid: 0, consoleEvtchn: 2, consoleDomid: 0, streamType: STREAM_TYPE.PLAIN},
      {
        staticDataDone: (missing) => (got.push(`sdd ${missing}`), 0),
        restoreResults: (s, c) => void got.push(`results ${s.toString(16)} ${c.toString(16)}`),
      },
    )
    expect(played.run.argv.slice(2)).toEqual(['--restore-domain', '3', '4', '9', '1', '0', '2', '0', '768', '0'])
    const out = await played.run.done
    expect(out.restoreResults).toEqual({storeGfn: 0xfeffcn, consoleGfn: 0xfeffbn})
    expect(got).toEqual(['sdd 1', 'results feffc feffb'])
    expect(played.logs[0]).toMatchObject({context: 'fake-io', message: 'libxc stream'})
    expect(replies(out.stderr)).toEqual(['static_data_done 0', 'complete 0'])
  })

  it('restore_results is accepted even when cbflags did not announce it (the helper sends it from main())', async () => {
    const played = play(
      [{send: {type: 'restore_results', storeGfn: 1n, consoleGfn: 2n}}, {send: {type: 'complete', retval: 0, errnoval: 0}}],
      await restore(),
      {},
      {cbflags: 0},
    )
    expect(played.run.cbflags).toBe(0)
    expect((await played.run.done).restoreResults).toEqual({storeGfn: 1n, consoleGfn: 2n})
  })

  it('COLO restore: restore_results per checkpoint, the last one counts', async () => {
    const f = (): number => 1
    const played = play(
      [
        {send: {type: 'checkpoint'}},
        {send: {type: 'restore_results', storeGfn: 1n, consoleGfn: 2n}},
        {send: {type: 'postcopy'}},
        {send: {type: 'wait_checkpoint'}},
        {send: {type: 'suspend'}},
        {send: {type: 'restore_results', storeGfn: 3n, consoleGfn: 4n}},
        {send: {type: 'complete', retval: 0, errnoval: 0}},
      ],
      await restore({streamType: STREAM_TYPE.COLO}),
      {checkpoint: () => 1, postcopy: f, waitCheckpoint: f, suspend: () => 2, staticDataDone: () => 0},
    )
    expect(played.run.cbflags).toBe(0x378)
    const out = await played.run.done
    expect(out.restoreResults).toEqual({storeGfn: 3n, consoleGfn: 4n})
    expect(replies(out.stderr)).toEqual(['checkpoint 1', 'postcopy 1', 'wait_checkpoint 1', 'suspend 2', 'complete 0'])
  })
})

describe('how a run ends badly', () => {
  it('complete with a failure retval: HelperError failed naming retval and errno', async () => {
    const played = play(
      [
        {send: {type: 'log', level: 8, errnoval: 5, context: 'xc', formatted: 'Failed to write page data'}},
        {send: {type: 'complete', retval: -1, errnoval: 5}},
      ],
      await save(),
      {suspend: () => 1},
    )
    const e = await failure(played)
    expect(e.code).toBe('failed')
    expect(e.info).toMatchObject({retval: -1, errnoval: 5, errnoName: 'EIO', completed: true})
    expect(e.message).toBe(
      'domain 7 save/restore helper reported failure: retval -1, errno 5 (EIO: i/o error); last error: xc: Failed to write page data (EIO)',
    )
    expect(e.lastError).toMatchObject({context: 'xc', message: 'Failed to write page data'})
  })

  it('exits without complete: "exited without signaling completion" with the exit status', async () => {
    const played = play(
      [{send: {type: 'log', level: 8, errnoval: 2, context: 'libxl-save-helper', formatted: 'xc_interface_open failed'}}, {exit: 255}],
      await save(),
    )
    const e = await failure(played)
    expect(e.code).toBe('no-completion')
    expect(e.exit).toMatchObject({code: 255, signal: null})
    expect(e.message).toMatch(
      /^domain 7 save\/restore helper exited without signaling completion \(\[\d+\] exited with error status 255\); last error: libxl-save-helper: xc_interface_open failed \(ENOENT\)$/,
    )
    expect(e.info.completed).toBe(false)
  })

  it('dies by a signal: named as libxl names it', async () => {
    const e = await failure(play([{kill: 'SIGSEGV'}], await save()))
    expect(e.code).toBe('no-completion')
    expect(e.exit).toMatchObject({code: null, signal: 'SIGSEGV'})
    expect(e.message).toMatch(/exited without signaling completion \(\[\d+\] died due to fatal signal Segmentation fault \(SIGSEGV\)\)$/)
  })

  it('output that ends inside a message, then exit', async () => {
    const e = await failure(play([{raw: '0a000a00ff'}, {exit: 0}], await save()))
    expect(e.code).toBe('no-completion')
    expect(e.message).toMatch(/\[\d+\] exited with status 0\); its output ended inside a message \(output ended after 3 of 10 body bytes\)$/)
  })

  it('restore that completes without restore_results: "exited without providing results"', async () => {
    const e = await failure(play([{send: {type: 'complete', retval: 0, errnoval: 0}}], await restore()))
    expect(e.code).toBe('no-results')
    expect(e.message).toBe('domain 9 save/restore helper exited without providing results')
  })

  it('complete, then a non-zero exit status', async () => {
    const e = await failure(play([{send: {type: 'complete', retval: 0, errnoval: 0}}, {exit: 3}], await save()))
    expect(e.code).toBe('exit-status')
    expect(e.message).toMatch(/^domain 7 save\/restore helper \[\d+\] exited with error status 3 after signaling completion \(retval 0\)$/)
  })
})

describe('protocol violations (SIGKILL)', () => {
  const expectViolation = async (p: Played, re: RegExp, message?: string): Promise<HelperError> => {
    const e = await failure(p)
    expect(e.code).toBe('protocol')
    expect(e.info.killedWith).toBe('SIGKILL')
    expect(e.exit).toMatchObject({signal: 'SIGKILL'})
    expect(e.message).toMatch(re)
    if (message) expect(e.info.message).toBe(message)
    return e
  }

  it('a callback cbflags did not announce', async () => {
    await expectViolation(
      play([{send: {type: 'postcopy'}}, {block: true}], await save(), {suspend: () => 1, switchQemuLogdirty: () => 0}),
      /broke the protocol: sent postcopy \(message #0\), a callback cbflags 0x88 did not announce; killed it with SIGKILL/,
      'postcopy',
    )
  })

  it('a message of the other mode (static_data_done from a save helper)', async () => {
    await expectViolation(play([{send: {type: 'static_data_done', missing: 0}}, {block: true}], await save()), /sent static_data_done \(message #0\), which a save helper never sends/)
  })

  it('restore_results from a save helper', async () => {
    await expectViolation(play([{send: {type: 'restore_results', storeGfn: 1n, consoleGfn: 1n}}, {block: true}], await save()), /which a save helper never sends/)
  })

  it('anything after complete', async () => {
    await expectViolation(
      play([{send: {type: 'complete', retval: 0, errnoval: 0}}, {send: {type: 'log', level: 1, errnoval: 0, context: 'x', formatted: 'late'}}, {block: true}], await save()),
      /sent log \(message #1\) after complete/,
    )
  })

  it('a second complete', async () => {
    await expectViolation(
      play([{send: {type: 'complete', retval: 0, errnoval: 0}}, {send: {type: 'complete', retval: 0, errnoval: 0}}, {block: true}], await save()),
      /sent complete \(message #1\) after complete/,
    )
  })

  it('garbage: an unknown message type', async () => {
    const e = await expectViolation(play([{raw: '04006300aaaa'}, {block: true}], await save()), /unknown msgtype 99/)
    expect(e.info.protocolError).toMatchObject({code: 'unknown-message', offset: 0, index: 0})
  })

  it('garbage: a malformed string', async () => {
    const e = await expectViolation(play([{raw: '0e000100010000000000000000000000'}, {block: true}], await save()), /context has length 0/)
    expect(e.info.protocolError?.code).toBe('bad-string')
  })

  it('more messages after a callback, without waiting for its reply', async () => {
    await expectViolation(
      play(
        [{send: {type: 'suspend'}, noWait: true}, {send: {type: 'log', level: 1, errnoval: 0, context: 'x', formatted: 'too early'}}, {block: true}],
        await save(),
        {suspend: async () => (await new Promise((r) => setTimeout(r, 200)), 1)},
      ),
      /(sent more messages after suspend|while the reply to suspend was owed)/,
    )
  })
})

describe('our side failing, and abort', () => {
  it('a callback that throws: its stdin is closed and it gets SIGTERM (a helper blocked on the reply sees EOF)', async () => {
    // The fake handles SIGTERM in JS, which cannot run while it is blocked reading the reply: only
    // the closed stdin gets it out (Xen's helper exits -2 on that EOF, as this one does).
    const played = play([{onTerm: 'complete'}, {send: {type: 'suspend'}}, {block: true}], await save(), {
      suspend: () => {
        throw new Error('guest did not suspend')
      },
    })
    const e = await failure(played)
    expect(e.code).toBe('callback')
    expect(e.message).toMatch(/^domain 7 save\/restore helper: the suspend callback failed: guest did not suspend; aborted it with SIGTERM \(\[\d+\] exited with error status 254\)$/)
    expect(e.info).toMatchObject({killedWith: 'SIGTERM', message: 'suspend', completed: false})
    expect(e.info.stderr).toMatch(/EOF instead of a reply/)
  })

  it('a helper that ignores SIGTERM gets SIGKILL after the grace period', async () => {
    const played = play([{onTerm: 'die'}, {sleep: 3000}], await save(), {}, {killGraceMs: 300})
    await new Promise((r) => setTimeout(r, 200))
    played.run.abort()
    const e = await failure(played)
    expect(e.code).toBe('aborted')
    expect(e.info.killedWith).toBe('SIGKILL')
    expect(e.exit).toMatchObject({signal: 'SIGKILL'})
  })

  it('a callback that returns something that is not an int', async () => {
    const e = await failure(play([{send: {type: 'suspend'}}, {block: true}], await save(), {suspend: () => 1.5}))
    expect(e.code).toBe('callback')
    expect(e.message).toMatch(/the suspend callback failed: returned 1.5, not an int/)
  })

  it('abort(): SIGTERM; a restore helper dies of it', async () => {
    const played = play([{send: {type: 'log', level: 5, errnoval: 0, context: 'x', formatted: 'restoring'}}, {block: true}], await restore())
    await new Promise((r) => setTimeout(r, 200))
    played.run.abort()
    const e = await failure(played)
    expect(e.code).toBe('aborted')
    expect(e.exit).toMatchObject({signal: 'SIGTERM'})
    expect(e.message).toMatch(/aborted with SIGTERM \(\[\d+\] died due to fatal signal Terminated \(SIGTERM\)\)$/)
    expect(played.logs.map((l) => l.message)).toEqual(['restoring'])
  })

  it('an AbortSignal aborts it; a save helper that completes on SIGTERM says so', async () => {
    const ac = new AbortController()
    const played = play([{onTerm: 'complete'}, {block: true}], await save(), {suspend: () => 1}, {signal: ac.signal})
    setTimeout(() => ac.abort(), 200)
    const e = await failure(played)
    expect(e.code).toBe('aborted')
    expect(e.message).toMatch(/aborted with SIGTERM \(\[\d+\] exited with status 0\); it completed with retval -1, errno EINTR: interrupted system call$/)
  })

  it('abort after the end does nothing', async () => {
    const played = play([{send: {type: 'complete', retval: 0, errnoval: 0}}], await save())
    await played.run.done
    played.run.abort()
  })

  it('a helper that cannot be started', async () => {
    const run = startHelper({params: await save(), command: {file: path.join(dir, 'no-such-helper'), args: []}})
    const e = await run.done.then(
      () => undefined,
      (err: unknown) => err as HelperError,
    )
    expect(e).toBeInstanceOf(HelperError)
    expect(e!.code).toBe('spawn')
    expect(e!.message).toMatch(/^cannot run domain 7 save\/restore helper \(.*no-such-helper\): ENOENT/)
  })

  it('bad options fail at once', async () => {
    const params = await save()
    expect(() => startHelper({params, cbflags: 0x10})).toThrow(/cbflags announce postcopy but no postcopy callback is given/)
    expect(() => startHelper({params, cbflags: 0x100})).toThrow(/bits a save helper does not know/)
    expect(() => startHelper({params: {...params, ioFd: 999}})).toThrow(/passed fd #0 \(fd 999\): is not open/)
  })
})
