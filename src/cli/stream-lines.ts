/**
 * The libxl layer's events (libxl/events.ts) as stderr lines, the same way for every command that
 * runs a stream (migrate, migrate-receive, remus): EventLines words them; the helper's own logs come
 * worded as libxl's logger words them (`context: level: message`) and are printed as they are when
 * their level is enabled.
 */
import {EventLines, type MigrateEvent} from '../toolstack/xl/index.js'
import {LOG_LEVELS, type LogLevel} from './log.js'

/** A level name of the libxl layer as the logger's level (unknown names: info). */
export function logLevel(level: string): LogLevel {
  return LOG_LEVELS.find((l) => l === level) ?? 'info'
}

export interface StreamLineOptions {
  /** Whether the logger shows this level. */
  readonly enabled: (level: LogLevel) => boolean
  /** Prints one line ('plain': as it is). */
  readonly print: (level: LogLevel | 'plain', text: string) => void
  /**
   * The helper's progress: 'hide' (a command with its own progress display), or 'worded' (printed as
   * the helper words it, like its logs).
   */
  readonly helperProgress: 'hide' | 'worded'
}

export function streamEventPrinter(o: StreamLineOptions): (e: MigrateEvent) => void {
  const eventLines = new EventLines()
  return (e) => {
    if (e.kind === 'helper-progress' && o.helperProgress === 'hide') return
    const worded = e.kind === 'helper-log' || e.kind === 'helper-progress'
    for (const l of eventLines.lines(e)) {
      if (worded && l.level !== 'plain' && !o.enabled(logLevel(l.level))) continue
      o.print(l.level === 'plain' || worded ? 'plain' : logLevel(l.level), l.text)
    }
  }
}
