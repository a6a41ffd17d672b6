/** Device models: one QEMU per domain, in its folder, over QMP (device-model.ts says how). */
export {DEFAULT_QEMU, PID_FILE, QEMU_ENV, QMP_SOCKET, TOOLSTACK_QMP_SOCKET, deviceModelArgs, qemuOptValue, type DeviceModelArgs} from './args.js'
export {DeviceModelError, type DeviceModelErrorCode} from './errors.js'
export {readPidFile, type PidRecord, type ReapHow, type ReapOptions, type ReapResult} from './pid-file.js'
export {
  DEFAULT_START_TIMEOUT_MS,
  DeviceModel,
  reapDeviceModel,
  reapDeviceModels,
  startDeviceModel,
  type DeviceModelExit,
  type DeviceModelOptions,
  type OutputLine,
  type StopOptions,
  type StopResult,
} from './device-model.js'
export {launchDetachedDeviceModel, type DetachedDeviceModelOptions} from './detached.js'
export {reapFolder} from './pid-file.js'
