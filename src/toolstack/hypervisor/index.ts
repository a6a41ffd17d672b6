/**
 * The Hypervisor port: what Xen offers a toolstack (port.ts), its errors, and the dirty bitmap;
 * beside it the host network port (host-network.ts): dom0's interfaces, where a guest's network
 * output is captured.
 * Which back end implements it, and building one, is ../backends/ (commands and programs get a
 * Hypervisor from there and never learn which back end they talk to).
 */
export * from './port.js'
export * from './errors.js'
export * from './host-network.js'
export {DirtyBitmap} from './dirty-bitmap.js'
export {deviceModelPidKey, deviceModelXsPath, simGuestDiskKeys} from './store-paths.js'
