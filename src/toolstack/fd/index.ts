/**
 * Raw-fd I/O: exact-length readers and writers over fds shared with other processes, the fd pair
 * of a transport child, the fd map handed to a child (dup_cloexec), and the helper's sync source.
 */
export * from './errors.js'
export * from './fd-source.js'
export * from './replay-source.js'
export * from './raw-io.js'
export * from './fd-flags.js'
export * from './fd-map.js'
export * from './fd-pair.js'
export * from './sync-source.js'
export * from './fd-position.js'
export * from './read-available.js'
export * from './kernel-copy.js'
