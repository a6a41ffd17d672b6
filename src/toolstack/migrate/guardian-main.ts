/**
 * The guardian of one side of a migration: a small process, in its own session, that outlives
 * `migrate` or `migrate-receive` if that dies (SIGKILL, a hangup taking its process group) and
 * finishes what it left, so that the domain keeps running on exactly one host:
 *
 *   receiver <incoming name> <final name> <leave paused: 0|1>
 *     C <domid>   the domain is built                 -> if I die: destroy it
 *     G           GO received: the domain is ours     -> if I die: rename it to its name, unpause
 *     A           the start failed, I destroy it      -> if I die: destroy it
 *
 *   sender <domid> <name> <away name>
 *     H <pid>     the save helper runs                -> if I die: kill it
 *     G           GO is about to be written           -> if I die: do nothing (xl's failed_badly:
 *                                                        the copy stays `--migratedaway`, suspended)
 *     (before G)                                      -> if I die: kill the helper, log-dirty off,
 *                                                        rename back, resume a suspended guest
 *
 *   both: D = done, nothing more to do, exit.
 *
 * The lines come on stdin (a pipe from the side it guards); end of file without D means that side
 * died. The host is the one XL_TS_BACKEND / XL_TS_ROOT name, as for the helper. What it does is said
 * on stderr.
 */
import {createHypervisor, HypervisorError, type Hypervisor} from '../hypervisor/index.js'

const SHUTDOWN_SUSPEND = 2

const [role = '', ...args] = process.argv.slice(2)

let domid: number | undefined
let helperPid: number | undefined
let go = false
let done = false
let buffered = ''

function say(line: string): void {
  try {
    process.stderr.write(`migration ${role === 'sender' ? 'sender' : 'target'} (guardian): ${line}\n`)
  } catch {
    // nobody is listening any more
  }
}

function take(line: string): void {
  const [cmd, arg] = line.trim().split(/\s+/)
  if (cmd === 'C' && arg !== undefined) domid = Number(arg)
  else if (cmd === 'H' && arg !== undefined) helperPid = Number(arg)
  else if (cmd === 'G') go = true
  else if (cmd === 'A') go = false
  else if (cmd === 'D') done = true
}

async function infoOrUndefined(hv: Hypervisor, id: number) {
  try {
    return await hv.info(id)
  } catch (err) {
    if (err instanceof HypervisorError && err.code === 'no-such-domain') return undefined
    throw err
  }
}

/** The receiver died: destroy the half-received domain, or start it if GO had come. */
async function finishReceiver(hv: Hypervisor): Promise<void> {
  const [incoming = '', finalName = '', pausedArg = '0'] = args
  let id = domid
  if (id === undefined) {
    try {
      id = await hv.resolve(incoming)
    } catch {
      return
    }
  }
  const info = await infoOrUndefined(hv, id)
  // A domid reused since, or a domain renamed by someone else: not ours.
  if (!info || (info.name !== incoming && !(go && info.name === finalName))) return
  if (go) {
    if (info.name === incoming) await hv.rename(id, finalName)
    if (pausedArg !== '1' && info.state.paused) await hv.unpause(id)
    say(`the receiver died after GO; started domain ${finalName} (domid ${id})${pausedArg === '1' ? ', left paused' : ''}`)
  } else {
    await hv.destroy(id)
    say(`the receiver died before GO; destroyed domain ${incoming} (domid ${id})`)
  }
}

/** The sender died before GO: the domain must run here again. */
async function finishSender(hv: Hypervisor): Promise<void> {
  const [domidArg = '', name = '', away = ''] = args
  if (go) return
  if (helperPid !== undefined) {
    try {
      process.kill(helperPid, 'SIGKILL')
    } catch {
      // gone
    }
  }
  const id = Number(domidArg)
  const info = await infoOrUndefined(hv, id)
  if (!info || (info.name !== name && info.name !== away)) return
  if (info.name === away) await hv.rename(id, name)
  await hv
    .logDirty(id)
    .disable()
    .catch(() => undefined)
  if (info.state.shutdown && info.state.shutdownReason === SHUTDOWN_SUSPEND) {
    await hv.resume(id, {cancel: true})
    say(`the sender died before GO; resumed domain ${name} (domid ${id})`)
  }
}

async function finish(): Promise<void> {
  if (done) return
  const hv = createHypervisor()
  try {
    if (role === 'receiver') await finishReceiver(hv)
    else if (role === 'sender') await finishSender(hv)
  } finally {
    ;(hv as {close?: () => void}).close?.()
  }
}

process.stdin.setEncoding('latin1')
process.stdin.on('data', (chunk: string) => {
  buffered += chunk
  let nl: number
  while ((nl = buffered.indexOf('\n')) >= 0) {
    take(buffered.slice(0, nl))
    buffered = buffered.slice(nl + 1)
  }
})
process.stdin.on('end', () => {
  finish().then(
    () => process.exit(0),
    (err: unknown) => {
      say(`cannot finish the migration's work: ${err instanceof Error ? err.message : String(err)}`)
      process.exit(1)
    },
  )
})
// A hangup or an interrupt of the guarded side's process group must not take us with it.
process.on('SIGHUP', () => {})
process.on('SIGINT', () => {})
