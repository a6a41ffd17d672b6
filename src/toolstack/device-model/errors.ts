/** The errors of the device-model manager; `code` says what failed, the message says where and why. */
export type DeviceModelErrorCode =
  | 'bad-folder' // the domain folder is not a directory we can use
  | 'not-found' // the QEMU binary is not there (not installed, not in PATH)
  | 'in-use' // a QEMU already runs for this folder
  | 'spawn' // the process could not be started
  | 'exited' // QEMU exited before it was ready (its stderr is in the message)
  | 'timeout' // QEMU did not answer on QMP within the start timeout
  | 'not-qmp' // something answered on the socket, but not QMP
  | 'stop-failed' // QEMU did not exit even after SIGKILL

export class DeviceModelError extends Error {
  override readonly name = 'DeviceModelError'
  /** The QEMU process, when there was one. */
  readonly pid?: number
  /** The end of QEMU's stderr, when it said something. */
  readonly stderr?: string

  constructor(
    readonly code: DeviceModelErrorCode,
    /** The domain folder. */
    readonly folder: string,
    message: string,
    details: {readonly pid?: number; readonly stderr?: string; readonly cause?: unknown} = {},
  ) {
    super(message, details.cause === undefined ? undefined : {cause: details.cause})
    if (details.pid !== undefined) this.pid = details.pid
    if (details.stderr !== undefined) this.stderr = details.stderr
  }
}
