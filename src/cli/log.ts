/**
 * Log lines on stderr, as xl's xentoollog stdiostream logger writes them. xl logs at "progress"
 * and above by default; each -v lowers the threshold one level (xl.c: minmsglevel--), so -v shows
 * "detail", -vv "verbose" and -vvv "debug". -T adds the date and pid in front of each line
 * (XTL_STDIOSTREAM_SHOW_DATE | XTL_STDIOSTREAM_SHOW_PID).
 */

/** xentoollog levels, lowest first. */
export const LOG_LEVELS = ['debug', 'verbose', 'detail', 'progress', 'info', 'notice', 'warning', 'error', 'critical'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

const DEFAULT_MIN = LOG_LEVELS.indexOf('progress')

export interface LogOptions {
  /** Number of -v given. */
  verbosity: number
  timestamps: boolean
  write?: (text: string) => void
}

export class Log {
  readonly #min: number
  readonly #timestamps: boolean
  readonly #write: (text: string) => void

  constructor(opts: LogOptions) {
    this.#min = Math.max(0, DEFAULT_MIN - opts.verbosity)
    this.#timestamps = opts.timestamps
    this.#write = opts.write ?? (text => process.stderr.write(text))
  }

  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) >= this.#min
  }

  /** A line as xl's fprintf(stderr) and LOG() write it (xl_utils.c dolog): plain, never stamped. */
  plain(message: string): void {
    this.#write(`${message}\n`)
  }

  log(level: LogLevel, message: string): void {
    if (!this.enabled(level)) return
    this.#write(`${this.#stamp()}xl-ts: ${level}: ${message}\n`)
  }

  debug(message: string): void {
    this.log('debug', message)
  }

  verbose(message: string): void {
    this.log('verbose', message)
  }

  detail(message: string): void {
    this.log('detail', message)
  }

  #stamp(): string {
    if (!this.#timestamps) return ''
    const d = new Date()
    const p = (n: number) => String(n).padStart(2, '0')
    const tz = new Intl.DateTimeFormat('en-US', {timeZoneName: 'short'}).formatToParts(d).find(x => x.type === 'timeZoneName')?.value ?? ''
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())} ${tz} [${process.pid}] `
  }
}
