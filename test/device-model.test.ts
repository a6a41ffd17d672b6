/**
 * The device-model manager and the QMP client with a real QEMU (Debian's qemu-system-x86 7.2,
 * installed by scripts/setup; never skipped): start in a folder, greeting and capabilities,
 * query-status / query-version, error replies as typed errors, STOP/RESUME events, a command timeout
 * (QEMU frozen with SIGSTOP) and its late reply, the colo-compare command line of QEMU-REPLICATION.md
 * with relative socket paths, a folder deeper than sun_path, a clean stop that leaves nothing, a
 * killed QEMU failing the pending command, start failures, one QEMU per folder, and what happens when
 * the toolstack itself dies (setpriv's parent-death signal, the exit hook, reap by pid file).
 * Everything a test starts is stopped after it, also when it fails.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {pathToFileURL} from 'node:url'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {
  DeviceModelError,
  PID_FILE,
  QMP_SOCKET,
  deviceModelArgs,
  readPidFile,
  reapDeviceModel,
  reapDeviceModels,
  startDeviceModel,
  type DeviceModel,
  type DeviceModelOptions,
  type OutputLine,
} from '../src/toolstack/device-model/index.js'
import {isAlive, procStart, waitGone} from '../src/toolstack/process/identity.js'
import {QmpCommandError, QmpConnectionError, QmpTimeoutError, type QmpAnomaly} from '../src/toolstack/qmp/index.js'
import {REPO, ensureBuilt} from './support/build.js'

const DIST_DM = pathToFileURL(path.join(REPO, 'dist/toolstack/device-model/index.js')).href

let root: string
const models: DeviceModel[] = []
/** Processes a test started outside the manager: {pid, start}. */
const strays: {pid: number; start: number}[] = []
/** Every QEMU pid seen, checked gone at the end. */
const qemuPids: {pid: number; start: number}[] = []

beforeAll(async () => {
  await ensureBuilt()
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'dm-'))
})

afterEach(async () => {
  for (const s of strays.splice(0)) {
    if (isAlive(s.pid, s.start)) process.kill(s.pid, 'SIGKILL')
    await waitGone(s.pid, s.start, 3000)
  }
  await Promise.all(
    models.splice(0).map(async (dm) => {
      if (dm.running) process.kill(dm.pid, 'SIGCONT') // a test may have frozen it
      await dm.stop({quitTimeoutMs: 2000}).catch(() => {})
    }),
  )
})

afterAll(async () => {
  for (const q of qemuPids) expect(await waitGone(q.pid, q.start, 3000), `QEMU pid ${q.pid} left`).toBe(true)
  fs.rmSync(root, {recursive: true, force: true})
})

let folders = 0
function folder(name = `d${++folders}`): string {
  const dir = path.join(root, name)
  fs.mkdirSync(dir, {recursive: true})
  return dir
}

async function start(options: Partial<DeviceModelOptions> = {}): Promise<DeviceModel> {
  const dm = await startDeviceModel({folder: options.folder ?? folder(), ...options})
  models.push(dm)
  qemuPids.push({pid: dm.pid, start: procStart(dm.pid)!})
  return dm
}

describe('a device model with real QEMU', () => {
  it('starts in its folder, answers QMP, and stops leaving nothing behind', async () => {
    const dir = folder()
    const t0 = performance.now()
    const dm = await start({folder: dir, name: 'vm1,x'})
    const startMs = performance.now() - t0
    expect(startMs).toBeLessThan(5000)
    expect(dm.running).toBe(true)
    expect(dm.diesWithParent).toBe(true)
    expect(dm.argv.slice(1)).toEqual(deviceModelArgs({name: 'vm1,x'}))
    expect(dm.argv.slice(1, 8)).toEqual(['-machine', 'none', '-nodefaults', '-nographic', '-display', 'none', '-name'])
    expect(fs.readlinkSync(`/proc/${dm.pid}/cwd`)).toBe(fs.realpathSync(dir))
    expect(fs.readlinkSync(`/proc/${dm.pid}/exe`)).toMatch(/qemu-system-x86_64$/)
    expect(readPidFile(dir)).toEqual({pid: dm.pid, start: procStart(dm.pid)})
    expect(fs.statSync(dm.socketPath).isSocket()).toBe(true)

    // Greeting (kept) and capabilities (negotiated: commands work).
    const qmp = dm.qmp
    expect(qmp.greeting.version.major).toBeGreaterThanOrEqual(7)
    expect(qmp.version).toMatch(/^\d+\.\d+\.\d+$/)
    expect(qmp.label).toBe(`QEMU pid ${dm.pid}`)
    expect(await qmp.execute('query-status')).toMatchObject({status: 'running', running: true})
    const version = await qmp.execute<{qemu: {major: number; minor: number; micro: number}; package: string}>('query-version')
    expect(version.qemu).toEqual({major: qmp.greeting.version.major, minor: qmp.greeting.version.minor, micro: qmp.greeting.version.micro})
    expect(version.package).toBe(qmp.greeting.version.package)
    expect(await qmp.execute('query-name')).toEqual({name: 'vm1,x'})

    const stopped = await dm.stop()
    expect(stopped).toMatchObject({how: 'quit', code: 0, signal: null})
    expect(stopped.ms).toBeLessThan(5000)
    expect(dm.running).toBe(false)
    expect(isAlive(dm.pid, procStart(dm.pid) ?? -1)).toBe(false)
    expect(fs.existsSync(`/proc/${dm.pid}`)).toBe(false) // reaped, not a zombie
    expect(fs.readdirSync(dir)).toEqual([]) // no socket, no pid file
    expect(qmp.isOpen).toBe(false)
    await expect(qmp.execute('query-status')).rejects.toThrow(/connection is closed/)
    expect(await dm.stop()).toBe(stopped) // again: the same result
  })

  it('maps QEMU error replies to QmpCommandError (class and desc)', async () => {
    const {qmp} = await start()
    const notFound = await qmp.execute('no-such-command').catch((e: unknown) => e)
    expect(notFound).toBeInstanceOf(QmpCommandError)
    expect(notFound).toMatchObject({command: 'no-such-command', errorClass: 'CommandNotFound', desc: 'The command no-such-command has not been found'})
    // One of the replication commands issue 8 needs, called out of order (QEMU-REPLICATION.md).
    const r = await qmp.tryExecute('xen-set-replication', {enable: true, primary: true, failover: true})
    expect(r).toMatchObject({ok: false, error: {errorClass: 'GenericError', desc: "Parameter 'failover' is only for stopping replication"}})
    const badArgs = await qmp.tryExecute('xen-set-replication', {enable: 'yes'})
    expect(badArgs.ok).toBe(false)
    if (!badArgs.ok) expect(badArgs.error.desc).toMatch(/enable/)
    // Without replication nodes (measured on 7.2): no error; with them, before start, "not running".
    expect(await qmp.execute('query-xen-replication-status')).toEqual({error: false})
    expect(await qmp.tryExecute('query-status')).toMatchObject({ok: true, value: {status: 'running'}})
  })

  it('delivers STOP and RESUME events, to listeners and to waiters', async () => {
    const {qmp} = await start()
    const seen: string[] = []
    qmp.onEvent((e) => seen.push(e.event))
    const mark = qmp.eventSeq
    await qmp.execute('stop')
    // QEMU sends STOP before the reply to stop: the wait from the mark finds it.
    const stop = await qmp.waitEvent('STOP', {since: mark, timeoutMs: 2000})
    expect(stop.timestamp?.seconds).toBeGreaterThan(0)
    expect(await qmp.execute('query-status')).toMatchObject({status: 'paused', running: false})
    const resume = qmp.waitEvent('RESUME', {timeoutMs: 2000})
    await qmp.execute('cont')
    expect((await resume).seq).toBeGreaterThan(stop.seq)
    expect(seen).toEqual(['STOP', 'RESUME'])
    await expect(qmp.waitEvent('STOP', {timeoutMs: 100})).rejects.toBeInstanceOf(QmpTimeoutError)
  })

  it('times out a command QEMU does not answer, naming it, and takes its late reply', async () => {
    const dm = await start()
    const anomalies: QmpAnomaly[] = []
    dm.qmp.onAnomaly((a) => anomalies.push(a))
    process.kill(dm.pid, 'SIGSTOP')
    try {
      const t0 = performance.now()
      const err = await dm.qmp.execute('query-status', undefined, {timeoutMs: 200}).catch((e: unknown) => e)
      expect(performance.now() - t0).toBeGreaterThanOrEqual(190)
      expect(err).toBeInstanceOf(QmpTimeoutError)
      expect(err).toMatchObject({kind: 'command', command: 'query-status', timeoutMs: 200})
      expect((err as Error).message).toBe(`QEMU pid ${dm.pid}: QMP command "query-status" got no reply within 200 ms`)
    } finally {
      process.kill(dm.pid, 'SIGCONT')
    }
    expect(await dm.qmp.execute('query-status')).toMatchObject({status: 'running'})
    expect(anomalies.map((a) => a.kind)).toEqual(['late-reply'])
    expect(dm.qmp.isOpen).toBe(true)
  })

  it('fails a pending command with a clear error when QEMU is killed', async () => {
    const dir = folder()
    const dm = await start({folder: dir})
    process.kill(dm.pid, 'SIGSTOP') // so the command is surely still waiting
    const pending = dm.qmp.execute('xen-colo-do-checkpoint').catch((e: unknown) => e)
    await new Promise((r) => setTimeout(r, 50))
    process.kill(dm.pid, 'SIGKILL')
    const err = await pending
    expect(err).toBeInstanceOf(QmpConnectionError)
    expect(err).toMatchObject({code: 'closed'})
    // The kernel resets the connection of a killed process: `(ECONNRESET)` is there or not.
    expect((err as Error).message).toMatch(new RegExp(`^QEMU pid ${dm.pid}: QMP connection closed by QEMU( \\(ECONNRESET\\))?; no reply to "xen-colo-do-checkpoint"$`))
    expect(await dm.exited).toEqual({code: null, signal: 'SIGKILL'})
    expect(await dm.stop()).toMatchObject({how: 'exited', signal: 'SIGKILL'})
    expect(fs.readdirSync(dir)).toEqual([]) // SIGKILL leaves QEMU's socket: we removed it
  })

  it('escalates from quit to SIGTERM to SIGKILL when QEMU does not go', async () => {
    const dir = folder()
    const dm = await start({folder: dir})
    process.kill(dm.pid, 'SIGSTOP') // frozen: neither quit nor SIGTERM can act
    const stopped = await dm.stop({quitTimeoutMs: 150, termTimeoutMs: 150})
    expect(stopped).toMatchObject({how: 'sigkill', code: null, signal: 'SIGKILL'})
    expect(stopped.ms).toBeGreaterThanOrEqual(290)
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it("hands QEMU's stdout to output listeners (HMP qemu-io prints there, not in the QMP reply)", async () => {
    const dm = await start({extraArgs: ['-drive', 'if=none,id=d0,driver=null-co,size=1M']})
    const lines: OutputLine[] = []
    dm.onOutput((l) => lines.push(l))
    expect(await dm.qmp.execute('human-monitor-command', {'command-line': 'qemu-io d0 "read 0 512"'})).toBe('')
    for (let i = 0; i < 200 && lines.length < 2; i++) await new Promise((r) => setTimeout(r, 10))
    expect(lines[0]).toEqual({stream: 'stdout', text: 'read 512/512 bytes at offset 0'})
    expect(dm.output('stdout')).toMatch(/^read 512\/512 bytes at offset 0\n512 bytes, 1 ops;/)
  })

  it('runs the colo-compare command line with sockets relative to a folder deeper than sun_path', async () => {
    const dir = folder(path.join('x'.repeat(60), 'y'.repeat(60)))
    expect(Buffer.byteLength(path.join(dir, QMP_SOCKET))).toBeGreaterThan(107)
    const chardev = (id: string) => ['-chardev', `socket,id=${id},path=${id}.sock,server=on,wait=off`]
    const dm = await start({
      folder: dir,
      extraArgs: [
        ...['pin', 'sin', 'out', 'notify'].flatMap(chardev),
        ...['-object', 'iothread,id=iot0'],
        ...['-object', 'colo-compare,id=comp0,primary_in=pin,secondary_in=sin,outdev=out,iothread=iot0,notify_dev=notify,compare_timeout=1000'],
      ],
    })
    const objects = await dm.qmp.execute<{name: string; type: string}[]>('qom-list', {path: '/objects'})
    expect(objects).toEqual(expect.arrayContaining([{name: 'comp0', type: 'child<colo-compare>'}, {name: 'iot0', type: 'child<iothread>'}]))
    expect(fs.readdirSync(dir).sort()).toEqual(['notify.sock', 'out.sock', 'pin.sock', PID_FILE, QMP_SOCKET, 'sin.sock'].sort())
    expect((await dm.stop()).how).toBe('quit')
    expect(fs.readdirSync(dir)).toEqual([])
  })
})

describe('device model start failures', () => {
  it('reports QEMU exiting at start with its stderr, and leaves nothing', async () => {
    const dir = folder()
    const lines: OutputLine[] = []
    const err = await start({folder: dir, extraArgs: ['-object', 'no-such-type,id=x'], onOutput: (l) => lines.push(l)}).catch((e: unknown) => e)
    expect(lines).toEqual([{stream: 'stderr', text: expect.stringMatching(/no-such-type/)}])
    expect(err).toBeInstanceOf(DeviceModelError)
    expect(err).toMatchObject({code: 'exited'})
    expect((err as Error).message).toMatch(/^QEMU pid \d+ exited \(status 1\) before it answered on QMP: .*no-such-type/)
    const pid = (err as DeviceModelError).pid!
    expect(fs.existsSync(`/proc/${pid}`)).toBe(false)
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it('refuses a missing binary, a missing folder, and a second QEMU in the same folder', async () => {
    const dir = folder()
    await expect(start({folder: dir, binary: 'qemu-system-nonexistent'})).rejects.toMatchObject({code: 'not-found'})
    await expect(start({folder: path.join(root, 'absent')})).rejects.toMatchObject({code: 'bad-folder'})
    const dm = await start({folder: dir})
    const again = await start({folder: dir}).catch((e: unknown) => e)
    expect(again).toMatchObject({code: 'in-use', pid: dm.pid})
    expect(await dm.qmp.execute('query-status')).toMatchObject({status: 'running'}) // untouched
  })

  it('times out a QEMU that never answers, and kills it', async () => {
    const dir = folder()
    // A "QEMU" that is a shell sleeping: no socket ever appears.
    const fake = path.join(root, 'fake-qemu')
    fs.writeFileSync(fake, '#!/bin/sh\nexec sleep 30\n', {mode: 0o755})
    const err = await start({folder: dir, binary: fake, startTimeoutMs: 300}).catch((e: unknown) => e)
    expect(err).toMatchObject({code: 'timeout'})
    expect((err as Error).message).toMatch(/did not answer on QMP within 300 ms/)
    expect(fs.existsSync(`/proc/${(err as DeviceModelError).pid}`)).toBe(false)
    expect(fs.readdirSync(dir)).toEqual([])
  })
})

/** Runs a Node program that starts a device model in `dir` (from dist/), prints its pid file, then exits or hangs. */
async function toolstack(dir: string, then: 'exit' | 'hang'): Promise<{node: ReturnType<typeof spawn>; qemu: {pid: number; start: number}}> {
  const code = `
    const {readPidFile, startDeviceModel} = await import(${JSON.stringify(DIST_DM)})
    await startDeviceModel({folder: ${JSON.stringify(dir)}})
    process.stdout.write(JSON.stringify(readPidFile(${JSON.stringify(dir)})) + '\\n')
    if (${JSON.stringify(then)} === 'exit') process.exit(0)
    setInterval(() => {}, 1000)`
  const node = spawn(process.execPath, ['--input-type=module', '-e', code], {stdio: ['ignore', 'pipe', 'inherit']})
  strays.push({pid: node.pid!, start: procStart(node.pid!)!})
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    node.stdout!.on('data', (d) => {
      out += d
      if (out.includes('\n')) resolve(out.trim())
    })
    node.once('exit', (c) => reject(new Error(`toolstack exited (${c}) before starting QEMU: ${out}`)))
  })
  const qemu = JSON.parse(line) as {pid: number; start: number}
  strays.push(qemu)
  qemuPids.push(qemu)
  return {node, qemu}
}

describe('no QEMU outlives its toolstack', () => {
  it('a toolstack killed with SIGKILL takes its QEMU with it (parent-death signal); reap removes the files', async () => {
    const dir = folder()
    const {node, qemu} = await toolstack(dir, 'hang')
    expect(isAlive(qemu.pid, qemu.start)).toBe(true)
    node.kill('SIGKILL')
    expect(await waitGone(qemu.pid, qemu.start, 2000)).toBe(true)
    expect(fs.readdirSync(dir).sort()).toEqual([PID_FILE, QMP_SOCKET]) // nobody was left to remove them
    expect(await reapDeviceModel(dir)).toEqual({folder: dir, how: 'stale', pid: qemu.pid, removed: [PID_FILE, QMP_SOCKET]})
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it('a toolstack that exits normally kills its QEMU and removes the files', async () => {
    const dir = folder()
    const {node, qemu} = await toolstack(dir, 'exit')
    await new Promise((resolve) => (node.exitCode === null ? node.once('exit', resolve) : resolve(null)))
    expect(await waitGone(qemu.pid, qemu.start, 2000)).toBe(true)
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it('reap ends a QEMU that another toolstack left running (pid file), and the folder is free again', async () => {
    const base = folder('host')
    const dir = folder(path.join('host', 'domains', '7'))
    // As a toolstack without setpriv would leave it: a live QEMU and its pid file.
    const q = spawn('qemu-system-x86_64', deviceModelArgs(), {cwd: dir, stdio: 'ignore'})
    const stray = {pid: q.pid!, start: procStart(q.pid!)!}
    strays.push(stray)
    qemuPids.push(stray)
    fs.writeFileSync(path.join(dir, PID_FILE), `${stray.pid} ${stray.start}\n`)
    const refused = await start({folder: dir}).catch((e: unknown) => e)
    expect(refused).toMatchObject({code: 'in-use', pid: stray.pid})
    for (let i = 0; i < 100 && !fs.existsSync(path.join(dir, QMP_SOCKET)); i++) await new Promise((r) => setTimeout(r, 10))
    const results = await reapDeviceModels(base)
    expect(results).toMatchObject([{folder: dir, how: 'sigterm', pid: stray.pid}])
    expect(results[0]!.removed).toContain(PID_FILE) // and qmp.sock unless QEMU removed it itself
    expect(fs.readdirSync(dir)).toEqual([])
    expect(isAlive(stray.pid, stray.start)).toBe(false)
    const dm = await start({folder: dir})
    expect(await reapDeviceModel(dir)).toMatchObject({how: 'stopped', pid: dm.pid, removed: []})
    expect(dm.running).toBe(false)
    expect(await reapDeviceModel(dir)).toEqual({folder: dir, how: 'none', removed: []})
  })
})
