/**
 * The save/restore helper: its argv, its callback protocol (both ends) and the client that spawns it
 * (Xen's libxl-save-helper or ours) and answers its callbacks.
 */
export * from './protocol.js'
export * from './argv.js'
export * from './client.js'
export * from './prestart.js'
export * from './channel.js'
