/**
 * A QMP client on a unix socket: `QmpClient.connect(path)` connects, reads the greeting (it must be
 * QMP; the version is kept), runs `qmp_capabilities`, and hands back a session ready for commands
 * (session.ts: ids, events, timeouts, anomalies). `close()` ends it; commands still waiting are
 * rejected with `closed by us`, and with `closed by QEMU` when QEMU goes away.
 *
 * Socket paths longer than sun_path (107 bytes) are reached through `/proc/self/fd/<fd of the
 * folder>/<name>`, so a deep domain folder still works.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as path from 'node:path'

import {errnoCode} from '../fd/index.js'
import {QmpCommandError, QmpConnectionError, QmpTimeoutError} from './errors.js'
import {formatQmpVersion, type QmpGreeting} from './protocol.js'
import {QmpSession} from './session.js'

/** sun_path holds 108 bytes including the terminating NUL. */
const SUN_PATH_MAX = 107
/** libxl's QMP connect timeout (XEN-FACTS §8.2). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000

export interface QmpConnectOptions {
  /** For connecting, reading the greeting and negotiating capabilities together (default 5 s). */
  readonly timeoutMs?: number
  /** Names the connection in messages (default: the socket path). */
  readonly label?: string
  /** The timeout of commands and event waits that give none (default 10 s). */
  readonly commandTimeoutMs?: number
  /** The longest line QEMU may send (default 16 MiB); a longer one ends the connection. */
  readonly maxLineBytes?: number
}

/** Connects to a unix socket, however long its path. Resolves once connected. (Also used by colo/frame-channel.ts.) */
export function connectUnix(socketPath: string): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    let dirFd: number | undefined
    let target = socketPath
    if (Buffer.byteLength(socketPath) > SUN_PATH_MAX) {
      // Throws (the executor rejects) when the folder is not there.
      dirFd = fs.openSync(path.dirname(socketPath), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY)
      target = `/proc/self/fd/${dirFd}/${path.basename(socketPath)}`
    }
    const socket = net.createConnection({path: target})
    const done = () => {
      if (dirFd !== undefined) fs.closeSync(dirFd)
      dirFd = undefined
      socket.off('connect', onConnect)
      socket.off('error', onError)
    }
    const onConnect = () => {
      done()
      resolve(socket)
    }
    const onError = (err: Error) => {
      done()
      socket.destroy()
      reject(err)
    }
    socket.once('connect', onConnect)
    socket.once('error', onError)
  })
}

export class QmpClient extends QmpSession {
  readonly socketPath: string
  private closedByUs = false
  private readonly socketClosed: Promise<void>

  private constructor(
    private readonly socket: net.Socket,
    socketPath: string,
    options: QmpConnectOptions,
  ) {
    super({
      label: options.label ?? socketPath,
      send: (line) => {
        socket.write(line)
      },
      onFatal: () => socket.destroy(),
      ...(options.maxLineBytes === undefined ? {} : {maxLineBytes: options.maxLineBytes}),
      ...(options.commandTimeoutMs === undefined ? {} : {defaultTimeoutMs: options.commandTimeoutMs}),
    })
    this.socketPath = socketPath
    let errno: string | undefined
    socket.on('data', (chunk: Buffer) => this.receive(chunk))
    socket.on('error', (err) => {
      errno ??= errnoCode(err)
    })
    this.socketClosed = new Promise((resolve) => {
      socket.once('close', () => {
        const by = this.closedByUs ? 'us' : 'QEMU'
        this.end(new QmpConnectionError('closed', `${this.label}: QMP connection closed by ${by}${errno ? ` (${errno})` : ''}`, errno))
        resolve()
      })
    })
  }

  /**
   * Connects to the QMP socket at `socketPath`, reads the greeting and negotiates capabilities.
   * Rejects with QmpConnectionError `connect` (errno ENOENT, ECONNREFUSED, ...), `not-qmp`, `closed`
   * or `protocol`, or QmpTimeoutError `connect` when all that takes longer than `timeoutMs`.
   */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const label = options.label ?? socketPath
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
    let client: QmpClient | undefined
    let timedOut = false
    let deadline: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      deadline = setTimeout(() => {
        timedOut = true
        reject(new QmpTimeoutError(label, 'connect', socketPath, timeoutMs))
      }, timeoutMs)
    })
    timeout.catch(() => {})
    try {
      const connecting = connectUnix(socketPath).then((socket) => {
        if (timedOut) socket.destroy() // too late: nobody takes it
        return socket
      })
      const socket = await Promise.race([connecting, timeout]).catch((err: unknown) => {
        if (err instanceof QmpTimeoutError) throw err
        const e = err as Error
        throw new QmpConnectionError('connect', `${label}: cannot connect to ${socketPath}: ${e.message}`, errnoCode(e))
      })
      client = new QmpClient(socket, socketPath, {...options, label})
      await Promise.race([client.greetingReceived, timeout])
      await Promise.race([client.execute('qmp_capabilities'), timeout]).catch((err: unknown) => {
        if (!(err instanceof QmpCommandError)) throw err
        throw new QmpConnectionError('not-qmp', `${label}: QMP capabilities negotiation refused: ${err.errorClass}: ${err.desc}`)
      })
      return client
    } catch (err) {
      await client?.close()
      throw err
    } finally {
      clearTimeout(deadline)
    }
  }

  /** The greeting, which connect() has always read. */
  override get greeting(): QmpGreeting {
    return super.greeting!
  }

  /** QEMU's version as `major.minor.micro` (`7.2.22`). */
  get version(): string {
    return formatQmpVersion(this.greeting.version)
  }

  /** Ends the connection; commands still waiting are rejected. Resolves once the socket is closed. */
  async close(): Promise<void> {
    if (this.isOpen) {
      this.closedByUs = true
      this.end(new QmpConnectionError('closed', `${this.label}: QMP connection closed by us`))
    }
    this.socket.destroy()
    await this.socketClosed
  }
}
