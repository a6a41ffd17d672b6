/**
 * A device model that outlives the program that starts it, as libxl's qemu-dm outlives xl: QEMU is
 * spawned in its own session with no parent-death signal, its stdout and stderr on the files it is
 * given, its pid file (`qemu.pid`, pid + start time) in its folder. `launchDetachedDeviceModel`
 * resolves once QEMU answers on the QMP socket it is told to wait for (that connection is closed
 * again: the monitor is left free for whoever drives QEMU), and, when QEMU was started with
 * `-incoming`, once the incoming state is loaded. A QEMU that exits or does not answer in time is
 * ended and its pid file removed; the error says what QEMU said (the tail of its log).
 *
 * Ending one is `reapFolder` (pid-file.ts): SIGTERM, then SIGKILL, by pid and start time.
 */
import {spawn} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {procStart, sleep} from '../process/index.js'
import {QmpClient, QmpConnectionError, QmpTimeoutError} from '../qmp/index.js'
import {DEFAULT_QEMU, QEMU_ENV} from './args.js'
import {resolveBinary} from './binary.js'
import {DeviceModelError} from './errors.js'
import {pidFileIsLive, readPidFile, reapFolder, removeDeviceModelFiles, writePidFile, type PidRecord} from './pid-file.js'

export interface DetachedDeviceModelOptions {
  /** QEMU's working directory (must exist): its pid file goes there, relative paths in its arguments start there. */
  readonly folder: string
  /** QEMU's arguments, whole (deviceModelArgs). */
  readonly args: readonly string[]
  /** The QMP socket that says QEMU is up (absolute, or relative to the folder). */
  readonly readySocket: string
  /** Where QEMU's stdout and stderr go (open file descriptors; kept open by QEMU, not closed here). */
  readonly stdout: number
  readonly stderr: number
  /** The log file behind `stderr`, for the error of a QEMU that did not come up. */
  readonly logFile?: string
  /** QEMU was started with `-incoming`: wait until it has loaded that state. */
  readonly incoming?: boolean
  /** The QEMU binary (default `$XL_TS_QEMU`, else qemu-system-x86_64). */
  readonly binary?: string
  readonly env?: NodeJS.ProcessEnv
  /** From spawn to ready (default 10 s; libxl allows 60). */
  readonly startTimeoutMs?: number
}

function logTail(file: string | undefined): string {
  if (!file) return ''
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-6).join('; ')
  } catch {
    return ''
  }
}

/**
 * Starts QEMU detached; resolves with its pid and start time once it is ready. Rejects with a
 * DeviceModelError (`not-found`, `in-use`, `spawn`, `exited`, `timeout`), leaving no QEMU behind.
 */
export async function launchDetachedDeviceModel(o: DetachedDeviceModelOptions): Promise<PidRecord> {
  const folder = path.resolve(o.folder)
  const env = o.env ?? process.env
  const wanted = o.binary ?? env[QEMU_ENV] ?? DEFAULT_QEMU
  const binary = resolveBinary(wanted, env)
  if (!binary) throw new DeviceModelError('not-found', folder, `${wanted} not found (PATH or ${QEMU_ENV}); Debian's qemu-system-x86 provides it (scripts/setup installs it)`)
  const prior = readPidFile(folder)
  if (pidFileIsLive(prior)) throw new DeviceModelError('in-use', folder, `a QEMU (pid ${prior.pid}) already runs for ${folder}`, {pid: prior.pid})
  removeDeviceModelFiles(folder)

  const child = spawn(binary, [...o.args], {cwd: folder, env, detached: true, stdio: ['ignore', o.stdout, o.stderr]})
  if (child.pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once('error', resolve))
    throw new DeviceModelError('spawn', folder, `cannot start ${binary}: ${err.message}`, {cause: err})
  }
  const pid = child.pid
  child.on('error', () => {})
  let exited: string | undefined
  child.once('exit', (code, signal) => (exited = signal ? `signal ${signal}` : `status ${code}`))
  child.unref()
  const start = procStart(pid) ?? 0
  writePidFile(folder, {pid, start})

  const timeoutMs = o.startTimeoutMs ?? 10_000
  const deadline = Date.now() + timeoutMs
  const failed = async (code: 'exited' | 'timeout', why: string): Promise<never> => {
    await reapFolder(folder, {termTimeoutMs: 1000, killTimeoutMs: 1000}).catch(() => undefined)
    const said = logTail(o.logFile)
    throw new DeviceModelError(code, folder, `QEMU pid ${pid} ${why}${said ? `: ${said}` : ''}`, {pid, ...(said ? {stderr: said} : {})})
  }
  const socket = path.resolve(folder, o.readySocket)
  for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
    if (exited) return failed('exited', `exited (${exited}) before it answered on QMP`)
    const left = deadline - Date.now()
    if (left <= 0) return failed('timeout', `did not answer on QMP within ${timeoutMs} ms`)
    let qmp: QmpClient | undefined
    try {
      qmp = await QmpClient.connect(socket, {timeoutMs: left, label: `QEMU pid ${pid}`})
    } catch (err) {
      if (err instanceof QmpTimeoutError) return failed('timeout', `did not answer on QMP within ${timeoutMs} ms`)
      const notYet = err instanceof QmpConnectionError && err.code === 'connect' && (err.errno === 'ENOENT' || err.errno === 'ECONNREFUSED')
      if (!notYet) {
        await sleep(50)
        return failed('exited', exited ? `exited (${exited})` : (err as Error).message)
      }
    }
    if (qmp) {
      try {
        if (o.incoming) await incomingLoaded(qmp, deadline)
      } catch (err) {
        await qmp.close()
        return failed(exited ? 'exited' : 'timeout', (err as Error).message)
      }
      await qmp.close()
      return {pid, start}
    }
    await sleep(wait)
  }
}

/** Waits for `-incoming` to complete (query-migrate: completed); throws when it failed or took too long. */
async function incomingLoaded(qmp: QmpClient, deadline: number): Promise<void> {
  for (;;) {
    const {status} = await qmp.execute<{status?: string}>('query-migrate')
    if (status === 'completed') return
    if (status === 'failed' || status === 'cancelled') throw new Error(`could not load its incoming state (query-migrate: ${status})`)
    if (Date.now() > deadline) throw new Error(`did not load its incoming state in time (query-migrate: ${status ?? 'none'})`)
    await sleep(5)
  }
}
