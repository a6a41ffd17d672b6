/**
 * The lines xl prints for what the sender and receiver report, as data (the commands print them):
 * xl's own fprintf lines (`Saving to ...`, `Loading new save file ...`) at level `plain`, the
 * helper's log messages and progress as libxl's stdio logger words them (xtl_logger_stdio.c:
 * `context: level: message`, and `context: level: doing: done/total  NN%` with its rule for which
 * percentages are worth a line), and our own notes at detail and debug.
 */
import type {MigrateEvent, SavefileInfo} from '../libxl/index.js'

export type LineLevel = 'plain' | 'debug' | 'verbose' | 'detail' | 'progress' | 'info' | 'notice' | 'warning' | 'error' | 'critical'

export interface EventLine {
  readonly level: LineLevel
  readonly text: string
}

const XTL_TO_LINE: Record<string, LineLevel> = {
  debug: 'debug',
  verbose: 'verbose',
  detail: 'detail',
  progress: 'progress',
  info: 'info',
  notice: 'notice',
  warn: 'warning',
  error: 'error',
  critical: 'critical',
}

/** `0x3/0x0/1234`, as xl's `(info 0x%x/0x%x/%u)`. */
export function infoText(info: SavefileInfo): string {
  return `0x${info.mandatoryFlags.toString(16)}/0x${info.optionalFlags.toString(16)}/${info.optionalDataLength}`
}

/** Turns events into lines; keeps the progress state xl's logger keeps (last percentage shown). */
export interface EventLinesOptions {
  /**
   * Which levels will be printed. The progress rule depends on it, as in xl's logger: a percentage
   * only counts as shown when its line was printed. Default: every level.
   */
  readonly enabled?: (level: Exclude<LineLevel, 'plain'>) => boolean
  /**
   * The helper's error messages go into the failure the command reports (MigrateError names the
   * helper's last error): show them only at `detail` (-v) so a failure stays one line. Default true.
   */
  readonly foldHelperErrors?: boolean
}

export class EventLines {
  #lastPercent = 0
  readonly #fold: boolean
  readonly #enabled: (level: Exclude<LineLevel, 'plain'>) => boolean

  constructor(opts: EventLinesOptions = {}) {
    this.#fold = opts.foldHelperErrors ?? true
    this.#enabled = opts.enabled ?? (() => true)
  }

  lines(e: MigrateEvent): EventLine[] {
    switch (e.kind) {
      case 'savefile-written':
        return [{level: 'plain', text: `Saving to ${e.source} new xl format (info ${infoText(e.info)})`}]
      case 'savefile-without-config':
        return [{level: 'plain', text: ' Savefile will not contain xl domain config'}]
      case 'savefile-loading':
        return [{level: 'plain', text: `Loading new save file ${e.source} (new xl fmt info ${infoText(e.info)})`}]
      case 'savefile-config':
        return [{level: 'plain', text: ` Savefile contains xl domain config${e.json ? ' in JSON format' : ''}`}]
      case 'helper-log': {
        const l = e.log
        const errno = l.errnoval ? `: ${l.errnoName ?? `errno ${l.errnoval}`}` : ''
        let level = XTL_TO_LINE[l.levelName] ?? 'info'
        if (this.#fold && (level === 'error' || level === 'critical')) level = 'detail'
        return [{level, text: `${l.context}: ${l.levelName}: ${l.message}${errno}`}]
      }
      case 'helper-progress':
        return this.#progress(e.progress.context, e.progress.doingWhat, e.progress.done, e.progress.total)
      case 'helper-started':
        return [{level: 'debug', text: `${e.mode} helper [${e.pid ?? '?'}]${e.prestarted ? ' (started ahead)' : ''}: ${e.argv.join(' ')}`}]
      case 'helper-done':
        return [{level: 'detail', text: `libxc stream ${e.mode === 'save' ? 'written' : 'read'} in ${e.ms.toFixed(0)} ms${e.bytes !== undefined ? ` (${e.bytes} bytes)` : ''}`}]
      case 'libxl-header':
        return [{level: 'debug', text: `libxl stream header at offset ${e.offset}`}]
      case 'libxl-record':
        return [{level: 'debug', text: `libxl ${e.record} record #${e.index} at offset ${e.offset ?? 'unknown'}, length ${e.length}`}]
      case 'suspended':
        return [{level: 'detail', text: `domain ${e.domid} suspended`}]
      case 'suspend-failed':
        return [{level: 'error', text: `domain ${e.domid}: suspend failed: ${e.reason}`}]
      case 'device-state':
        return [{level: 'detail', text: `device model state ${e.direction}: ${e.bytes} bytes`}]
      case 'xenstore-data':
        return [{level: 'detail', text: `device model xenstore data: ${e.entries} entries`}]
      case 'stream-end':
        return [{level: 'debug', text: `libxl stream END${e.offset === null ? '' : `, stream ends at offset ${e.offset}`}`}]
      case 'domain-created':
        return [{level: 'detail', text: `created domain ${e.name} (domid ${e.domid}) for the restore`}]
      case 'domain-destroyed':
        return e.error === undefined
          ? [{level: 'detail', text: `destroyed the half-restored domain ${e.domid}`}]
          : [{level: 'error', text: `cannot destroy the half-restored domain ${e.domid}: ${e.error}`}]
      case 'save-failed':
        return []
      case 'source-domain':
        return e.error === undefined
          ? [{level: 'detail', text: `domain ${e.domid} ${e.action}`}]
          : [{level: 'error', text: `domain ${e.domid} could not be ${e.action}: ${e.error}`}]
      case 'checkpoint-sent':
        return [{level: 'debug', text: `checkpoint ${e.number} sent`}]
      case 'checkpoint-failed':
        return [{level: 'error', text: `checkpoint ${e.number} failed: ${e.reason}`}]
      case 'checkpoint-received':
        return [{level: 'debug', text: `checkpoint ${e.number} received (${e.records} libxl records)`}]
      case 'failover':
        return [{level: 'info', text: `the stream broke after ${e.checkpoints} checkpoints: ${e.reason}`}]
    }
  }

  /** xtl_logger_stdio.c stdiostream_progress, without CR. */
  #progress(context: string, doingWhat: string, done: number, total: number): EventLine[] {
    const percent = total ? Math.floor((done * 100) / total) : 0
    let level: 'progress' | 'detail'
    if (percent < this.#lastPercent) level = 'progress'
    else if (percent === this.#lastPercent) return []
    else if (percent < this.#lastPercent + 5) level = 'detail'
    else level = 'progress'
    if (!this.#enabled(level)) return []
    this.#lastPercent = percent
    // libxc's doing_what is the prefix ("Frames"); tolerate a helper that sends "Frames: ".
    const doing = doingWhat.replace(/:\s*$/, '')
    // Without CR, the logger prints it as a message of that level: `xc: progress: Frames: 1/2   50%`.
    return [{level, text: `${context ? `${context}: ` : ''}${level}: ${doing}: ${done}/${total}  ${String(percent).padStart(3)}%`}]
  }
}
