/**
 * COLO's proxy choice (src/toolstack/colo/kernel-proxy.ts): -p is the userspace proxy; without it,
 * where the kernel proxy (xt_PMYCOLO) is missing, the userspace proxy too with one line saying so;
 * where it is loaded, a refusal that says to give -p. The probe is pointed at files of the test's
 * own, so the loaded case is tested on a kernel without the module. (The CLI run without -p:
 * colo.test.ts.)
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {afterAll, describe, expect, it} from 'vitest'

import {chooseColoProxy, probeKernelColoProxy, type KernelProxyProbe} from '../src/toolstack/colo/index.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-kproxy-'))
afterAll(() => fs.rmSync(dir, {recursive: true, force: true}))

const missing: KernelProxyProbe = {available: false, reason: 'the kernel COLO proxy is not available on this kernel (xt_PMYCOLO)'}
const loaded: KernelProxyProbe = {available: true, reason: 'xt_PMYCOLO is loaded'}

describe('COLO proxy choice', () => {
  it('finds the module by its sysfs folder or its iptables target, and not otherwise', () => {
    const targets = path.join(dir, 'ip_tables_targets')
    const module = path.join(dir, 'xt_PMYCOLO')
    fs.writeFileSync(targets, 'MARK\nCONNMARK\n')
    expect(probeKernelColoProxy({module, targets})).toEqual(missing)
    expect(probeKernelColoProxy({module, targets: path.join(dir, 'none')})).toEqual(missing)
    fs.writeFileSync(targets, 'MARK\nPMYCOLO\n')
    expect(probeKernelColoProxy({module, targets}).available).toBe(true)
    fs.writeFileSync(targets, '')
    fs.mkdirSync(module)
    expect(probeKernelColoProxy({module, targets})).toEqual(loaded)
  })

  it('-p: the userspace proxy, nothing to say, the kernel not even looked at', () => {
    expect(chooseColoProxy(true, () => expect.unreachable('probed'))).toEqual({proxy: 'userspace'})
  })

  it('no -p, no kernel proxy: the userspace proxy and the one line', () => {
    expect(chooseColoProxy(false, () => missing)).toEqual({
      proxy: 'userspace',
      notice: 'COLO: the kernel COLO proxy is not available on this kernel (xt_PMYCOLO); using the userspace proxy (QEMU colo-compare)',
    })
  })

  it('no -p, the kernel proxy loaded: refused, saying -p', () => {
    const c = chooseColoProxy(false, () => loaded)
    expect(c.proxy).toBe('none')
    expect(c.proxy === 'none' && c.reason).toBe(
      'the kernel COLO proxy is there (xt_PMYCOLO is loaded) but xl-ts does not drive it; give -p to use the userspace proxy (QEMU colo-compare)',
    )
  })
})
