/**
 * QEMU's command line for a device model, and the names of the files it keeps in the domain folder.
 * Pure.
 *
 * QEMU runs with the domain folder as its working directory and is given the QMP socket as a relative
 * path (`qmp.sock`), so the folder's path may be longer than a unix socket path can be (107 bytes).
 * Extra arguments may use relative paths the same way (`-chardev socket,id=pin,path=pin.sock,...`, an
 * NBD server's `{"type":"unix","data":{"path":"nbd.sock"}}`): they are relative to the domain folder.
 */

/** The QMP socket, in the domain folder. */
export const QMP_SOCKET = 'qmp.sock'
/**
 * A second QMP monitor for the toolstack (libxl's `qmp-libxl-<domid>`), in the domain folder: the
 * first (QMP_SOCKET) stays with whoever started QEMU, and QEMU serves one client per monitor.
 */
export const TOOLSTACK_QMP_SOCKET = 'qmp-libxl.sock'
/** `<pid> <start time>` of the QEMU process (process/identity.ts), in the domain folder. */
export const PID_FILE = 'qemu.pid'
/** The QEMU that runs unless told otherwise: Debian's qemu-system-x86 (7.2 on bookworm). */
export const DEFAULT_QEMU = 'qemu-system-x86_64'
/** The environment variable that names another QEMU binary. */
export const QEMU_ENV = 'XL_TS_QEMU'

/** A value inside a QEMU option list: commas doubled (`a,b` -> `a,,b`), as QEMU's option parser wants. */
export function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,')
}

export interface DeviceModelArgs {
  /** The guest's name, shown by `ps` and `query-name`. */
  readonly name?: string
  /** Appended as given: -blockdev, -drive, -chardev, -object iothread / colo-compare, -S, ... */
  readonly extraArgs?: readonly string[]
  /** Also open the toolstack's monitor (TOOLSTACK_QMP_SOCKET). */
  readonly toolstackMonitor?: boolean
  /** The QMP monitors' sockets, instead of QMP_SOCKET (and TOOLSTACK_QMP_SOCKET). */
  readonly monitors?: readonly string[]
  /**
   * Device state as Xen's machines keep it: no configuration section, no VM description
   * (`-machine suppress-vmdesc=on -global migration.send-configuration=off`, what QEMU's xenfv
   * machines set). `xen-save-devices-state` writes it so, and only so does QEMU load it again
   * (measured on 7.2.22: without them `-incoming` fails with "Configuration section missing").
   */
  readonly xenDeviceState?: boolean
  /** A device state file to start from (`-incoming exec:cat <file>`; libxl: `-incoming fd:<fd>`). */
  readonly incoming?: string
}

/**
 * `-machine none -nodefaults -nographic -display none [-name guest=N] -qmp unix:qmp.sock,server=on,wait=off`
 * plus the extra arguments. No `-daemonize`: QEMU stays our child, so it can be waited for and cannot
 * outlive us unnoticed. `wait=off`: QEMU does not block for a client before it starts.
 */
export function deviceModelArgs(options: DeviceModelArgs = {}): string[] {
  const monitors = options.monitors ?? [QMP_SOCKET, ...(options.toolstackMonitor ? [TOOLSTACK_QMP_SOCKET] : [])]
  return [
    '-machine',
    options.xenDeviceState ? 'none,suppress-vmdesc=on' : 'none',
    ...(options.xenDeviceState ? ['-global', 'migration.send-configuration=off'] : []),
    '-nodefaults',
    '-nographic',
    '-display',
    'none',
    ...(options.name === undefined ? [] : ['-name', `guest=${qemuOptValue(options.name)}`]),
    ...monitors.flatMap((socket) => ['-qmp', `unix:${qemuOptValue(socket)},server=on,wait=off`]),
    ...(options.incoming === undefined ? [] : ['-incoming', `exec:cat ${shellWord(options.incoming)}`]),
    ...(options.extraArgs ?? []),
  ]
}

/** A word for the shell QEMU runs an `exec:` migration URI with: single-quoted. */
function shellWord(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`
}
