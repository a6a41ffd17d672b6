/**
 * The libxl layer: the save stream (libxl header, LIBXC_CONTEXT, the save helper, END), the stream
 * reader (receiveDomain), the helper callout, COLO's CHECKPOINT_STATE records, the guest's vif
 * (its interface found in the store, its output captured), the device model (device-model.ts),
 * domains' names and stored configs (domains.ts), and its errors and events.
 */
export {ColoStateError, readCheckpointState, writeCheckpointState} from './checkpoint-state.js'
export * from './errors.js'
export * from './events.js'
export {helperEnv} from './helper-env.js'
export {FIRST_VIF, captureGuestOutput, vifBackendPath, vifInterfaceName} from './vif.js'
export {sendDomain, startSaveStream} from './save-stream.js'
export type {SaveStream, SendDomainOptions, SendResult} from './save-stream.js'
export {receiveDomain} from './stream-reader.js'
export type {ColoSecondaryEnd, ReceiveDomainOptions, ReceiveResult, SecondaryIo} from './stream-reader.js'
export {
  createDomain,
  createDomainBuilt,
  destroyDomain,
  DOM0_NAME,
  domainInfo,
  domainName,
  domainPath,
  listDomains,
  renameDomain,
  resolveDomain,
  storedConfig,
  storeConfig,
} from './domains.js'
export type {LibxlDomainSpec, NamedDomainInfo} from './domains.js'
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
