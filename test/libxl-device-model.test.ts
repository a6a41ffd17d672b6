/**
 * A domain's device model kept by the toolstack as libxl keeps it (real QEMU, Debian's 7.2): `xl-ts
 * create` starts it detached before the guest runs, with its pid in xenstore and its log under log/;
 * `xl-ts save` puts QEMU's own device state (xen-save-devices-state) in EMULATOR_CONTEXT; `xl-ts
 * restore` starts a device model from that state (-incoming) and the guest writes its disk through
 * it again; `xl-ts destroy` ends it and leaves nothing of it.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {resolveDomain} from '../src/toolstack/libxl/index.js'
import {cleanupHost, ensureBuilt, newHost, writeConfig, xl} from './support/cli.js'
import {sim} from './support/migrate.js'
import {inspectRecords} from './support/save-restore.js'

const hosts: string[] = []
beforeAll(ensureBuilt, 120_000)
afterAll(async () => {
  for (const h of hosts.splice(0)) await cleanupHost(h)
})

function alive(pid: number): boolean {
  return fs.existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
}

async function waitGoneOrFail(pid: number): Promise<void> {
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50))
  expect(alive(pid), `QEMU ${pid} is gone`).toBe(false)
}

/** The device model of `name` on `root`: its pid from xenstore, and the guest's disk counters. */
async function deviceModel(root: string, name: string) {
  const hv = sim(root)
  try {
    const domid = await resolveDomain(hv, name)
    const pid = await hv.store.read(`/local/domain/${domid}/image/device-model-pid`)
    return {domid, pid: pid === undefined ? undefined : Number(pid), disk: (await hv.runtime(domid)).disk}
  } finally {
    hv.close()
  }
}

describe('the device model above the port', () => {
  it('create starts it, save keeps its state, restore starts it from that state, destroy ends it', {timeout: 120_000}, async () => {
    const root = newHost('ldm')
    hosts.push(root)
    await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(root, 'disk.raw'), String(4 << 20)])
    const cfg = writeConfig(root, 'vm', {name: 'vm', type: 'hvm', memory: 16, vcpus: 1, sim_dirty_rate: 200, sim_seed: 7, sim_disk_rate: 100})
    fs.appendFileSync(cfg, `disk = [ "format=raw,vdev=hda,access=rw,colo,colo-host=127.0.0.1,colo-port=9,colo-export=e1,active-disk=a.qcow2,hidden-disk=h.qcow2,target=disk.raw" ]\n`)
    const created = await xl(['create', '-q', cfg], {root})
    expect(created.exitCode, created.stderr).toBe(0)

    // It outlives `xl-ts create`, as qemu-dm outlives xl; the guest writes its disk through it.
    const first = await deviceModel(root, 'vm')
    expect(first.pid).toBeGreaterThan(0)
    expect(alive(first.pid!)).toBe(true)
    expect(fs.readFileSync(path.join(root, 'log', 'qemu-dm-vm.log'), 'utf8')).toMatch(/domain \d+: qemu -machine none/)
    for (let i = 0; i < 100 && ((await deviceModel(root, 'vm')).disk?.completed ?? 0) < 20; i++) await new Promise((r) => setTimeout(r, 50))
    expect((await deviceModel(root, 'vm')).disk?.completed).toBeGreaterThanOrEqual(20)

    // Save: QEMU's device state (a QEVM file) is the EMULATOR_CONTEXT; the domain and its QEMU go.
    const file = path.join(root, 'vm.save')
    const saved = await xl(['save', 'vm', file], {root})
    expect(saved.exitCode, saved.stderr).toBe(0)
    await waitGoneOrFail(first.pid!)
    const records = await inspectRecords(file)
    expect(records.filter((r) => r.layer === 'libxl' && r.type !== undefined && r.event === 'record').map((r) => r.type)).toEqual(['LIBXC_CONTEXT', 'EMULATOR_CONTEXT', 'END'])
    const emu = records.find((r) => r.type === 'EMULATOR_CONTEXT')!
    // Record header (8), emulator sub-header (8), then QEMU's file: it starts with "QEVM".
    const blob = fs.readFileSync(file).subarray(emu.offset + 16, emu.offset + 20)
    expect(blob.toString('latin1')).toBe('QEVM')

    // Restore: a new device model, from that state; the guest's disk writes go on through it.
    const restored = await xl(['restore', file], {root})
    expect(restored.exitCode, restored.stderr).toBe(0)
    const second = await deviceModel(root, 'vm')
    expect(second.pid).toBeGreaterThan(0)
    expect(second.pid).not.toBe(first.pid)
    expect(fs.existsSync(path.join(root, 'lib', `qemu-resume.${second.domid}`)), 'the resume file is consumed').toBe(false)
    for (let i = 0; i < 100 && ((await deviceModel(root, 'vm')).disk?.completed ?? 0) < 20; i++) await new Promise((r) => setTimeout(r, 50))
    const after = await deviceModel(root, 'vm')
    expect(after.disk?.completed).toBeGreaterThanOrEqual(20)
    expect(after.disk?.failed).toBe(0)

    // Destroy: QEMU ends, its folder, socket and keys go.
    const destroyed = await xl(['destroy', 'vm'], {root})
    expect(destroyed.exitCode, destroyed.stderr).toBe(0)
    await waitGoneOrFail(second.pid!)
    expect(fs.readdirSync(path.join(root, 'run'))).toEqual([])
    const hv = sim(root)
    try {
      expect(await hv.store.read(`/local/domain/0/device-model/${second.domid}`)).toBeUndefined()
    } finally {
      hv.close()
    }
  })
})
