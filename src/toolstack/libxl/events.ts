/**
 * What the sender and receiver report while they work, as data: commands render these as xl's
 * lines (`Saving to ...`, `Loading new save file ...`), as log lines, or as NDJSON.
 */
import type {HelperLogEvent, HelperProgressEvent} from '../helper/index.js'
import type {LibxlKind} from '../stream/index.js'

/** The numbers xl prints in `(info 0x%x/0x%x/%u)`: mandatory flags, optional flags, optional data length. */
export interface SavefileInfo {
  readonly mandatoryFlags: number
  readonly optionalFlags: number
  readonly optionalDataLength: number
}

export type MigrateEvent =
  /** xl: `Saving to <source> new xl format (info 0x%x/0x%x/%u)` (after the header is written). */
  | {readonly kind: 'savefile-written'; readonly source: string; readonly info: SavefileInfo}
  /** xl: ` Savefile will not contain xl domain config`. */
  | {readonly kind: 'savefile-without-config'}
  /** xl: `Loading new save file <source> (new xl fmt info 0x%x/0x%x/%u)`. */
  | {readonly kind: 'savefile-loading'; readonly source: string; readonly info: SavefileInfo}
  /** xl: ` Savefile contains xl domain config in JSON format` (or without ` in JSON format`). */
  | {readonly kind: 'savefile-config'; readonly json: boolean}
  | {readonly kind: 'libxl-header'; readonly offset: number}
  /** A libxl record written or read. `offset` is null when it cannot be known (after the hand-off on a pipe). */
  | {readonly kind: 'libxl-record'; readonly record: LibxlKind; readonly index: number; readonly offset: number | null; readonly length: number}
  /** `prestarted`: the process was started ahead (helper/prestart.ts) and took its argv now. */
  | {readonly kind: 'helper-started'; readonly mode: 'save' | 'restore'; readonly pid: number | undefined; readonly argv: readonly string[]; readonly prestarted: boolean}
  | {readonly kind: 'helper-log'; readonly log: HelperLogEvent}
  | {readonly kind: 'helper-progress'; readonly progress: HelperProgressEvent}
  /** The libxc stream is done: the helper completed. `bytes` when the fd is a file (its position moved that far). */
  | {readonly kind: 'helper-done'; readonly mode: 'save' | 'restore'; readonly ms: number; readonly bytes?: number}
  | {readonly kind: 'suspended'; readonly domid: number}
  | {readonly kind: 'suspend-failed'; readonly domid: number; readonly reason: string}
  /** EMULATOR_CONTEXT: saved from the device model, or received and kept for the device model to start from. */
  | {readonly kind: 'device-state'; readonly direction: 'saved' | 'received'; readonly bytes: number}
  | {readonly kind: 'xenstore-data'; readonly entries: number}
  | {readonly kind: 'stream-end'; readonly offset: number | null}
  /** The domain the stream is restored into was built (paused, empty). */
  | {readonly kind: 'domain-created'; readonly domid: number; readonly name: string}
  /** A failed restore destroyed the half-built domain (`error` when even that failed). */
  | {readonly kind: 'domain-destroyed'; readonly domid: number; readonly error?: string}
  /** The save failed; the domain is resumed next (xl: `Failed to save domain, resuming domain`). */
  | {readonly kind: 'save-failed'; readonly domid: number; readonly reason: string; readonly suspended: boolean}
  /** After a save: what became of the source domain. `error` when that step failed. */
  | {readonly kind: 'source-domain'; readonly domid: number; readonly action: 'resumed' | 'paused' | 'destroyed'; readonly error?: string}
  /** Remus primary: checkpoint n is on the stream (CHECKPOINT_END written). */
  | {readonly kind: 'checkpoint-sent'; readonly number: number}
  /** Remus primary: checkpoint n could not be completed (the callback answers failure). */
  | {readonly kind: 'checkpoint-failed'; readonly number: number; readonly reason: string}
  /** Remus secondary: checkpoint n is here whole (through CHECKPOINT_END) and will be applied. */
  | {readonly kind: 'checkpoint-received'; readonly number: number; readonly records: number}
  /** Remus secondary: the stream broke; the domain holds the last complete checkpoint. */
  | {readonly kind: 'failover'; readonly checkpoints: number; readonly reason: string}

export type MigrateEventHandler = (e: MigrateEvent) => void
