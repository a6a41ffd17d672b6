/** A `node -e SCRIPT` child that takes commands as lines on stdin and answers with lines on stdout. */
import {spawn} from 'node:child_process'

import {onLines} from './lines.mjs'
import {NODE} from './sim-hosts.mjs'

/**
 * Starts `node -e script ...args`; `killSet` holds it until stop() (the bench's clean-up SIGKILLs
 * what is still there). `next()` awaits its next stdout line; its exit rejects those waiting, naming
 * `name` and its stderr.
 */
export function lineChild(name, script, args, killSet) {
  const child = spawn(NODE, ['-e', script, ...args], {stdio: ['pipe', 'pipe', 'pipe']})
  killSet.add(child)
  const lines = []
  const waiters = []
  let err = ''
  onLines(child.stdout, (text) => {
    if (waiters.length) waiters.shift().resolve(text)
    else lines.push(text)
  })
  child.stderr.on('data', (d) => (err += d))
  child.on('exit', (code, signal) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`${name} exited (${code ?? signal}): ${err.trim()}`))
  })
  return {
    child,
    send: (text) => child.stdin.write(text + '\n'),
    next: (ms = 30000) =>
      lines.length
        ? Promise.resolve(lines.shift())
        : new Promise((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(`${name}: no answer within ${ms} ms: ${err.trim()}`)), ms)
            waiters.push({resolve: (x) => (clearTimeout(t), resolve(x)), reject})
          }),
    /** Ends it (stdin closed, SIGTERM) and waits for its exit. */
    async stop() {
      const exited = new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', r)))
      child.stdin.end()
      child.kill('SIGTERM')
      await exited
      killSet.delete(child)
    },
  }
}
