/**
 * Test hooks: what tests reach into a running toolstack with (the migration fault points, the
 * checkpoint probe, the negative controls that skip a replication step), held in one place with a
 * default that does nothing.
 *
 * Nothing here reads the environment, and no production entry point (bin/run.js and the CLI, the
 * save helper, the guardian, the sim domain) installs hooks: only a test's own entry program does,
 * before it runs the same main as the production one (test/support/xl-ts-test.mjs for the CLI,
 * test/support/save-helper-test.mjs for the helper, named by LIBXL_SAVE_HELPER). So no variable in
 * an operator's environment can switch on a fault point or weaken replication.
 *
 * A call site asks `testHooks()` at the moment it needs a hook (never at module load), so hooks a
 * test entry installs before it imports main are the ones seen.
 */
import type {Hypervisor} from './hypervisor/index.js'

export type FaultSide = 'sender' | 'receiver'

export type FaultPoint =
  | 'receiver:banner' // before the banner is written
  | 'receiver:header' // after the xl header is read, before the domain is built
  | 'receiver:before-ready' // the stream is in, before `ready` is written
  | 'receiver:after-ready' // `ready` written, before GO is read
  | 'receiver:after-go' // GO read (and the guardian told), before rename and unpause
  | 'sender:precopy' // a precopy round after the first has started
  | 'sender:stop-and-copy' // the guest is suspended, before the helper is told so
  | 'sender:after-ready' // `ready` read, before the rename and GO
  | 'sender:after-go' // GO written, before the report is read

/** A migration side's fault points (testing/fault-points.ts has the tests' implementation). */
export interface FaultPoints {
  /** Records a pid under a name (`helper`, `transport`, `guardian`). */
  note(name: string, pid: number | undefined): void
  /** This point was passed (a test may stop the process here). */
  at(point: FaultPoint): void
}

export interface ProbeRecordOptions {
  /** Record this checkpoint even when a test asked for every K-th only. */
  readonly force?: boolean
  readonly failover?: boolean
  /** Memory and vCPU context (COLO), not memory alone. */
  readonly context?: boolean
}

/** Checksums of a replicated domain at each checkpoint (testing/probe.ts has the tests' implementation). */
export interface CheckpointProbe {
  record(checkpoint: number, opts?: ProbeRecordOptions): Promise<void>
  /** The COLO secondary's disk view against what `record` saw for this checkpoint. */
  recordView(checkpoint: number): Promise<void>
}

export interface TestHooks {
  /** Made once per migration side, when it starts. */
  faultPoints(side: FaultSide): FaultPoints
  /** Made once per replicated domain; undefined: no probe. */
  checkpointProbe(hv: Hypervisor, domid: number, side: 'primary' | 'secondary'): CheckpointProbe | undefined
  /** Negative control: the COLO secondary skips its disks' checkpoint. */
  readonly coloSkipDiskCheckpoint: boolean
  /** Negative control: the COLO primary's save helper ignores the secondary's dirty pages (set B). */
  readonly coloIgnoreSecondaryDirty: boolean
}

const NO_FAULT_POINTS: FaultPoints = {note: () => {}, at: () => {}}

export const NO_TEST_HOOKS: TestHooks = Object.freeze({
  faultPoints: () => NO_FAULT_POINTS,
  checkpointProbe: () => undefined,
  coloSkipDiskCheckpoint: false,
  coloIgnoreSecondaryDirty: false,
})

let installed: TestHooks = NO_TEST_HOOKS

/** The hooks in force: none unless a test entry installed some. */
export function testHooks(): TestHooks {
  return installed
}

/** For test entry programs only: installs hooks (what is not given stays a no-op) for this process. */
export function installTestHooks(hooks: Partial<TestHooks>): void {
  installed = Object.freeze({...NO_TEST_HOOKS, ...hooks})
}
