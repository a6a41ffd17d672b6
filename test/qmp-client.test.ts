/**
 * The QMP client on a real unix socket against fake servers of ours (real QEMU: device-model.test.ts):
 * connecting to nothing, a server that never greets (timeout), one that is not QMP, one that refuses
 * qmp_capabilities, a socket path longer than sun_path, a server that closes with a command
 * pending, a server that sends an overlong line, and close() by us.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {QmpClient, QmpConnectionError, QmpTimeoutError} from '../src/toolstack/qmp/index.js'

const QMP_NAME = 'qmp.sock'
const GREETING = '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}\r\n'

let dir: string
const servers: net.Server[] = []
const clients: QmpClient[] = []

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-client-'))
})
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()))
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))))
})
afterAll(() => {
  fs.rmSync(dir, {recursive: true, force: true})
})

type Handler = (socket: net.Socket, next: () => Promise<string>) => void | Promise<void>

/** A fake QMP server on `<dir>/<name>`; the handler gets each connection and a reader of its lines. */
async function fakeServer(name: string, handler: Handler): Promise<string> {
  const file = path.join(dir, name)
  const server = net.createServer((socket) => {
    let buf = ''
    const waiting: ((l: string) => void)[] = []
    const lines: string[] = []
    socket.on('data', (d) => {
      buf += d.toString()
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const l = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        const w = waiting.shift()
        if (w) w(l)
        else lines.push(l)
      }
    })
    socket.on('error', () => {})
    const next = (): Promise<string> => {
      const l = lines.shift()
      return l !== undefined ? Promise.resolve(l) : new Promise((resolve) => waiting.push(resolve))
    }
    void handler(socket, next)
  })
  servers.push(server)
  // A path longer than sun_path is listened on through /proc/self/fd, as the client connects.
  const fd = Buffer.byteLength(file) > 107 ? fs.openSync(path.dirname(file), 'r') : undefined
  const target = fd === undefined ? file : `/proc/self/fd/${fd}/${path.basename(file)}`
  await new Promise<void>((resolve) => server.listen(target, resolve))
  if (fd !== undefined) fs.closeSync(fd)
  return file
}

/** Greets, answers qmp_capabilities, then hands over. */
const negotiating =
  (then?: Handler): Handler =>
  async (socket, next) => {
    socket.write(GREETING)
    const caps = JSON.parse(await next())
    expect(caps.execute).toBe('qmp_capabilities')
    socket.write(`{"return": {}, "id": ${caps.id}}\r\n`)
    await then?.(socket, next)
  }

async function connect(file: string, options: Parameters<typeof QmpClient.connect>[1] = {}): Promise<QmpClient> {
  const c = await QmpClient.connect(file, options)
  clients.push(c)
  return c
}

describe('QmpClient.connect', () => {
  it('connects, keeps the greeting and the version, and runs commands', async () => {
    const file = await fakeServer('ok.sock', negotiating(async (socket, next) => {
      const cmd = JSON.parse(await next())
      socket.write(`{"event": "STOP"}\r\n{"return": {"status": "paused"}, "id": ${cmd.id}}\r\n`)
    }))
    const c = await connect(file)
    expect(c.version).toBe('7.2.0')
    expect(c.greeting.version.package).toBe('fake')
    expect(c.label).toBe(file)
    const mark = c.eventSeq
    expect(await c.execute('query-status')).toEqual({status: 'paused'})
    expect((await c.waitEvent('STOP', {since: mark})).event).toBe('STOP')
  })

  it('fails with connect + ENOENT when nothing is there, ECONNREFUSED when nobody listens', async () => {
    const missing = await QmpClient.connect(path.join(dir, 'none.sock')).catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(QmpConnectionError)
    expect(missing).toMatchObject({code: 'connect', errno: 'ENOENT'})
    expect((missing as Error).message).toMatch(/cannot connect to .*none\.sock/)
    // A socket file left by a dead server: a hard link to a listening socket outlives its close.
    const live = path.join(dir, 'live.sock')
    const stale = path.join(dir, 'stale.sock')
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(live, resolve))
    fs.linkSync(live, stale)
    await new Promise((resolve) => server.close(resolve))
    const refused = await QmpClient.connect(stale).catch((e: unknown) => e)
    expect(refused).toMatchObject({code: 'connect', errno: 'ECONNREFUSED'})
    // A long path into a folder that is not there.
    const deep = path.join(dir, 'n'.repeat(120), QMP_NAME)
    await expect(QmpClient.connect(deep)).rejects.toMatchObject({code: 'connect', errno: 'ENOENT'})
  })

  it('times out, naming the socket, when no greeting comes', async () => {
    const file = await fakeServer('mute.sock', () => {})
    const t0 = Date.now()
    const err = await QmpClient.connect(file, {timeoutMs: 150, label: 'QEMU pid 7'}).catch((e: unknown) => e)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140)
    expect(err).toBeInstanceOf(QmpTimeoutError)
    expect(err).toMatchObject({kind: 'connect', timeoutMs: 150})
    expect((err as Error).message).toBe(`QEMU pid 7: no QMP greeting on ${file} within 150 ms`)
  })

  it('refuses a server that is not QMP, and one that refuses capabilities', async () => {
    const http = await fakeServer('http.sock', (socket) => {
      socket.write('HTTP/1.1 400 Bad Request\r\n\r\n')
    })
    await expect(QmpClient.connect(http)).rejects.toMatchObject({code: 'protocol'})
    const json = await fakeServer('json.sock', (socket) => {
      socket.write('{"hello": 1}\r\n')
    })
    const e = await QmpClient.connect(json).catch((x: unknown) => x)
    expect(e).toMatchObject({code: 'not-qmp'})
    expect((e as Error).message).toMatch(/expected a QMP greeting, got "\{\\"hello\\": 1\}"/)
    const refusing = await fakeServer('refusing.sock', async (socket, next) => {
      socket.write(GREETING)
      const caps = JSON.parse(await next())
      socket.write(`{"error": {"class": "CommandNotFound", "desc": "no"}, "id": ${caps.id}}\r\n`)
    })
    await expect(QmpClient.connect(refusing)).rejects.toThrow(/capabilities negotiation refused: CommandNotFound: no/)
  })

  it('reaches a socket whose path is longer than sun_path', async () => {
    const deep = path.join(dir, 'd'.repeat(60), 'e'.repeat(60))
    fs.mkdirSync(deep, {recursive: true})
    const file = await fakeServer(path.relative(dir, path.join(deep, 'qmp.sock')), negotiating())
    expect(Buffer.byteLength(file)).toBeGreaterThan(107)
    const c = await connect(file)
    expect(c.socketPath).toBe(file)
  })
})

describe('QmpClient after connect', () => {
  it('rejects a pending command with "closed by QEMU" naming it when the server goes', async () => {
    const file = await fakeServer('dies.sock', negotiating(async (socket, next) => {
      await next()
      socket.destroy()
    }))
    const c = await connect(file)
    const err = await c.execute('xen-colo-do-checkpoint').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(QmpConnectionError)
    expect(err).toMatchObject({code: 'closed'})
    expect((err as Error).message).toMatch(/QMP connection closed by QEMU.*; no reply to "xen-colo-do-checkpoint"$/)
    expect(c.isOpen).toBe(false)
    await expect(c.execute('query-status')).rejects.toThrow(/connection is closed .*cannot run "query-status"/)
  })

  it('drops the connection on an overlong line', async () => {
    const file = await fakeServer('long.sock', negotiating(async (socket, next) => {
      await next()
      socket.write(`{"return": "${'y'.repeat(5000)}"`)
      socket.write('x'.repeat(5000))
    }))
    const c = await connect(file, {maxLineBytes: 4096})
    const err = await c.execute('query-qmp-schema').catch((e: unknown) => e)
    expect(err).toMatchObject({code: 'protocol'})
    expect((err as Error).message).toMatch(/a line of more than 4096 bytes.*no reply to "query-qmp-schema"/)
    expect((await c.ended).code).toBe('protocol')
  })

  it('close() rejects what is pending with "closed by us" and can be called twice', async () => {
    const file = await fakeServer('quiet.sock', negotiating())
    const c = await connect(file)
    const p = c.execute('query-status')
    const w = c.waitEvent('SHUTDOWN')
    const closing = c.close()
    await expect(p).rejects.toThrow(/QMP connection closed by us; no reply to "query-status"$/)
    await expect(w).rejects.toThrow(/closed by us; no event "SHUTDOWN"$/)
    await closing
    await c.close()
    expect(c.endReason?.code).toBe('closed')
  })
})
