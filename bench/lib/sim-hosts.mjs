/**
 * Simulated hosts for the benchmarks that run the xl-ts CLI between two of them on this machine:
 * host folders, guests, the sessions running on them, the notes of what went wrong, and the
 * clean-up that runs whatever happens (an error, the end, Ctrl-C): the sessions are stopped, the
 * guests destroyed, leftover processes of these hosts killed and their memory files removed (both
 * reported), and the host folders removed.
 */
import {spawnSync} from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'

import {SimHypervisor} from '../../dist/toolstack/backends/index.js'
import {resolveDomain} from '../../dist/toolstack/libxl/index.js'
import {alive, processesOf, sleepSync} from './processes.mjs'

/** The CLI of this build, run by this Node on the simulated backend. */
export const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url))
export const NODE = process.execPath
export const ENV = {...process.env, XL_TS_BACKEND: 'sim'}

/**
 * Installs the clean-up (on 'exit', SIGINT, SIGTERM and SIGHUP) and returns the hosts' handle.
 * label: prefix of the notes on stderr ("remus bench"); hostPrefix: of the host folders' names in
 * the temporary directory; sessionWord: how the notes name a session process ("remus [pid]");
 * mib, wsMib: the guests' memory and working set.
 */
export function createSimHosts({label, hostPrefix, sessionWord, mib, wsMib}) {
  /** What went wrong or was left behind, printed after the tables. */
  const notes = []
  const note = (text) => {
    notes.push(text)
    console.error(`${label}: ${text}`)
  }

  const hosts = []
  const hvs = new Map()
  /** Session processes that have not exited yet: stopped with SIGINT at clean-up. */
  const sessions = new Set()
  /** Other children (a baseline's processes): SIGKILLed first at clean-up. */
  const killOnCleanup = new Set()

  function newHost(tag) {
    const h = fs.mkdtempSync(path.join(os.tmpdir(), `${hostPrefix}-${tag}-`))
    hosts.push(h)
    return h
  }
  function hv(root) {
    if (!hvs.has(root)) hvs.set(root, new SimHypervisor(root))
    return hvs.get(root)
  }
  function domainIds(root) {
    const d = path.join(root, 'domains')
    return fs.existsSync(d) ? fs.readdirSync(d).filter((x) => /^\d+$/.test(x)) : []
  }
  function hostId(root) {
    try {
      return JSON.parse(fs.readFileSync(path.join(root, 'host.json'), 'utf8')).hostId
    } catch {
      return undefined
    }
  }

  function destroyAll(root) {
    for (const d of domainIds(root)) {
      const r = spawnSync(NODE, [BIN, '--root', root, 'destroy', d], {env: ENV, encoding: 'utf8', timeout: 15000})
      if (r.status !== 0 && fs.existsSync(path.join(root, 'domains', d))) note(`destroy ${d} on ${root}: exit ${r.status ?? r.signal}: ${r.stderr.trim()}`)
    }
  }

  /** Stops the sessions still running as an operator does (SIGINT), waiting for them. */
  async function stopSessions() {
    await Promise.all(
      [...sessions].map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return
        const exited = new Promise((r) => child.once('exit', r))
        child.kill('SIGINT')
        const t = setTimeout(() => {
          note(`${sessionWord} [${child.pid}] still running 10 s after SIGINT: killed`)
          child.kill('SIGKILL')
        }, 10000)
        await exited
        clearTimeout(t)
      }),
    )
  }

  let cleaned = false
  /** Synchronous, so that it also runs from 'exit' (sessions still running get SIGINT, then SIGKILL). */
  function cleanup() {
    if (cleaned) return
    cleaned = true
    for (const child of killOnCleanup) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    for (const child of sessions) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT')
    }
    for (const child of sessions) {
      const until = Date.now() + 10000
      while (alive(child.pid) && Date.now() < until) sleepSync(50)
      if (alive(child.pid)) {
        note(`${sessionWord} [${child.pid}] still running 10 s after SIGINT: killed`)
        child.kill('SIGKILL')
      }
    }
    for (const h of hvs.values()) h.close()
    // Twice: a second host that took over after a killed primary builds its domain late.
    for (let pass = 0; pass < 2; pass++) {
      for (const h of hosts) destroyAll(h)
      const until = Date.now() + 5000
      while (processesOf(hosts).length && Date.now() < until) sleepSync(100)
    }
    for (const p of processesOf(hosts)) {
      note(`leftover process [${p.pid}] ${p.cmd}: killed`)
      try {
        process.kill(p.pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
    for (const h of hosts) {
      const id = hostId(h)
      if (id) {
        for (const f of fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`xl-ts-${id}-`))) {
          note(`leftover memory file /dev/shm/${f}: removed`)
          fs.rmSync(path.join('/dev/shm', f), {force: true})
        }
      }
      fs.rmSync(h, {recursive: true, force: true})
    }
  }
  process.on('exit', cleanup)
  let interrupted = false
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(s, async () => {
      if (interrupted) return
      interrupted = true
      console.error(`${label}: ${s}: stopping the sessions and cleaning up`)
      await stopSessions()
      cleanup()
      process.exit(130)
    })
  }

  /** Creates a guest with `xl-ts create`; returns its domid. */
  async function createGuest(root, name, dirtyPps) {
    if (interrupted) throw new Error('interrupted')
    const cfg = path.join(root, `${name}.cfg`)
    fs.writeFileSync(cfg, [`name = "${name}"`, 'type = "hvm"', `memory = ${mib}`, 'vcpus = 1', `sim_dirty_rate = ${dirtyPps}`, `sim_working_set = ${wsMib}`, 'sim_seed = 1'].join('\n') + '\n')
    const r = spawnSync(NODE, [BIN, '--root', root, 'create', '-q', cfg], {env: ENV, encoding: 'utf8'})
    if (r.status !== 0) throw new Error(`create ${name}: ${r.stderr}`)
    return resolveDomain(hv(root), name)
  }

  async function destroyGuest(root, name) {
    const r = spawnSync(NODE, [BIN, '--root', root, 'destroy', name], {env: ENV, encoding: 'utf8'})
    if (r.status !== 0) note(`destroy ${name}: ${r.stderr.trim()}`)
  }

  /** For the bench's catch: reports the error (unless Ctrl-C and the like caused it) and sets exit code 1. */
  function fail(e) {
    if (!interrupted) {
      console.error(`${label}: ${e.stack ?? e}`)
      process.exitCode = 1
    }
  }

  /**
   * For the bench's finally: stops the sessions, runs `beforeCleanup`, cleans up, and prints the
   * notes (exit code 1 if there are any). After a signal it leaves all that to the signal handler.
   */
  async function finish(beforeCleanup = async () => {}) {
    if (interrupted) await new Promise(() => {}) // the signal handler cleans up and exits
    await stopSessions()
    await beforeCleanup()
    cleanup()
    if (notes.length) {
      console.log('\nnotes (problems seen while measuring):')
      for (const n of notes) console.log(`- ${n}`)
      if (!process.exitCode) process.exitCode = 1
    }
  }

  return {
    note,
    newHost,
    hv,
    domainIds,
    createGuest,
    destroyGuest,
    sessions,
    killOnCleanup,
    get interrupted() {
      return interrupted
    },
    fail,
    finish,
  }
}
