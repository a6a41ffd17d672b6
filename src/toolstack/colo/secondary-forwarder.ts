/**
 * The COLO secondary's network output on the simulated host: the SVM's frames, captured on its vif
 * (../libxl/vif.ts), go to the primary's
 * colo-compare, which listens for them at the first vif's colo_sock_compare_sec_in_ip/port (its
 * secondary_in chardev, XEN-FACTS §9.2), framed as QEMU's socket chardevs frame them (u32 length in
 * network byte order, then the bytes). On a real host QEMU's filter-redirector on the SVM's netdev
 * does this.
 *
 * Paused before the SVM suspends for a checkpoint and resumed just before it runs again, so frames
 * of a run the checkpoint abandons never reach the comparison. A connection that fails is reported
 * once and not retried: the primary's timer still takes checkpoints.
 */
import * as net from 'node:net'

import type {HostNetwork, Hypervisor} from '../hypervisor/index.js'
import {captureGuestOutput} from '../libxl/index.js'
import type {TcpEndpoint} from './compare-args.js'
import {encodeFrame} from './frame-channel.js'

export interface SecondaryForwarder {
  /** Before the SVM suspends for a checkpoint: what it sends from now on is dropped. */
  pause(): void
  /** Just before the SVM resumes from a checkpoint. */
  resume(): void
  stop(): Promise<void>
}

export async function forwardSecondaryFrames(
  hv: Hypervisor,
  network: HostNetwork,
  domid: number,
  address: TcpEndpoint,
  onLog: (text: string) => void,
): Promise<SecondaryForwarder> {
  const socket = net.connect(address.port, address.host)
  let failed = false
  socket.on('error', (err) => {
    if (!failed) onLog(`cannot send the secondary's frames to colo-compare at ${address.host}:${address.port}: ${err.message}`)
    failed = true
  })
  socket.setNoDelay(true)
  let paused = false
  const capture = await captureGuestOutput(hv, network, domid, (frame) => {
    if (paused || failed || socket.destroyed) return
    try {
      socket.write(encodeFrame(frame))
    } catch (err) {
      onLog(`a frame of the secondary was not sent: ${(err as Error).message}`)
    }
  })
  return {
    pause: () => {
      paused = true
    },
    resume: () => {
      paused = false
    },
    stop: async () => {
      await capture.close().catch(() => undefined)
      socket.destroy()
    },
  }
}
