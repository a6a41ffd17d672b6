/**
 * COLO's devices (XEN-FACTS §7-§9, QEMU-REPLICATION.md): the disks, replicated by QEMU's block
 * replication over NBD and driven over QMP as libxl_colo_qdisk.c does, and the userspace proxy,
 * QEMU's colo-compare, fed the guests' frames and spoken to over its notify_dev.
 */
export {PrimaryColoDisks, SecondaryColoDisks, coloDisksOfConfig} from './disk-devices.js'
export {ColoSetupError, openPrimaryColoDevices, type PrimaryColoDevices, type PrimaryColoDevicesOptions} from './primary-devices.js'
export {QdiskError, coloDisksOf, diskDevNumber, hasColoDisks, qdiskIds, type ColoDisk, type ColoDiskFormat, type QdiskIds} from './qdisk-config.js'
export {guestDrive, qdiskArgs, type QdiskMode} from './qdisk-args.js'
export {imageVirtualSize, prepareSecondaryImages, type PreparedDisk, type PreparedImage} from './qdisk-images.js'
export {PrimaryReplication, ReplicationError, SecondaryReplication, type FailoverResult, type ReplicationStatus, type TeardownReport} from './qdisk-replication.js'
export {ProxyConfigError, proxyArgs, proxyEndpoints, proxyEndpointsOf, secondaryInOf, type ProxyEndpoints} from './compare-args.js'
export {QemuColoCompare, type ReleaseReason} from './compare-proxy.js'
export {NotifyClient, NotifyError} from './notify.js'
export {FrameChannel, FrameSplitter, encodeFrame, type SocketEndpoint} from './frame-channel.js'
export {forwardSecondaryFrames, type SecondaryForwarder} from './secondary-forwarder.js'
export {chooseColoProxy, probeKernelColoProxy, type ColoProxyChoice, type KernelProxyPaths, type KernelProxyProbe} from './kernel-proxy.js'
export {hostColoDisks, startDomainDeviceModel, type DomainDeviceModelOptions} from './domain-device-model.js'
