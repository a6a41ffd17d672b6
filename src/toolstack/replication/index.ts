/**
 * Replication: the Remus and COLO primary (a session around one checkpoint cycle per mode) and the
 * COLO secondary's cycle. Each cycle is one async function whose awaits follow XEN-FACTS §10.2
 * (remus-primary.ts), §7.2 (colo-primary.ts) and §7.3 (colo-secondary.ts).
 */
export * from './events.js'
export * from './options.js'
export {runRemusPrimary, primaryMode} from './primary-session.js'
export {Checkpointing, type CheckpointingOptions} from './checkpointing.js'
export {ColoSecondary, type ColoSecondaryOptions, type SecondaryCheckpointDevices} from './colo-secondary.js'
