/**
 * The xl-level sender and receiver: the xl savefile header and config, the libxl stream around the
 * libxc stream the save/restore helper moves, save to and restore from a file. No printing: typed
 * events and errors, which the commands render.
 */
export * from './errors.js'
export * from './events.js'
export {encodeSavefileHeader, readSavefileHeader, writeSavefileHeader, type SavefileHeader, type ReadSavefileHeaderOptions, type WriteSavefileHeaderOptions} from './savefile.js'
export {fdPosition, isSeekable} from '../fd/index.js'
export {STREAM_OFFSET_ENV, helperEnv} from './host-env.js'
export {sendDomain, type SendDomainOptions, type SendResult} from './sender.js'
export {receiveDomain, type ReceiveDomainOptions, type ReceiveResult} from './receiver.js'
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
} from './save-file.js'
export {EventLines, infoText, type EventLine, type EventLinesOptions, type LineLevel} from './lines.js'
export * from './migration-events.js'
export * from './migration-sender.js'
export * from './migration-receiver.js'
export * from './rune.js'
export * from './handshake.js'
