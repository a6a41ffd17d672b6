/**
 * COLO's kernel proxy (libxl's default when xl remus -c is given no -p): a netlink family (28,
 * NETLINK_COLO) and the iptables targets PMYCOLO / SECCOLO of out-of-tree modules (xt_PMYCOLO,
 * xt_SECCOLO), XEN-FACTS §9.1, §9.5. This kernel side was never merged into Linux: on these kernels
 * it is not there, and xl-ts says so instead of pretending; QEMU's colo-compare (-p) is the proxy.
 */
import * as fs from 'node:fs'

export interface KernelProxyProbe {
  readonly available: boolean
  readonly reason: string
}

/** Looks for the kernel proxy's modules (loaded modules and registered iptables targets). */
export function probeKernelColoProxy(): KernelProxyProbe {
  const targets = (readText('/proc/net/ip_tables_targets') ?? '').split('\n').map((l) => l.trim())
  const module = fs.existsSync('/sys/module/xt_PMYCOLO')
  if (module || targets.includes('PMYCOLO')) return {available: true, reason: 'xt_PMYCOLO is loaded'}
  return {
    available: false,
    reason: 'the kernel COLO proxy (netlink 28, xt_PMYCOLO) is not available on this kernel (it is not part of Linux); use -p for the userspace proxy (QEMU colo-compare)',
  }
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}
