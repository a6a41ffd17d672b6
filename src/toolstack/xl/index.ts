/**
 * The xl-level sender and receiver: the xl savefile header and config, the libxl stream around the
 * libxc stream the save/restore helper moves, save to and restore from a file. No printing: typed
 * events and errors, which the commands render.
 */
export * from '../libxl/errors.js'
export * from '../libxl/events.js'
export {encodeSavefileHeader, readSavefileHeader, writeSavefileHeader, type SavefileHeader, type ReadSavefileHeaderOptions, type WriteSavefileHeaderOptions} from './savefile-header.js'
export {fdPosition, isSeekable} from '../fd/index.js'
export {STREAM_OFFSET_ENV, helperEnv} from '../libxl/helper-env.js'
export {sendDomain, type SendDomainOptions, type SendResult} from '../libxl/save-stream.js'
export {receiveDomain, type ReceiveDomainOptions, type ReceiveResult} from '../libxl/stream-reader.js'
export {
  SaveFailedError,
  openSavefile,
  restoreFromSavefile,
  saveDomainToFile,
  type AfterSave,
  type OpenSavefile,
  type RestoreFromSavefileOptions,
  type RestoreFromSavefileResult,
  type SaveToFileOptions,
  type SaveToFileResult,
} from './save-restore.js'
export {EventLines, infoText, type EventLine, type EventLinesOptions, type LineLevel} from './lines.js'
export * from './migration-events.js'
export * from './migrate-sender.js'
export * from './migrate-receiver.js'
export * from './rune.js'
export * from './handshake.js'
export {runRemusPrimary} from './remus-session.js'
