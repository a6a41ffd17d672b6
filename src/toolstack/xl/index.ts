/**
 * The xl layer: the savefile header and config, save to and restore from a file, migrate and
 * migrate-receive, the remus session; with the libxl layer's surface under it. No printing: typed
 * events and errors, which the commands render.
 */
export * from '../libxl/index.js'
export {encodeSavefileHeader, readSavefileHeader, writeSavefileHeader, type SavefileHeader, type ReadSavefileHeaderOptions, type WriteSavefileHeaderOptions} from './savefile-header.js'
export {fdPosition, isSeekable} from '../fd/index.js'
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
export {takeReceiverEarly} from './receiver-early.js'
export * from './tie-breaker.js'
