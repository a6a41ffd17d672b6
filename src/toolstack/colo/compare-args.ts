/**
 * The primary device model's colo-compare: who connects where (`ProxyEndpoints`, from the libxl
 * domain config and the domain folder) and QEMU's arguments for it (`proxyArgs`). Pure.
 *
 * Facts followed: XEN-FACTS §9.2 (libxl's `-chardev socket,...,server=on,wait=off` per socket,
 * `-object iothread,id=colo-compare-iothread-1`, `-object colo-compare,...`; xl's userspace proxy
 * connects over TCP to the first vif's `colo_checkpoint_host` / `colo_checkpoint_port`, an IPv4
 * address as `inet_addr` reads it), §9.3 (the vif keys), QEMU-REPLICATION.md (colo-compare's
 * properties in 7.2; all four sockets speak u32-BE-length frames; a colo-compare object must be
 * given on the command line: a failing `object-add` of one crashes QEMU 7.2).
 *
 * Where each socket is:
 * - secondary_in: TCP, listening at the first vif's `colo_sock_compare_sec_in_ip` / `_port`: the
 *   secondary's forwarder (colo/secondary-forwarder.ts) sends the SVM's
 *   frames there.
 * - notify_dev: TCP at `colo_checkpoint_host` / `colo_checkpoint_port` when both are set (as xl),
 *   else the unix socket `colo-notify.sock` in the domain folder.
 * - primary_in and outdev: unix sockets `colo-pri-in.sock` and `colo-out.sock` in the domain folder
 *   (the toolstack feeds the PVM's frames and takes the released ones; libxl would use the
 *   filter-mirror / filter-redirector plumbing of a real vif instead).
 * Unix paths are relative: QEMU runs in the domain folder (device-model/args.ts), so the folder's
 * path may be longer than sun_path.
 *
 * compare_timeout (default 100 ms): a PVM frame the SVM has not matched for this long makes
 * colo-compare send DO_CHECKPOINT, at its next expired-packet scan (every `expired_scan_cycle`,
 * default 20 ms here). It bounds how long a primary-only frame is held before the checkpoint that
 * releases it (compare_timeout + scan cycle + the checkpoint), and it must exceed the usual lag of
 * the SVM's copy of a frame behind the PVM's (both guests run the same steps at the same rate; the
 * SVM's frames cross one TCP hop), or matching frames would cause checkpoints. QEMU's own default
 * (3000 ms) would hold a lone frame for seconds; the in-toolstack comparator this replaces used
 * 100 ms, and test/colo-proxy.test.ts measures the 100 + 20 ms bound.
 */
import * as net from 'node:net'

import {qemuOptValue} from '../device-model/index.js'
import type {SocketEndpoint} from './frame-channel.js'

/** The unix sockets in the domain folder. */
export const PRIMARY_IN_SOCKET = 'colo-pri-in.sock'
export const OUTDEV_SOCKET = 'colo-out.sock'
export const NOTIFY_SOCKET = 'colo-notify.sock'

/** QEMU ids: the chardevs, the iothread (libxl's name), the colo-compare object. */
export const CHARDEV_IDS = {primaryIn: 'colo-pri-in', secondaryIn: 'colo-sec-in', outdev: 'colo-out', notify: 'colo-notify'} as const
export const COMPARE_IOTHREAD_ID = 'colo-compare-iothread-1'
export const COMPARE_OBJECT_ID = 'colo-compare-0'

export const DEFAULT_COMPARE_TIMEOUT_MS = 100
export const DEFAULT_EXPIRED_SCAN_CYCLE_MS = 20

export type UnixEndpoint = Extract<SocketEndpoint, {kind: 'unix'}>
export type TcpEndpoint = Extract<SocketEndpoint, {kind: 'tcp'}>

/** The sockets of the primary's colo-compare and who connects to each. QEMU listens on all four. */
export interface ProxyEndpoints {
  /** The domain folder: QEMU's working directory; unix paths below are relative to it. */
  readonly folder: string
  /** The toolstack connects and writes the PVM's frames. */
  readonly primaryIn: UnixEndpoint
  /** The secondary connects (over the network) and writes the SVM's frames. */
  readonly secondaryIn: TcpEndpoint
  /** The toolstack connects and reads the frames colo-compare releases. */
  readonly outdev: UnixEndpoint
  /** The toolstack (xl's userspace proxy) connects: INIT, DO_CHECKPOINT, COLO_CHECKPOINT. */
  readonly notify: SocketEndpoint
}

export type ProxyConfigErrorCode =
  /** The config has no vif. */
  | 'no-nic'
  /** The first vif lacks colo_sock_compare_sec_in_ip / _port. */
  | 'no-secondary-in'
  /** Only one of colo_checkpoint_host / _port is set. */
  | 'half-checkpoint-address'
  /** An address that is not one. */
  | 'bad-address'
  /** A port that is not 1..65535. */
  | 'bad-port'
  /** secondary_in and notify_dev on the same TCP address. */
  | 'address-clash'

export class ProxyConfigError extends Error {
  override readonly name = 'ProxyConfigError'
  constructor(
    readonly code: ProxyConfigErrorCode,
    /** The vif key at fault, when one is. */
    readonly key: string | undefined,
    message: string,
  ) {
    super(message)
  }
}

function port(nic: Record<string, unknown>, key: string): number {
  const raw = nic[key]
  const text = typeof raw === 'number' ? String(raw) : raw
  const n = typeof text === 'string' && /^\d{1,5}$/.test(text.trim()) ? Number(text.trim()) : NaN
  if (!(n >= 1 && n <= 65535)) throw new ProxyConfigError('bad-port', key, `vif ${key}=${JSON.stringify(raw)} is not a port (1-65535)`)
  return n
}

function present(nic: Record<string, unknown>, key: string): boolean {
  const v = nic[key]
  return v !== undefined && v !== null && v !== ''
}

/**
 * The endpoints for the domain whose libxl config JSON is `config` (keys of `nics[0]`), its device
 * model running in `folder`. Throws ProxyConfigError when the first vif does not say where the
 * secondary sends its frames, or says something that is not an address.
 */
export function proxyEndpoints(config: Record<string, unknown> | undefined, folder: string): ProxyEndpoints {
  const nics = Array.isArray(config?.nics) ? (config.nics as unknown[]) : []
  const nic = nics[0]
  if (!nic || typeof nic !== 'object') throw new ProxyConfigError('no-nic', undefined, 'the domain has no vif: colo-compare needs the first vif\'s colo_* keys')
  const v = nic as Record<string, unknown>
  if (!present(v, 'colo_sock_compare_sec_in_ip') || !present(v, 'colo_sock_compare_sec_in_port')) {
    throw new ProxyConfigError('no-secondary-in', 'colo_sock_compare_sec_in_ip', 'the first vif has no colo_sock_compare_sec_in_ip / colo_sock_compare_sec_in_port: nowhere for the secondary to send its frames')
  }
  const secHost = v.colo_sock_compare_sec_in_ip
  if (typeof secHost !== 'string' || !/^[A-Za-z0-9.:_-]+$/.test(secHost)) {
    throw new ProxyConfigError('bad-address', 'colo_sock_compare_sec_in_ip', `vif colo_sock_compare_sec_in_ip=${JSON.stringify(secHost)} is not a host`)
  }
  const secondaryIn: TcpEndpoint = {kind: 'tcp', host: secHost, port: port(v, 'colo_sock_compare_sec_in_port')}

  let notify: SocketEndpoint = {kind: 'unix', path: NOTIFY_SOCKET}
  const hasHost = present(v, 'colo_checkpoint_host')
  if (hasHost !== present(v, 'colo_checkpoint_port')) {
    throw new ProxyConfigError('half-checkpoint-address', hasHost ? 'colo_checkpoint_port' : 'colo_checkpoint_host', 'the first vif sets only one of colo_checkpoint_host / colo_checkpoint_port')
  }
  if (hasHost) {
    const host = v.colo_checkpoint_host
    // xl reads it with inet_addr(): a dotted IPv4 address.
    if (typeof host !== 'string' || !net.isIPv4(host)) {
      throw new ProxyConfigError('bad-address', 'colo_checkpoint_host', `vif colo_checkpoint_host=${JSON.stringify(host)} is not an IPv4 address`)
    }
    notify = {kind: 'tcp', host, port: port(v, 'colo_checkpoint_port')}
    if (notify.port === secondaryIn.port && (notify.host === secondaryIn.host || secondaryIn.host === '0.0.0.0' || notify.host === '0.0.0.0')) {
      throw new ProxyConfigError('address-clash', 'colo_checkpoint_port', `colo_checkpoint_host/port ${host}:${notify.port} is where secondary_in listens`)
    }
  }
  return {
    folder,
    primaryIn: {kind: 'unix', path: PRIMARY_IN_SOCKET},
    secondaryIn,
    outdev: {kind: 'unix', path: OUTDEV_SOCKET},
    notify,
  }
}

/**
 * proxyEndpoints() when the first vif asks for colo-compare (it has colo_sock_compare_sec_in_ip or
 * _port), undefined when it does not (or there is no vif). Throws ProxyConfigError as
 * proxyEndpoints() for keys that are there but wrong.
 */
export function proxyEndpointsOf(config: Record<string, unknown> | undefined, folder: string): ProxyEndpoints | undefined {
  const nics = Array.isArray(config?.nics) ? (config.nics as unknown[]) : []
  const nic = nics[0]
  if (!nic || typeof nic !== 'object') return undefined
  const v = nic as Record<string, unknown>
  if (!present(v, 'colo_sock_compare_sec_in_ip') && !present(v, 'colo_sock_compare_sec_in_port')) return undefined
  return proxyEndpoints(config, folder)
}

/**
 * Where the secondary sends its guest's frames (colo-compare's secondary_in on the primary), if the
 * first vif asks for colo-compare: what the secondary needs of the proxy's endpoints.
 */
export function secondaryInOf(config: Record<string, unknown> | undefined): TcpEndpoint | undefined {
  // The folder only places the primary's unix sockets, which the secondary never uses.
  return proxyEndpointsOf(config, '.')?.secondaryIn
}

export interface ProxyArgsOptions {
  /** colo-compare's compare_timeout (default DEFAULT_COMPARE_TIMEOUT_MS). */
  readonly compareTimeoutMs?: number
  /** colo-compare's expired_scan_cycle (default DEFAULT_EXPIRED_SCAN_CYCLE_MS). */
  readonly expiredScanCycleMs?: number
  /** colo-compare's max_queue_size (frames per connection and side; QEMU's default 1024 when unset). */
  readonly maxQueueSize?: number
}

/** `-chardev socket,id=ID,...,server=on,wait=off` listening at `endpoint`. */
function listeningChardev(id: string, endpoint: SocketEndpoint): string[] {
  const where = endpoint.kind === 'unix' ? `path=${qemuOptValue(endpoint.path)}` : `host=${qemuOptValue(endpoint.host)},port=${endpoint.port},nodelay=on`
  return ['-chardev', `socket,id=${id},${where},server=on,wait=off`]
}

function positive(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 0xffffffff) throw new RangeError(`${what} ${value} is not a positive 32-bit integer`)
  return value
}

/**
 * QEMU's arguments for the primary's colo-compare: four listening chardevs, the iothread and the
 * colo-compare object, for startDeviceModel's `extraArgs`. TCP chardevs get `nodelay=on`: QEMU
 * writes a frame's length and its bytes separately, and Nagle would hold the second write back.
 */
export function proxyArgs(endpoints: ProxyEndpoints, opts: ProxyArgsOptions = {}): string[] {
  const timeout = positive(opts.compareTimeoutMs ?? DEFAULT_COMPARE_TIMEOUT_MS, 'compare_timeout')
  const scan = positive(opts.expiredScanCycleMs ?? DEFAULT_EXPIRED_SCAN_CYCLE_MS, 'expired_scan_cycle')
  const compare = [
    `colo-compare,id=${COMPARE_OBJECT_ID}`,
    `primary_in=${CHARDEV_IDS.primaryIn}`,
    `secondary_in=${CHARDEV_IDS.secondaryIn}`,
    `outdev=${CHARDEV_IDS.outdev}`,
    `notify_dev=${CHARDEV_IDS.notify}`,
    `iothread=${COMPARE_IOTHREAD_ID}`,
    `compare_timeout=${timeout}`,
    `expired_scan_cycle=${scan}`,
    ...(opts.maxQueueSize === undefined ? [] : [`max_queue_size=${positive(opts.maxQueueSize, 'max_queue_size')}`]),
  ].join(',')
  return [
    ...listeningChardev(CHARDEV_IDS.primaryIn, endpoints.primaryIn),
    ...listeningChardev(CHARDEV_IDS.secondaryIn, endpoints.secondaryIn),
    ...listeningChardev(CHARDEV_IDS.outdev, endpoints.outdev),
    ...listeningChardev(CHARDEV_IDS.notify, endpoints.notify),
    '-object',
    `iothread,id=${COMPARE_IOTHREAD_ID}`,
    '-object',
    compare,
  ]
}
