/**
 * What a primary's checkpoint cycle (Remus: remus-primary.ts, COLO: colo-primary.ts) is given by
 * the session around it (xl/remus-session.ts), and how it fails: one CheckpointError naming the
 * checkpoint and the step, after the callback the helper waits on was answered 0.
 */
import type {SaveStream} from '../libxl/index.js'
import type {Hypervisor} from '../hypervisor/index.js'
import type {CheckpointProbe} from '../test-hooks.js'

/** How a cycle ends: the next checkpoint follows, or replication stopped cleanly (the stream is ended). */
export type CycleEnd = 'next' | 'stop'

/** Where in a cycle it failed. */
export type CycleStep = 'suspend' | 'checkpoint' | 'resume' | 'wait'

export class CheckpointError extends Error {
  override readonly name = 'CheckpointError'
  constructor(
    readonly number: number,
    readonly step: CycleStep,
    message: string,
    options?: {cause?: unknown},
  ) {
    super(message, options)
  }
}

/** The guest did not suspend (libxl__domain_suspend failed). */
export class SuspendError extends Error {
  override readonly name = 'SuspendError'
}

export type LogLevel = 'error' | 'warning' | 'info' | 'detail' | 'debug'

/** The primary's guardian (xl/guardian.ts), as replication tells it what it must know. */
export interface GuardianLink {
  /** The backup holds a checkpoint: if we die now, it takes over. */
  acknowledged(): Promise<void>
  /** The save helper's pid (killed with us). */
  helper(pid: number): Promise<void>
}

/** The session's side of a cycle. */
export interface PrimaryIo {
  readonly hypervisor: Hypervisor
  readonly domid: number
  readonly stream: SaveStream
  readonly guardian: GuardianLink | undefined
  readonly probe: CheckpointProbe | undefined
  /** The operator asked to stop replicating (after the next whole checkpoint). */
  stopRequested(): boolean
  log(level: LogLevel, text: string): void
  /**
   * libxl__domain_suspend: the guest, then (HVM) its device model's state, which
   * goes into the checkpoint. Throws SuspendError when the guest does not suspend.
   */
  suspend(): Promise<{readonly atMs: number; readonly deviceState?: Buffer}>
  /** libxl__domain_resume(..., suspend_cancel 1): the guest carries on where it was. */
  resume(): Promise<void>
  /**
   * libxl's part of checkpoint n on the stream after the helper's CHECKPOINT: the device model's
   * state (HVM) and CHECKPOINT_END.
   */
  writeCheckpointEnd(n: number, deviceState: Buffer | undefined): Promise<void>
  /** The guest runs again after checkpoint n (suspended at `atMs`): reports the checkpoint. */
  resumed(n: number, atMs: number, extra?: {readonly reason?: 'first' | 'timer' | 'divergence'; readonly requestedAtMs?: number}): Promise<void>
  /** The sim guest's step and the frames it has sent (undefined elsewhere). */
  guestCounters(): Promise<{readonly step: number; readonly frames: number} | undefined>
}

/** What the session needs of a mode (Remus or COLO). */
export interface PrimaryMode {
  /** How xl names it in its lines. */
  readonly name: 'Remus' | 'COLO'
  readonly streamType: 'remus' | 'colo'
  /** Checkpoints the backup has acknowledged (Remus; COLO has no acknowledgements). */
  readonly acked: number
  /**
   * The way back from the backup, once the xl header is sent (undefined: blackhole): Remus reads
   * acknowledgements on it; COLO gives it to the save helper as its back channel (returned).
   */
  open(io: PrimaryIo, wayBack: number | undefined): Promise<{readonly backChannel?: number}>
  /** One checkpoint cycle. Throws CheckpointError (the helper was answered 0). */
  checkpoint(n: number): Promise<CycleEnd>
  /** Replication is over either way: the mode's devices go on alone. */
  close(): Promise<void>
  /** After the way back is closed: what still reads it has ended. */
  settled(): Promise<void>
  /** The backup may run the guest now (so it must not run here too). */
  secondaryMayRun(): boolean
}

/** Wraps what failed in a cycle as its CheckpointError (a SuspendError stays one, as the cause). */
export function checkpointFailure(n: number, step: CycleStep, err: unknown): CheckpointError {
  if (err instanceof CheckpointError) return err
  const why = err instanceof Error ? err.message : String(err)
  return new CheckpointError(n, step, why, {cause: err})
}
