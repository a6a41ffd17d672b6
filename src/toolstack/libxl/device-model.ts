/**
 * A domain's device model (QEMU), as libxl keeps it (libxl_dm.c, libxl_qmp.c, libxl_dom_save.c):
 * started detached (it outlives the xl-ts command, as qemu-dm outlives xl), its toolstack QMP
 * socket `<run>/qmp-libxl-<domid>`, its pid in xenstore at `/local/domain/<domid>/image/device-model-pid`,
 * its log `<log>/qemu-dm-<name>.log`, its device state saved with `xen-save-devices-state` into
 * `<lib>/qemu-save.<domid>` and restored from `<lib>/qemu-resume.<domid>` (`-incoming`).
 *
 * What QEMU is started with (the COLO disks' layout, colo-compare) is decided above this, from the
 * domain config (colo/domain-device-model.ts); here is only what every device model shares.
 *
 * Our own files: QEMU's working folder `<run>/qemu-dm-<domid>/` (its pid file `qemu.pid` with the
 * start time, and the chardev sockets relative paths in its arguments name), because colo-compare's
 * unix sockets need a folder of their own per domain.
 *
 * Device state, measured on Debian's QEMU 7.2.22 with our `-machine none`:
 * - `xen-save-devices-state {filename, live: false}` works (a QEVM file of 191 bytes).
 * - Loading it back needs the Xen machines' format (`suppress-vmdesc=on`,
 *   `migration.send-configuration=off`: device-model/args.ts xenDeviceState). With it, QEMU started
 *   with `-incoming` on the file loads it, which is what libxl does (`-incoming fd:<qemu-resume>`).
 * - `xen-load-devices-state` into a running QEMU (libxl's COLO secondary, every checkpoint after
 *   the first) loads the file and then aborts QEMU: `../../util/yank.c:105:
 *   yank_unregister_instance: Assertion 'entry' failed` (exit 134). So a device model that already
 *   runs is never given device state: a later checkpoint's EMULATOR_CONTEXT is kept in the
 *   qemu-resume file, as libxl's reader keeps it, and not loaded. Our device model emulates no
 *   guest-visible device (no vCPU, no bus): its state is QEMU's timer and run state.
 *
 * A domain without a device model (on the simulated host, one without COLO disks or proxy; on Xen
 * a PVH guest) has no device state: its stream carries no EMULATOR_CONTEXT.
 */
import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {deviceModelArgs, launchDetachedDeviceModel, reapFolder} from '../device-model/index.js'
import type {Hypervisor} from '../hypervisor/index.js'
import {QmpClient} from '../qmp/index.js'
import {deviceModelPidKey, deviceModelXsPath, simGuestDiskKeys} from '../hypervisor/index.js'

/** Where the toolstack reaches a domain's device model. */
export interface DeviceModelEndpoint {
  /** The toolstack's QMP socket (libxl: /var/run/xen/qmp-libxl-<domid>). */
  readonly qmpSocket: string
  /** QEMU's working folder: relative chardev socket paths in its arguments are relative to it. */
  readonly folder: string
}

/** The sim guest's stand-in for Xen's ioreq path: the drive its disk I/O goes to, and the image behind it. */
export interface SimGuestDisk {
  readonly drive: string
  readonly image: string
}

export interface LaunchDeviceModelOptions {
  /** The domain's name (QEMU's `-name`, the log's name). */
  readonly name: string
  /** The arguments of its devices (COLO disks, colo-compare). */
  readonly extraArgs: readonly string[]
  /** A restored domain: start from the stream's device state, when it had one (qemu-resume.<domid>). */
  readonly restored?: boolean
  /**
   * A simulated guest that issues disk I/O (only the simulated host has one): QEMU gets a second
   * QMP monitor for it and its stdout goes to a FIFO the sim guest reads (HMP qemu-io prints there).
   */
  readonly simGuestDisk?: SimGuestDisk
  readonly env?: NodeJS.ProcessEnv
}

export function deviceModelFolder(hv: Hypervisor, domid: number): string {
  return path.join(hv.paths.run, `qemu-dm-${domid}`)
}

export function qmpSocketPath(hv: Hypervisor, domid: number): string {
  return path.join(hv.paths.run, `qmp-libxl-${domid}`)
}

/** LIBXL_DEVICE_MODEL_SAVE_FILE and LIBXL_DEVICE_MODEL_RESTORE_FILE. */
export function deviceModelSaveFile(hv: Hypervisor, domid: number): string {
  return path.join(hv.paths.lib, `qemu-save.${domid}`)
}

export function deviceModelResumeFile(hv: Hypervisor, domid: number): string {
  return path.join(hv.paths.lib, `qemu-resume.${domid}`)
}

/**
 * A disk path of the domain config as this host resolves it: a relative one is relative to the
 * parent of the host's lib folder (on the simulated host its state folder, so two simulated hosts
 * on one machine keep apart what two real hosts would).
 */
export function hostDiskPath(hv: Hypervisor, p: string): string {
  return path.isAbsolute(p) ? p : path.join(path.dirname(hv.paths.lib), p)
}

const SIM_MONITOR = 'sim-guest-disk.qmp'
const SIM_OUTPUT = 'sim-guest-disk.out'

/**
 * Starts the device model of `domid` (built, not yet unpaused) and records it in xenstore.
 * Resolves once QEMU answers on QMP (and has loaded the restored state). Throws a DeviceModelError
 * and leaves nothing behind when QEMU does not come up.
 */
export async function launchDeviceModel(hv: Hypervisor, domid: number, o: LaunchDeviceModelOptions): Promise<DeviceModelEndpoint> {
  const folder = deviceModelFolder(hv, domid)
  const qmpSocket = qmpSocketPath(hv, domid)
  fs.mkdirSync(folder, {recursive: true, mode: 0o700})
  fs.mkdirSync(hv.paths.log, {recursive: true, mode: 0o700})
  fs.rmSync(qmpSocket, {force: true})
  const resume = deviceModelResumeFile(hv, domid)
  const incoming = o.restored === true && fs.existsSync(resume)
  const logFile = path.join(hv.paths.log, `qemu-dm-${o.name.replaceAll('/', '_')}.log`)
  const logFd = fs.openSync(logFile, 'a', 0o600)
  let outFd: number | undefined
  try {
    if (o.simGuestDisk) {
      const fifo = path.join(folder, SIM_OUTPUT)
      fs.rmSync(fifo, {force: true})
      // Node has no mkfifo(3). Opened read-write, QEMU never sees EPIPE while the sim guest is away.
      execFileSync('mkfifo', ['-m', '600', fifo])
      outFd = fs.openSync(fifo, fs.constants.O_RDWR)
    }
    const args = deviceModelArgs({
      name: o.name,
      // Relative to QEMU's folder: the run folder's path may be longer than a socket path can be.
      monitors: [path.relative(folder, qmpSocket), ...(o.simGuestDisk ? [SIM_MONITOR] : [])],
      xenDeviceState: true,
      ...(incoming ? {incoming: resume} : {}),
      extraArgs: o.extraArgs,
    })
    fs.writeSync(logFd, `${new Date().toISOString()} domain ${domid}: qemu ${args.join(' ')}\n`)
    const {pid} = await launchDetachedDeviceModel({
      folder,
      args,
      readySocket: qmpSocket,
      stdout: outFd ?? logFd,
      stderr: logFd,
      logFile,
      incoming,
      ...(o.env ? {env: o.env} : {}),
    })
    if (incoming) fs.rmSync(resume, {force: true})
    await hv.store.transaction(async (tx) => {
      await tx.write(deviceModelPidKey(domid), String(pid))
      if (o.simGuestDisk) {
        const keys = simGuestDiskKeys(domid)
        await tx.write(keys.monitor, path.join(folder, SIM_MONITOR))
        await tx.write(keys.output, path.join(folder, SIM_OUTPUT))
        await tx.write(keys.drive, o.simGuestDisk.drive)
        await tx.write(keys.image, o.simGuestDisk.image)
      }
    })
    return {qmpSocket, folder}
  } catch (err) {
    await destroyDeviceModel(hv, domid).catch(() => undefined)
    throw err
  } finally {
    fs.closeSync(logFd)
    if (outFd !== undefined) fs.closeSync(outFd)
  }
}

/** The domain's device model, or undefined when it has none. */
export async function deviceModelOf(hv: Hypervisor, domid: number): Promise<DeviceModelEndpoint | undefined> {
  if ((await hv.store.read(deviceModelPidKey(domid))) === undefined) return undefined
  return {qmpSocket: qmpSocketPath(hv, domid), folder: deviceModelFolder(hv, domid)}
}

/**
 * Ends the domain's device model, if it has one (libxl__destroy_device_model: before the domain
 * goes), and removes its files and xenstore keys. Safe to call for a domain without one.
 */
export async function destroyDeviceModel(hv: Hypervisor, domid: number): Promise<void> {
  const folder = deviceModelFolder(hv, domid)
  if (fs.existsSync(folder)) await reapFolder(folder, {termTimeoutMs: 2000, killTimeoutMs: 2000})
  fs.rmSync(folder, {recursive: true, force: true})
  for (const file of [qmpSocketPath(hv, domid), deviceModelSaveFile(hv, domid), deviceModelResumeFile(hv, domid)]) fs.rmSync(file, {force: true})
  await hv.store.transaction(async (tx) => {
    await tx.remove(deviceModelPidKey(domid))
    await tx.remove(deviceModelXsPath(domid))
  })
}

/** One QMP connection per device model in this process (QEMU serves one client per monitor). */
const sessions = new Map<string, {client: Promise<QmpClient>; users: number}>()

/**
 * The toolstack's QMP connection to the domain's device model, shared within this process (the
 * COLO disks hold it for a whole session while each checkpoint saves device state through it).
 * `release` closes it when its last user is done.
 */
export async function openDeviceModelQmp(hv: Hypervisor, domid: number): Promise<{readonly qmp: QmpClient; release(): Promise<void>}> {
  const endpoint = await deviceModelOf(hv, domid)
  if (!endpoint) throw new Error(`domain ${domid} has no device model`)
  const key = endpoint.qmpSocket
  let entry = sessions.get(key)
  if (entry) {
    const open = await entry.client.catch(() => undefined)
    if (!open?.isOpen && sessions.get(key) === entry) {
      sessions.delete(key)
      entry = undefined
    }
  }
  if (!entry) {
    entry = {client: QmpClient.connect(key, {label: `domain ${domid}'s device model`}), users: 0}
    sessions.set(key, entry)
    entry.client.catch(() => {
      if (sessions.get(key) === entry) sessions.delete(key)
    })
  }
  const mine = entry
  mine.users++
  let qmp: QmpClient
  try {
    qmp = await mine.client
  } catch (err) {
    mine.users--
    throw err
  }
  let released = false
  return {
    qmp,
    release: async () => {
      if (released) return
      released = true
      if (--mine.users > 0) return
      if (sessions.get(key) === mine) sessions.delete(key)
      await qmp.close().catch(() => undefined)
    },
  }
}

/**
 * The device model's state (EMULATOR_CONTEXT), or undefined when the domain has none. libxl stops
 * QEMU first and `cont`s it at resume; `xen-save-devices-state` stops and restarts the VM around the
 * save itself, and ours runs no vCPU, so the state is the same.
 */
export async function saveDeviceModelState(hv: Hypervisor, domid: number): Promise<Buffer | undefined> {
  if (!(await deviceModelOf(hv, domid))) return undefined
  const file = deviceModelSaveFile(hv, domid)
  const {qmp, release} = await openDeviceModelQmp(hv, domid)
  try {
    fs.rmSync(file, {force: true})
    await qmp.execute('xen-save-devices-state', {filename: file, live: false})
    return fs.readFileSync(file)
  } finally {
    fs.rmSync(file, {force: true})
    await release()
  }
}

/**
 * The stream's EMULATOR_CONTEXT, kept where libxl's reader keeps it (qemu-resume.<domid>): the
 * device model started for the restored domain loads it (launchDeviceModel with `restored`).
 */
export async function keepDeviceModelState(hv: Hypervisor, domid: number, state: Buffer): Promise<void> {
  fs.mkdirSync(hv.paths.lib, {recursive: true, mode: 0o700})
  const file = deviceModelResumeFile(hv, domid)
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, state, {mode: 0o600})
  fs.renameSync(tmp, file)
}
