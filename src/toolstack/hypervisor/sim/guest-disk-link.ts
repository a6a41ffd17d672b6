/**
 * The simulated guest's emulated disk reaching its device model: the sim's stand-in for Xen's
 * ioreq path (on Xen the hypervisor hands the guest's disk I/O to the ioreq server QEMU registered).
 *
 * libxl starts the device model and tells where it takes the guest's I/O in xenstore
 * (libxl/device-model-keys.ts, `sim-guest-disk/`): a QMP monitor of its own, where each disk write
 * goes as HMP `qemu-io`, and the FIFO QEMU's stdout goes to, where qemu-io reports it (colo/qemu-io.ts
 * says why both are read). The domain watches those keys and links up when they appear; the guest's
 * writes queue in a GuestDiskQueue in front of the link.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'

import {QemuIo} from '../../qmp/index.js'
import {simGuestDiskKeys, deviceModelPidKey} from '../index.js'
import {procStart} from '../../process/index.js'
import {LineFramer, QmpClient, type FramedLine} from '../../qmp/index.js'
import type {StoreAccess} from '../index.js'
import {GuestDiskQueue} from './guest-disk.js'

/** What libxl wrote for the guest's disk. */
export interface GuestDiskKeys {
  readonly monitor: string
  readonly output: string
  readonly drive: string
  /** The device model's pid (libxl's device-model-pid). */
  readonly pid: number
}

/** The keys of `domid`'s guest disk, when libxl has written them all. */
export async function readGuestDiskKeys(store: Pick<StoreAccess, 'read'>, domid: number): Promise<GuestDiskKeys | undefined> {
  const keys = simGuestDiskKeys(domid)
  const [monitor, output, drive, pid] = await Promise.all([store.read(keys.monitor), store.read(keys.output), store.read(keys.drive), store.read(deviceModelPidKey(domid))])
  if (!monitor || !output || !drive || !pid || !/^[1-9]\d*$/.test(pid)) return undefined
  return {monitor, output, drive, pid: Number(pid)}
}

type OutputListener = (line: {readonly stream: 'stdout' | 'stderr'; readonly text: string}) => void

export class GuestDiskLink {
  readonly queue: GuestDiskQueue
  readonly io: QemuIo
  /** The device model's pid and start time, as seen when the link was made. */
  readonly dm: {readonly pid: number; readonly start: number}
  readonly #qmp: QmpClient
  readonly #output: net.Socket

  private constructor(
    readonly keys: GuestDiskKeys,
    /** The drive's size in bytes. */
    readonly bytes: number,
    qmp: QmpClient,
    output: net.Socket,
    listeners: Set<OutputListener>,
    onProgress: () => void,
  ) {
    this.#qmp = qmp
    this.#output = output
    this.dm = {pid: keys.pid, start: procStart(keys.pid) ?? 0}
    this.io = new QemuIo(qmp, (listener) => {
      listeners.add(listener)
      return () => listeners.delete(listener)
    })
    this.queue = new GuestDiskQueue((offset, length, pattern) => this.io.write(keys.drive, pattern, offset, length), 16, onProgress)
  }

  /** Links up with the device model the keys name; `onClosed` when the link breaks (QEMU gone). */
  static async open(keys: GuestDiskKeys, onProgress: () => void, onClosed: () => void): Promise<GuestDiskLink> {
    const listeners = new Set<OutputListener>()
    const fd = fs.openSync(keys.output, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    const output = new net.Socket({fd, readable: true, writable: false})
    const framer = new LineFramer(64 * 1024)
    const emit = (items: FramedLine[]): void => {
      for (const item of items) if ('line' in item) for (const l of [...listeners]) l({stream: 'stdout', text: item.line})
    }
    output.on('data', (chunk: Buffer) => emit(framer.push(chunk)))
    output.on('error', () => undefined)
    let qmp: QmpClient
    try {
      qmp = await QmpClient.connect(keys.monitor, {label: 'the guest disk monitor'})
    } catch (err) {
      output.destroy()
      throw err
    }
    try {
      const blocks = await qmp.execute<{device: string; inserted?: {image?: {'virtual-size'?: number}}}[]>('query-block')
      const size = blocks.find((b) => b.device === keys.drive)?.inserted?.image?.['virtual-size']
      if (typeof size !== 'number') throw new Error(`no drive ${keys.drive} in query-block`)
      const link = new GuestDiskLink(keys, size, qmp, output, listeners, onProgress)
      void qmp.ended.then(onClosed)
      return link
    } catch (err) {
      await qmp.close()
      output.destroy()
      throw err
    }
  }

  async close(): Promise<void> {
    this.#output.destroy()
    await this.#qmp.close().catch(() => undefined)
  }
}
