/**
 * What the Remus and COLO primary report while they replicate, as data: the remus command renders
 * these as xl's lines, as -v lines, or as NDJSON (`--json`, documented in the README).
 */
export type RemusEvent =
  | {readonly kind: 'line'; readonly text: string}
  | {readonly kind: 'log'; readonly level: 'error' | 'warning' | 'info' | 'detail' | 'debug'; readonly text: string}
  /**
   * Checkpoint n is on the stream. pausedMs: suspend to resume; step: the guest's step at the suspend
   * (sim). COLO: why it was taken, and the primary's (A) and secondary's (B) dirty pages (pages = A ∪ B).
   */
  | {
      readonly kind: 'checkpoint'
      readonly number: number
      readonly atMs: number
      readonly pausedMs: number
      readonly pages: number
      readonly step?: number
      readonly reason?: 'first' | 'timer' | 'divergence'
      /** COLO, a divergence: when the proxy asked for it (same clock as atMs). */
      readonly requestedAtMs?: number
      readonly primaryDirty?: number
      readonly secondaryDirty?: number
      /**
       * Bytes the save helper wrote from the suspend request to the resume (the checkpoint's libxc
       * records, and its few messages to us): /proc/<helper>/io wchar.
       */
      readonly helperBytes?: number
    }
  /** The backup has checkpoint n whole. */
  | {readonly kind: 'ack'; readonly number: number; readonly atMs: number}
  /** Frames let out: the epoch they were held in (null: unbuffered), and the newest guest step among them. */
  | {readonly kind: 'netbuf-release'; readonly epoch: number | null; readonly frames: number; readonly maxStep: number; readonly atMs: number}
  | {readonly kind: 'result'; readonly ok: boolean; readonly domain: string; readonly domid: number; readonly outcome: RemusOutcome; readonly exitCode: number; readonly checkpoints: number; readonly acked: number; readonly reason?: string; readonly totalMs: number}

export type RemusOutcome =
  /** The domain was destroyed here (xl destroy forces a failover). */
  | 'primary-destroyed'
  /** The guest never suspended; left as it is. */
  | 'suspend-failed'
  /** The backup went away (or setup failed): the domain runs on here, unprotected. */
  | 'backup-failed'
  /** Replication stopped on request: the guest runs here, the backup discards its copy. */
  | 'stopped'
  /** The backup went live first (the tie-breaker said so): the domain is paused here, named `<name>--stale`. */
  | 'lost-tie'

export interface RemusResult {
  readonly outcome: RemusOutcome
  readonly exitCode: number
  readonly checkpoints: number
}
