/**
 * One checkpointing session (Remus or COLO) between two simulated hosts, run as an operator runs
 * it: `xl-ts --root PRIMARY remus --json MODE.. -s '' NAME 'XL_TS_ROOT=SECOND xl-ts migrate-receive
 * RECEIVE'`, its numbers read from the NDJSON events on its stdout, stopped with SIGINT.
 */
import {spawn} from 'node:child_process'

import {onNdjson} from './lines.mjs'
import {processesOf, shellQuote as q, sleep} from './processes.mjs'
import {BIN, ENV, NODE} from './sim-hosts.mjs'

/** Checkpoint 1 closes the live round (Remus) or is the full first copy (COLO): steady state from the 2nd. */
export const FIRST_STEADY = 2

/**
 * Starts the session on `hosts` (from createSimHosts), waits for its first checkpoint (60 s at the
 * most), runs `whileRunning` (its value is `during`), stops the session with SIGINT (SIGKILL after
 * 20 s), checks its exit and outcome ("stopped"; anything else is a note), then waits up to 5 s for
 * the second host to have neither domains nor processes (what it still has is `left`, for the
 * caller to report). Throws if the session exited before its first checkpoint or never made one.
 *
 * mode: the remus options (['-i', '100'] or ['-c', '-p', '--max-interval', '100']); receive: the
 * migrate-receive option ('-r' or '--colo'); what: how the notes name the session; stepRate: the
 * guest's steps/s, for its stalls; onNotJson(line): for a stdout line that is not JSON (default:
 * a note).
 *
 * Returns the events, the checkpoints and the steady ones (FIRST_STEADY on), their span (ms from
 * the first steady checkpoint to the last), rate (steady checkpoints/s), stalls (per steady
 * checkpoint period, the time the guest did not run: the period minus the steps it made over its
 * step rate), firstMs (start to first checkpoint), stopMs (SIGINT to exit), the result event,
 * during and left ({domains, processes}).
 */
export async function runCheckpointSession(hosts, {primary, second, name, mode, receive, what, stepRate, whileRunning, onNotJson}) {
  if (hosts.interrupted) throw new Error('interrupted')
  const rune = `XL_TS_ROOT=${q(second)} exec ${q(NODE)} ${q(BIN)} migrate-receive ${receive}`
  const args = [BIN, '--root', primary, 'remus', '--json', ...mode, '-s', '', name, rune]
  const t0 = performance.now()
  const child = spawn(NODE, args, {env: ENV, stdio: ['ignore', 'pipe', 'pipe']})
  hosts.sessions.add(child)
  const events = []
  let err = ''
  let firstAt
  let onFirst
  const first = new Promise((resolve) => (onFirst = resolve))
  onNdjson(
    child.stdout,
    (e) => {
      events.push(e)
      if (e.event === 'checkpoint' && firstAt === undefined) {
        firstAt = performance.now()
        onFirst()
      }
    },
    onNotJson ?? ((text) => hosts.note(`${what}: not JSON on stdout: ${text}`)),
  )
  child.stderr.on('data', (d) => (err += d))
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({code, signal})))

  // Unref'd: a race this lost must not keep the bench alive.
  const timeout = (ms, why) => new Promise((r) => setTimeout(() => r({timeout: why}), ms).unref())
  const started = await Promise.race([first.then(() => ({})), exited.then((x) => ({exitedEarly: x})), timeout(60000, 'first checkpoint')])
  let during
  if (!started.exitedEarly && !started.timeout) during = await whileRunning()
  const stopAt = performance.now()
  if (child.exitCode === null) child.kill('SIGINT')
  const end = await Promise.race([exited, timeout(20000, 'exit after SIGINT')])
  if (end.timeout) {
    hosts.note(`${what}: still running 20 s after SIGINT; killed. stderr:\n${err}`)
    child.kill('SIGKILL')
    await exited
  }
  hosts.sessions.delete(child)
  const stopMs = performance.now() - stopAt
  const result = events.find((e) => e.event === 'result')
  if (started.exitedEarly) throw new Error(`${what} exited before its first checkpoint (${JSON.stringify(started.exitedEarly)}):\n${err}`)
  if (started.timeout) throw new Error(`${what}: no checkpoint within 60 s:\n${err}`)
  if (!end.timeout && (end.code !== 0 || result?.outcome !== 'stopped')) {
    hosts.note(`${what}: exit ${end.code ?? end.signal}, result ${JSON.stringify(result)}; stderr:\n${err.trim()}`)
  }
  // The second host (backup, secondary) discards its copy and its receiver exits.
  const until = performance.now() + 5000
  while ((hosts.domainIds(second).length || processesOf([second]).length) && performance.now() < until) await sleep(100)
  const left = {domains: hosts.domainIds(second), processes: processesOf([second])}

  const checkpoints = events.filter((e) => e.event === 'checkpoint')
  const steady = checkpoints.filter((e) => e.number >= FIRST_STEADY)
  const span = steady.length > 1 ? steady.at(-1).atMs - steady[0].atMs : NaN
  return {
    events,
    checkpoints,
    steady,
    span,
    rate: ((steady.length - 1) * 1000) / span,
    stalls: steady.slice(1).map((c, i) => c.atMs - steady[i].atMs - ((c.step - steady[i].step) * 1000) / stepRate),
    firstMs: firstAt - t0,
    stopMs,
    result,
    during,
    left,
  }
}
