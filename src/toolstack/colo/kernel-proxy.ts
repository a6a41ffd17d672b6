/**
 * COLO's kernel proxy (libxl's default when xl remus -c is given no -p): a netlink family (28,
 * NETLINK_COLO) and the iptables targets PMYCOLO / SECCOLO of out-of-tree modules (xt_PMYCOLO,
 * xt_SECCOLO), XEN-FACTS §9.1, §9.5. This kernel side was never merged into Linux: on these kernels
 * it is not there. xl would stop there; xl-ts uses the userspace proxy (QEMU colo-compare, -p)
 * instead and says so in one line. Where the modules are loaded xl-ts refuses rather than falls
 * back: the operator set the host up for the kernel proxy, which xl-ts does not drive.
 */
import * as fs from 'node:fs'

export interface KernelProxyProbe {
  readonly available: boolean
  readonly reason: string
}

/** Where the probe looks (tests point it at files of their own). */
export interface KernelProxyPaths {
  /** The module's sysfs folder: there while it is loaded. */
  readonly module: string
  /** The registered iptables targets, one a line. */
  readonly targets: string
}

const KERNEL_PATHS: KernelProxyPaths = {module: '/sys/module/xt_PMYCOLO', targets: '/proc/net/ip_tables_targets'}

/** Looks for the kernel proxy's modules (loaded modules and registered iptables targets). */
export function probeKernelColoProxy(paths: KernelProxyPaths = KERNEL_PATHS): KernelProxyProbe {
  const targets = (readText(paths.targets) ?? '').split('\n').map((l) => l.trim())
  if (fs.existsSync(paths.module) || targets.includes('PMYCOLO')) return {available: true, reason: 'xt_PMYCOLO is loaded'}
  return {available: false, reason: 'the kernel COLO proxy is not available on this kernel (xt_PMYCOLO)'}
}

/** The proxy a COLO run uses: the userspace one (with a line to say why, when not asked for), or none. */
export type ColoProxyChoice = {readonly proxy: 'userspace'; readonly notice?: string} | {readonly proxy: 'none'; readonly reason: string}

/**
 * xl's choice (remus -c: the kernel proxy unless -p), made where xl-ts can run it: -p is the
 * userspace proxy; without -p, where the kernel proxy is missing (every mainline kernel), the
 * userspace proxy too, with the one line `notice` to print; where it is loaded, none: xl would
 * drive it and xl-ts cannot, so `reason` says so and what to do.
 */
export function chooseColoProxy(userspaceAsked: boolean, probe: () => KernelProxyProbe = probeKernelColoProxy): ColoProxyChoice {
  if (userspaceAsked) return {proxy: 'userspace'}
  const kernel = probe()
  if (kernel.available) {
    return {proxy: 'none', reason: `the kernel COLO proxy is there (${kernel.reason}) but xl-ts does not drive it; give -p to use the userspace proxy (QEMU colo-compare)`}
  }
  return {proxy: 'userspace', notice: `COLO: ${kernel.reason}; using the userspace proxy (QEMU colo-compare)`}
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}
