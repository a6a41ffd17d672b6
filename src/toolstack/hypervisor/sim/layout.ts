/**
 * Where a simulated host keeps things. A host is a state folder:
 *
 *   <root>/host.json              {"hostId": "<16 hex>", ...}: the host's identity (random per folder)
 *   <root>/next-domid             the domid allocator's rover
 *   <root>/lock/                  the host lock (a directory; owner = "<pid> <starttime>")
 *   <root>/store.json             the host's xenstore (store.ts), with its lock store.lock/
 *   <root>/lib/, <root>/run/,     the toolstack's files (Xen's /var/lib/xen, /var/run/xen,
 *   <root>/log/                   /var/log/xen): libxl's device models live there (libxl/device-model.ts)
 *   <root>/net/<ifname>           dom0's network interfaces: a vif's capture socket, served by
 *                                 its domain's netback (netback.ts)
 *   <root>/domains/<domid>/       one folder per domain, mode 0700
 *       launch.json               what the domain process is built from (written by its creator)
 *       pid                       "<pid> <starttime>" of the domain process, from its start
 *       domain.json               the domain record, written by the domain process once it is ready
 *       ctl                       the control socket (mode 0600)
 *       domain.log                the domain process's stdout/stderr
 *       device-model.pid          "<pid> <starttime>" of the device model xenstore named, once seen:
 *                                 it ends with the domain (host reaping a dead domain ends it too)
 *   /dev/shm/xl-ts-<hostId>-<domid>   guest memory (pages of 4096 bytes)
 */
import * as path from 'node:path'

import {HypervisorError} from '../index.js'
import type {GuestType} from '../index.js'

export const SHM_DIR = '/dev/shm'
/** sun_path holds 108 bytes including the terminating NUL. */
export const SUN_PATH_MAX = 107
/** Domids the allocator hands out: 1 .. DOMID_FIRST_RESERVED - 1, as Xen. */
export const DOMID_FIRST_RESERVED = 0x7ff0

/** What a domain process is built from. */
export interface LaunchSpec {
  version: 1
  hostId: string
  root: string
  domid: number
  uuid: string
  type: GuestType
  maxMemKb: number
  vcpus: number
  pages: number
  memPath: string
  socketPath: string
  paused: boolean
  forRestore: boolean
  creator: {pid: number; start: number}
  createdAt: number
}

/** The domain record: the launch spec plus the process that runs the domain. */
export interface DomainRecord extends LaunchSpec {
  pid: number
  pidStart: number
  readyAt: number
}

export class HostLayout {
  readonly root: string
  constructor(root: string) {
    this.root = path.resolve(root)
  }
  get hostFile(): string {
    return path.join(this.root, 'host.json')
  }
  get lockDir(): string {
    return path.join(this.root, 'lock')
  }
  get roverFile(): string {
    return path.join(this.root, 'next-domid')
  }
  /** The toolstack's persistent files on this host (Xen's XEN_LIB_DIR). */
  get libDir(): string {
    return path.join(this.root, 'lib')
  }
  /** The toolstack's sockets and pid files on this host (Xen's XEN_RUN_DIR). */
  get runDir(): string {
    return path.join(this.root, 'run')
  }
  /** dom0's network interfaces: one capture socket per vif, named as the interface (netback.ts). */
  get netDir(): string {
    return path.join(this.root, 'net')
  }
  get domainsDir(): string {
    return path.join(this.root, 'domains')
  }
  domainDir(domid: number): string {
    return path.join(this.domainsDir, String(domid))
  }
  launchFile(domid: number): string {
    return path.join(this.domainDir(domid), 'launch.json')
  }
  pidFile(domid: number): string {
    return path.join(this.domainDir(domid), 'pid')
  }
  recordFile(domid: number): string {
    return path.join(this.domainDir(domid), 'domain.json')
  }
  socketPath(domid: number): string {
    return path.join(this.domainDir(domid), 'ctl')
  }
  /** The device model the domain process saw (pid file). */
  deviceModelPidFile(domid: number): string {
    return path.join(this.domainDir(domid), 'device-model.pid')
  }
  /** The toolstack's logs on this host (Xen's /var/log/xen). */
  get logDir(): string {
    return path.join(this.root, 'log')
  }
  logFile(domid: number): string {
    return path.join(this.domainDir(domid), 'domain.log')
  }
  static memPath(hostId: string, domid: number): string {
    return path.join(SHM_DIR, `xl-ts-${hostId}-${domid}`)
  }

  /** Throws a clear error if the control socket of the highest domid would not fit in sun_path. */
  checkSocketPath(): void {
    const longest = this.socketPath(DOMID_FIRST_RESERVED - 1)
    const bytes = Buffer.byteLength(longest)
    if (bytes > SUN_PATH_MAX) {
      throw new HypervisorError(
        'bad-request',
        `state folder ${this.root} is too long: its control sockets (${longest}) would take ${bytes} bytes, ` +
          `a unix socket path holds at most ${SUN_PATH_MAX}; use a shorter --root / XL_TS_ROOT`,
      )
    }
  }
}
