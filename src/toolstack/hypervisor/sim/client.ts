/** The toolstack's end of a domain's control socket. */
import * as net from 'node:net'

import {HypervisorError} from '../index.js'
import {encodeMessage, MessageDecoder, type Answer, type OpName, type Ops} from './protocol.js'

/** The connection failed or closed: the domain process may be gone. */
export class ConnectionLost extends Error {
  constructor(
    message: string,
    readonly errno?: string,
    /** The request was never sent (the connection was closed before): safe to send again. */
    readonly notSent = false,
  ) {
    super(message)
  }
}

interface Pending {
  resolve: (v: unknown) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
  op: string
}

export const REQUEST_TIMEOUT_MS = 30_000

export class ControlClient {
  private nextId = 1
  private pending = new Map<number, Pending>()
  private closedWith: Error | undefined

  private constructor(
    private readonly socket: net.Socket,
    readonly domid: number,
  ) {
    const decoder = new MessageDecoder()
    socket.on('data', (chunk: Buffer) => {
      let msgs: unknown[]
      try {
        msgs = decoder.push(chunk)
      } catch (e) {
        this.fail(new ConnectionLost(`domain ${domid}: bad control stream: ${(e as Error).message}`))
        socket.destroy()
        return
      }
      for (const m of msgs) this.dispatch(m as Answer)
    })
    socket.on('error', (e: NodeJS.ErrnoException) => this.fail(new ConnectionLost(`domain ${domid}: control socket: ${e.message}`, e.code)))
    socket.on('close', () => this.fail(new ConnectionLost(`domain ${domid}: control socket closed`)))
    socket.unref()
  }

  static connect(socketPath: string, domid: number): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath)
      const onError = (e: NodeJS.ErrnoException): void => reject(new ConnectionLost(`domain ${domid}: cannot connect to ${socketPath}: ${e.message}`, e.code))
      socket.once('error', onError)
      socket.once('connect', () => {
        socket.off('error', onError)
        resolve(new ControlClient(socket, domid))
      })
    })
  }

  get closed(): boolean {
    return this.closedWith !== undefined
  }

  request<K extends OpName>(op: K, args: Ops[K]['args'], timeoutMs = REQUEST_TIMEOUT_MS): Promise<Ops[K]['result']> {
    if (this.closedWith) return Promise.reject(new ConnectionLost(this.closedWith.message, undefined, true))
    const id = this.nextId++
    return new Promise<Ops[K]['result']>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        this.settle()
        reject(new HypervisorError('backend-failure', `domain ${this.domid}: no answer to ${op} within ${timeoutMs} ms`, this.domid))
      }, timeoutMs)
      this.pending.set(id, {resolve: resolve as (v: unknown) => void, reject, timer, op})
      this.socket.ref()
      this.socket.write(encodeMessage({...args, id, op}))
    })
  }

  close(): void {
    this.fail(new ConnectionLost(`domain ${this.domid}: control connection closed by us`))
    this.socket.destroy()
  }

  private settle(): void {
    if (this.pending.size === 0) this.socket.unref()
  }

  private dispatch(m: Answer): void {
    const p = this.pending.get(m.id)
    if (!p) return
    this.pending.delete(m.id)
    clearTimeout(p.timer)
    this.settle()
    if (m.ok) {
      const {id: _id, ok: _ok, ...result} = m
      p.resolve(result)
    } else p.reject(new HypervisorError(m.code, m.message, this.domid))
  }

  private fail(e: Error): void {
    if (this.closedWith) return
    this.closedWith = e
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.reject(e)
    }
    this.pending.clear()
  }
}
