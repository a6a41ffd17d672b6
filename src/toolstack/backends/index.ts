/**
 * The hypervisor back ends: which one runs and the Hypervisor that implements the port for it.
 * Commands and programs get a Hypervisor from createHypervisor() and never learn which back end
 * they talk to (except `xl-ts sim ...` and tests, which ask for the sim's extras).
 *
 * Back end: `--backend sim|xen`, else XL_TS_BACKEND, else `xen` where /dev/xen/privcmd exists and
 * `sim` elsewhere. Host state folder (sim): `--root`, else XL_TS_ROOT, else /var/lib/xl-ts for root,
 * else $XDG_STATE_HOME/xl-ts or ~/.local/state/xl-ts.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {HypervisorError, type Hypervisor} from '../hypervisor/index.js'
import {SimHypervisor} from '../hypervisor/sim/index.js'

export {
  SimHypervisor,
  parseFrame,
  type IntegrityProblem,
  type IntegrityReport,
  type LogDirtyRound,
  type ParsedFrame,
  type SimRuntime,
} from '../hypervisor/sim/index.js'

export type BackendName = 'sim' | 'xen'
export const BACKENDS: readonly BackendName[] = ['sim', 'xen']
export const PRIVCMD = '/dev/xen/privcmd'

type Env = Record<string, string | undefined>

/** The back end to use: the flag, else XL_TS_BACKEND, else xen where /dev/xen/privcmd exists, else sim. */
export function resolveBackend(flag?: string, env: Env = process.env): BackendName {
  const chosen = flag || env.XL_TS_BACKEND || undefined
  if (chosen === undefined) return fs.existsSync(PRIVCMD) ? 'xen' : 'sim'
  if (chosen === 'sim' || chosen === 'xen') return chosen
  const from = flag ? '--backend' : 'XL_TS_BACKEND'
  throw new HypervisorError('bad-request', `unknown hypervisor back end "${chosen}" (${from}): use sim or xen`)
}

/** The simulated host's state folder (absolute): the flag, else XL_TS_ROOT, else the default for this user. */
export function resolveRoot(flag?: string, env: Env = process.env): string {
  const chosen = flag || env.XL_TS_ROOT
  if (chosen) return path.resolve(chosen)
  if (process.getuid?.() === 0) return '/var/lib/xl-ts'
  const state = env.XDG_STATE_HOME && path.isAbsolute(env.XDG_STATE_HOME) ? env.XDG_STATE_HOME : path.join(env.HOME || os.homedir(), '.local', 'state')
  return path.join(state, 'xl-ts')
}

export interface CreateHypervisorOptions {
  backend?: string
  root?: string
  env?: Env
}

/** The Hypervisor of the chosen back end and host. The sim back end creates its state folder (0700). */
export function createHypervisor(opts: CreateHypervisorOptions = {}): Hypervisor {
  const env = opts.env ?? process.env
  const backend = resolveBackend(opts.backend, env)
  if (backend === 'xen') {
    throw new HypervisorError('not-supported', 'the xen back end is not supported yet: use --backend sim (or XL_TS_BACKEND=sim)')
  }
  return new SimHypervisor(resolveRoot(opts.root, env))
}

/** The sim back end's extras (checksum, integrity, write log), when `h` is the sim. */
export function asSim(h: Hypervisor): SimHypervisor | undefined {
  return h instanceof SimHypervisor ? h : undefined
}
