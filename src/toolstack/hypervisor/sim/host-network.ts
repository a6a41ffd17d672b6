/**
 * The simulated host's dom0 network, as the host network port offers it: an interface is a capture
 * socket in the host's network folder, named as the interface, served by the netback of the domain
 * whose vif it is (netback.ts: u32 big-endian byte count, then the frame). The end of that stream
 * is the interface going away.
 */
import * as net from 'node:net'
import * as path from 'node:path'

import {HostNetworkError, isInterfaceName, type CaptureEnd, type FrameCapture, type HostNetwork} from '../index.js'

/** Ethernet frames as QEMU's net layer bounds them (NET_BUFSIZE is 68 KiB); a longer one is a broken stream. */
const FRAME_MAX = 69632

export class SimHostNetwork implements HostNetwork {
  /** `folder`: the host's network folder (HostLayout.netDir). */
  constructor(readonly folder: string) {}

  async capture(ifname: string, onFrame: (frame: Buffer) => void): Promise<FrameCapture> {
    if (!isInterfaceName(ifname)) throw new HostNetworkError('bad-request', `${JSON.stringify(ifname)} is not a network interface name`)
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(path.join(this.folder, ifname))
      s.once('error', (e: NodeJS.ErrnoException) => {
        const missing = e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
        reject(new HostNetworkError(missing ? 'no-such-interface' : 'failure', missing ? `no network interface ${ifname} on this host` : `cannot capture ${ifname}: ${e.message}`))
      })
      s.once('connect', () => {
        s.removeAllListeners('error')
        resolve(s)
      })
    })
    return new SocketCapture(ifname, socket, onFrame)
  }
}

class SocketCapture implements FrameCapture {
  readonly ended: Promise<CaptureEnd>
  #end!: (why: CaptureEnd) => void
  #closing = false
  #pending: Buffer = Buffer.alloc(0)

  constructor(
    readonly ifname: string,
    private readonly socket: net.Socket,
    private readonly onFrame: (frame: Buffer) => void,
  ) {
    this.ended = new Promise((resolve) => (this.#end = resolve))
    socket.on('data', (chunk: Buffer) => this.#data(chunk))
    socket.on('error', () => socket.destroy())
    socket.on('close', () => this.#end(this.#closing ? 'closed' : 'gone'))
  }

  #data(chunk: Buffer): void {
    let buf = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk
    let off = 0
    while (!this.#closing && buf.length - off >= 4) {
      const len = buf.readUInt32BE(off)
      if (len > FRAME_MAX) {
        // Not netback's framing: nothing after this can be trusted to be a frame.
        this.socket.destroy()
        return
      }
      if (buf.length - off < 4 + len) break
      this.onFrame(Buffer.from(buf.subarray(off + 4, off + 4 + len)))
      off += 4 + len
    }
    buf = buf.subarray(off)
    this.#pending = buf.length ? Buffer.from(buf) : Buffer.alloc(0)
  }

  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true
      this.socket.destroy()
    }
    await this.ended
  }
}
