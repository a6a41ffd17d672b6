/** Presentation of what the toolstack reads and does: stream listings and summaries. */
export * from './stream-inspect.js'
export * from './stream-summary.js'
export * from './migration-progress.js'
