/**
 * The hypervisor back ends: which one runs and the Hypervisor that implements the port for it.
 * Commands and programs get a Hypervisor from createHypervisor() and never learn which back end
 * they talk to (except `xl-ts sim ...` and tests, which ask for the sim's extras). The same host's
 * network (the host network port: where a guest's output is captured) comes from hostNetworkOf().
 *
 * Back end: `--backend sim|xen`, else XL_TS_BACKEND, else `xen` where /dev/xen/privcmd exists and
 * `sim` elsewhere. Host state folder (sim): `--root`, else XL_TS_ROOT, else /var/lib/xl-ts for root,
 * else $XDG_STATE_HOME/xl-ts or ~/.local/state/xl-ts.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {HypervisorError, type HostNetwork, type Hypervisor} from '../hypervisor/index.js'
import {SimHostNetwork, SimHypervisor} from '../hypervisor/sim/index.js'

export {
  SimHypervisor,
  parseFrame,
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

/**
 * The network of the host `hv` runs: dom0's interfaces, where the toolstack captures a guest's
 * output. The sim's is its host's network folder. Xen's (an AF_PACKET socket on the vif, see
 * ../hypervisor/host-network.ts) comes with the xen back end: until then this says so.
 */
export function hostNetworkOf(hv: Hypervisor): HostNetwork {
  const sim = asSim(hv)
  if (sim) return new SimHostNetwork(sim.layout.netDir)
  throw new HypervisorError('not-supported', `capturing a guest's network output is not supported on the ${hv.backend} back end yet`)
}

/** The sim back end, when `h` is it (what only the factory may know; others use `hv.simulation`). */
function asSim(h: Hypervisor): SimHypervisor | undefined {
  return h instanceof SimHypervisor ? h : undefined
}
