/**
 * Replication: the Remus and COLO primary's checkpoints (one cycle per mode, and the checkpointed
 * stream that runs them) and the COLO secondary's cycle; xl's session around the primary's is
 * xl/remus-session.ts. Each cycle is one async function whose awaits follow XEN-FACTS §10.2
 * (remus-primary.ts), §7.2 (colo-primary.ts) and §7.3 (colo-secondary.ts).
 */
export * from './events.js'
export * from './options.js'
export {primaryMode} from './modes.js'
export {CheckpointError, type LogLevel, type PrimaryMode} from './cycle.js'
export {Checkpointing, type CheckpointingOptions} from './checkpointing.js'
export {ColoSecondary, type ColoSecondaryOptions, type SecondaryCheckpointDevices} from './colo-secondary.js'
export {probePlugQdisc} from './plug-qdisc.js'
