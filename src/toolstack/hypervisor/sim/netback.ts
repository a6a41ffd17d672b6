/**
 * The simulated host's netback, in the domain process: the guest's one NIC (device 0) as a dom0
 * network interface. Its frames go out on a unix socket named as the interface, in the host's
 * network folder (`<root>/net/vif<domid>.0`, layout.ts), where the sim's host network
 * (host-network.ts) captures them; and its backend directory is in the store where libxl and
 * netback keep it on Xen, `/local/domain/0/backend/vif/<domid>/0`, so that the toolstack finds the
 * interface as it would there (libxl/vif.ts).
 *
 * A capture socket carries frames one way, each a u32 big-endian byte count and the frame (QEMU's
 * socket chardev framing). Every reader gets every frame, in order. A reader that lets more than
 * CAPTURE_BUFFER_MAX bytes pile up loses the frames beyond (counted in `dropped`): the guest never
 * waits for a reader, as a packet socket with a full receive buffer drops. When the domain goes
 * away its readers see the end of the stream.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'

import type {Store} from '../index.js'

/** What one reader may have unread before frames are dropped for it (Linux's packet sockets: rmem, 208 KiB by default). */
export const CAPTURE_BUFFER_MAX = 4 << 20
/** The only NIC a simulated guest has. */
export const SIM_VIF_DEVID = 0
/** netback's name for a vif without a `vifname` (Xen's NETBACK_NIC_NAME, "vif%u.%d"). */
export const defaultVifName = (domid: number, devid: number): string => `vif${domid}.${devid}`
/** The vif's backend directory (libxl__device_backend_path for a vif served by dom0). */
export const vifBackendPath = (domid: number, devid: number): string => `/local/domain/0/backend/vif/${domid}/${devid}`

/** XenbusStateConnected (xen/io/xenbus.h). */
const XENBUS_STATE_CONNECTED = 4

export class SimNetback {
  readonly #readers = new Set<net.Socket>()
  #dropped = 0
  #closed = false

  private constructor(
    readonly ifname: string,
    private readonly socketPath: string,
    private readonly server: net.Server,
  ) {
    server.on('connection', (socket) => {
      if (this.#closed) {
        socket.destroy()
        return
      }
      this.#readers.add(socket)
      // Readers send nothing; what they send is dropped.
      socket.on('data', () => undefined)
      socket.on('error', () => socket.destroy())
      socket.on('close', () => this.#readers.delete(socket))
    })
  }

  /** Serves the interface's frames at `socketPath` (any stale socket there is replaced). */
  static async listen(ifname: string, socketPath: string): Promise<SimNetback> {
    fs.rmSync(socketPath, {force: true})
    const server = net.createServer()
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(socketPath, () => {
        server.off('error', reject)
        resolve()
      })
    })
    fs.chmodSync(socketPath, 0o600)
    return new SimNetback(ifname, socketPath, server)
  }

  /** Frames dropped because a reader did not keep up. */
  get dropped(): number {
    return this.#dropped
  }

  /** A frame the guest sent: to every reader that keeps up. */
  emit(frame: Buffer): void {
    if (this.#readers.size === 0) return
    const framed = Buffer.allocUnsafe(4 + frame.length)
    framed.writeUInt32BE(frame.length, 0)
    frame.copy(framed, 4)
    for (const s of this.#readers) {
      if (s.writableLength > CAPTURE_BUFFER_MAX) this.#dropped++
      else s.write(framed)
    }
  }

  /** The interface goes away: readers get what was sent, then the end of the stream. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    for (const s of this.#readers) s.end()
    this.server.close()
    fs.rmSync(this.socketPath, {force: true})
  }
}

/**
 * Writes the vif's backend directory as libxl and netback leave it once the device is connected
 * (libxl__device_nic_add, netback's state): the frontend it serves, its handle and type, online,
 * connected. No `vifname`: the sim's interface has netback's default name. A directory left by an
 * earlier domain with this domid is replaced.
 */
export async function publishVif(store: Store, domid: number, devid: number): Promise<void> {
  const dir = vifBackendPath(domid, devid)
  await store.transaction(async (tx) => {
    await tx.remove(dir)
    for (const [key, value] of Object.entries({
      frontend: `/local/domain/${domid}/device/vif/${devid}`,
      'frontend-id': String(domid),
      online: '1',
      state: String(XENBUS_STATE_CONNECTED),
      handle: String(devid),
      type: 'vif',
    })) {
      await tx.write(`${dir}/${key}`, value)
    }
  })
}

/** Removes the vif's backend directory (libxl does when the device is destroyed), and the domain's directory above it when it is empty. */
export async function withdrawVif(store: Store, domid: number, devid: number): Promise<void> {
  await store.transaction(async (tx) => {
    await tx.remove(vifBackendPath(domid, devid))
    const domainDir = `/local/domain/0/backend/vif/${domid}`
    if ((await tx.directory(domainDir)).length === 0) await tx.remove(domainDir)
  })
}
