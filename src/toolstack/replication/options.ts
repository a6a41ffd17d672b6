/**
 * What the Remus and COLO primary are given: the domain, the way to the backup, the mode's settings,
 * and for COLO the devices driven at libxl's points of each cycle (XEN-FACTS §7.2, §8, §9.2).
 */
import type {HostNetwork, Hypervisor} from '../hypervisor/index.js'
import type {MigrateEventHandler} from '../libxl/index.js'
import type {RemusEvent} from './events.js'

export interface RemusPrimaryOptions {
  readonly hypervisor: Hypervisor
  readonly domid: number
  readonly name: string
  readonly configJson: string
  /** The command reaching the backup (`sh -c`); ignored with `blackhole`. */
  readonly rune: string
  /** -b: replicate to /dev/null (no receiver, no acknowledgements). */
  readonly blackhole: boolean
  /** -i: ms between checkpoints (suspend to suspend). */
  readonly intervalMs: number
  /** Network output buffering: the host network the guest's output is captured on, or false (-n: none). */
  readonly netbuf: HostNetwork | false
  /** COLO instead of Remus. */
  readonly colo?: ColoOptions
  /** Stop replication cleanly (the operator's interrupt). */
  readonly signal?: AbortSignal
  /** The transport's and the helper's environment (default process.env). */
  readonly env?: NodeJS.ProcessEnv
  /** Where the fd pair's private directory is made (default os.tmpdir()). */
  readonly tmpDir?: string
  readonly onEvent: (e: RemusEvent) => void
  /** The time events count from (performance.now(); default: when the run starts). */
  readonly startedAt?: number
  /** The libxl layer's events (for -v lines). */
  readonly onStreamEvent?: MigrateEventHandler
}

export interface ColoOptions {
  /** The longest time between two checkpoints (libxl: 5 s). */
  readonly maxIntervalMs: number
  /**
   * The secondary's heartbeat timeout (given to it with --heartbeat-timeout): it fails over when no
   * checkpoint request came for that long. If we were silent that long ourselves, the secondary may
   * run the guest now: then a broken channel pauses the guest here instead of resuming it.
   */
  readonly heartbeatTimeoutMs?: number
  /** Asks for a checkpoint (the proxy saw the outputs diverge); resolves with why. */
  readonly trigger?: CheckpointTrigger
  /** The checkpoint devices (COLO disks) of the primary, driven at libxl's points of each cycle. */
  readonly devices?: CheckpointDevices
}

/**
 * libxl's checkpoint device ops for the primary's COLO devices (XEN-FACTS §7.2, §8): their errors
 * stop COLO (the guest then runs on here alone).
 */
export interface CheckpointDevices {
  /** After the guest suspended for checkpoint n: are the devices still replicating (not for n = 1)? */
  postsuspend(n: number): Promise<void>
  /** Before the guest resumes after checkpoint n (the secondary holds it): n = 1 starts replication, later ones checkpoint. */
  preresume(n: number): Promise<void>
  /** Replication is over (the secondary failed, or stopped): the devices go on alone. */
  teardown(): Promise<void>
}

/** The proxy side of COLO: when a checkpoint is wanted. */
export interface CheckpointTrigger {
  /** Resolves when the outputs diverged since the last reset, or never. */
  next(since: number): Promise<'divergence'>
  /** When the last request came (performance.now()). */
  readonly lastRequest?: {readonly atMs: number}
  /**
   * Both guests start again from the checkpoint the PVM was suspended for (at `step`, having sent
   * `framesAtSuspend` frames, when known): the proxy's preresume.
   */
  reset?(step: number | undefined, framesAtSuspend?: number): Promise<void> | void
  close(): Promise<void>
}
