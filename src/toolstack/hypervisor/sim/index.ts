/** The simulated Xen host (see host.ts); its extras beyond the port serve tests and `xl-ts sim`. */
export {SimHypervisor, domainProgram, type LogDirtyRound, type SimRuntime} from './host.js'
export {SimHostNetwork} from './host-network.js'
export {HostLayout, SHM_DIR, SUN_PATH_MAX, type DomainRecord, type LaunchSpec} from './layout.js'
export {parseFrame, type ParsedFrame} from './frame.js'
export {PAGE_SIZE, SPECIAL_PAGES} from './page.js'
export {decodeContext, encodeContext, HVM_PARAM, type GuestState} from './context.js'
export {PROTOCOL_VERSION, type RuntimeInfo} from './protocol.js'
