/**
 * The environment the save/restore helper runs in. Our helper picks its host from XL_TS_BACKEND
 * and XL_TS_ROOT (it inherits them, as libxl-save-helper inherits libxl's environment), so they
 * must name the host the toolstack is working on, whatever flags chose it.
 */
import type {Hypervisor} from '../hypervisor/index.js'

export function helperEnv(hypervisor: Hypervisor, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return {...base, XL_TS_BACKEND: hypervisor.backend, ...hypervisor.connectionEnv()}
}

/**
 * The stream offset at which the helper's part of the stream (the libxc image header) starts,
 * decimal. Our helper counts its offsets from there, so the records its errors name carry offsets
 * in the whole stream (file offsets for a savefile), on a pipe as well. Xen's helper ignores it.
 */
export const STREAM_OFFSET_ENV = 'XL_TS_STREAM_OFFSET'
