/** What the commands share: the xl command base, its flags and errors, logging, signals, stream lines. */
export {GLOBAL_FLAG_NAMES} from './argv.js'
export {XlCommand, globalFlags, notSupported, requiresArguments} from './base-command.js'
export {strerror} from './errno.js'
export {EXIT_FAILURE, LIBXL, UsageError, XlExit, hintKind, libxlRc, withHint} from './errors.js'
export {libxlJson} from './libxl-json.js'
export type {Log, LogLevel} from './log.js'
export {onOperatorSignals} from './signals.js'
export {streamEventPrinter} from './stream-lines.js'
