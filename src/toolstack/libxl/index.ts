/**
 * The libxl layer: the save stream (libxl header, LIBXC_CONTEXT, the save helper, END), the stream
 * reader (receiveDomain), the helper callout, COLO's CHECKPOINT_STATE records, the device model
 * (device-model.ts), and its errors and events.
 */
export {ColoStateError, readCheckpointState, writeCheckpointState} from './checkpoint-state.js'
export * from './errors.js'
export * from './events.js'
export {helperEnv} from './helper-env.js'
export {sendDomain, startSaveStream} from './save-stream.js'
export type {SaveStream, SendDomainOptions, SendResult} from './save-stream.js'
export {receiveDomain} from './stream-reader.js'
export type {ColoSecondaryEnd, ReceiveDomainOptions, ReceiveResult, SecondaryIo} from './stream-reader.js'
export {resolveDomain} from './domains.js'
export {
  deviceModelFolder,
  deviceModelOf,
  destroyDeviceModel,
  hostDiskPath,
  keepDeviceModelState,
  launchDeviceModel,
  openDeviceModelQmp,
  saveDeviceModelState,
  type DeviceModelEndpoint,
  type LaunchDeviceModelOptions,
  type SimGuestDisk,
} from './device-model.js'
