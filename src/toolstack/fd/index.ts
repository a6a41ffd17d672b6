/** Raw-fd I/O: exact-length readers over fds shared with other processes. */
export * from './fd-source.js'
export * from './replay-source.js'
