/**
 * The environment the save/restore helper runs in. Our helper picks its host from XL_TS_BACKEND
 * and XL_TS_ROOT (it inherits them, as libxl-save-helper inherits libxl's environment), so they
 * must name the host the toolstack is working on, whatever flags chose it.
 */
import type {Hypervisor} from '../hypervisor/index.js'

export function helperEnv(hypervisor: Hypervisor, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return {...base, XL_TS_BACKEND: hypervisor.backend, ...hypervisor.connectionEnv()}
}
