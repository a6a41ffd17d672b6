/**
 * Real configs, as an operator writes them, to the domain config JSON: our own write-ups of Xen's
 * example configs (same settings) and a COLO guest with replicated disk, COLO proxy vif and
 * simulator settings; plus the defaults and overrides of `xl create vm.cfg key=value`.
 */
import {readFileSync} from 'node:fs'
import {describe, expect, it} from 'vitest'
import {
  ConfigError,
  VIF_COLO_KEYS,
  formatWarning,
  parseXlConfig,
  toDomainConfig,
  type ConfigWarning,
  type DomainConfig,
} from '../src/toolstack/config/index.js'

const FIXTURES = new URL('./fixtures/config/', import.meta.url)
const UUID = '11111111-2222-3333-4444-555555555555'

function load(name: string, overrides: string[] = [], warnings?: ConfigWarning[]): DomainConfig {
  const text = readFileSync(new URL(name, FIXTURES), 'utf8')
  return toDomainConfig(parseXlConfig(text, {file: name}), overrides, {uuid: () => UUID, warnings})
}

function build(text: string, overrides: string[] = []): DomainConfig {
  return toDomainConfig(parseXlConfig(text, {file: 'vm.cfg'}), overrides, {uuid: () => UUID})
}

const DEFAULT_ACTIONS = {
  on_poweroff: 'destroy',
  on_reboot: 'restart',
  on_watchdog: 'destroy',
  on_crash: 'destroy',
  on_soft_reset: 'soft_reset',
} as const

const VOLUME = {pdev_path: '/dev/vg/guest-volume', vdev: 'xvda', format: 'raw', readwrite: 1}

describe("Xen's example configs", () => {
  it('xlexample.hvm', () => {
    expect(load('xlexample.hvm')).toEqual({
      c_info: {type: 'hvm', name: 'example.hvm', uuid: UUID},
      b_info: {max_vcpus: 2, avail_vcpus: [0, 1], max_memkb: 131072, target_memkb: 131072, 'type.hvm': {}},
      disks: [VOLUME],
      nics: [{devid: 0}],
      ...DEFAULT_ACTIONS,
      sim: {},
    })
  })

  it('xlexample.pvlinux', () => {
    expect(load('xlexample.pvlinux')).toEqual({
      c_info: {type: 'pv', name: 'example.pvlinux', uuid: UUID},
      b_info: {
        max_vcpus: 2,
        avail_vcpus: [0, 1],
        max_memkb: 131072,
        target_memkb: 131072,
        kernel: '/boot/vmlinuz',
        cmdline: 'root=/dev/xvda1',
        'type.pv': {},
      },
      disks: [VOLUME],
      nics: [{devid: 0}],
      ...DEFAULT_ACTIONS,
      sim: {},
    })
  })

  it('xlexample.pvhlinux', () => {
    expect(load('xlexample.pvhlinux')).toEqual({
      c_info: {type: 'pvh', name: 'example.pvhlinux', uuid: UUID},
      b_info: {
        max_vcpus: 4,
        avail_vcpus: [0, 1, 2, 3],
        max_memkb: 524288,
        target_memkb: 524288,
        kernel: '/boot/vmlinuz',
        cmdline: 'root=/dev/xvda1',
        'type.pvh': {},
      },
      disks: [{...VOLUME, pdev_path: '/dev/zvol/tank/guest-volume'}],
      nics: [{devid: 0}],
      ...DEFAULT_ACTIONS,
      sim: {},
    })
  })

  it('keeps every setting, also those the domain config does not use', () => {
    const cfg = parseXlConfig(readFileSync(new URL('xlexample.hvm', FIXTURES), 'utf8'), {file: 'xlexample.hvm'})
    expect([...cfg.settings.keys()]).toEqual(['type', 'name', 'memory', 'vcpus', 'vif', 'disk', 'sdl'])
    expect(cfg.settings.get('sdl')).toMatchObject({pos: {line: 37, column: 1}, value: {kind: 'number', text: '1', value: 1}})
    expect(cfg.warnings).toEqual([])
  })
})

describe('a COLO guest', () => {
  const text = readFileSync(new URL('colo.cfg', FIXTURES), 'utf8')
  const warnings: ConfigWarning[] = []
  const config = load('colo.cfg', [], warnings)

  it('has its identity, memory, vcpus and actions', () => {
    expect(config.c_info).toEqual({type: 'hvm', name: 'colo-guest', uuid: '5f2c8a5e-3b7d-4c1e-9a6f-0d2b4e6f8a10'})
    expect(config.b_info).toEqual({max_vcpus: 2, avail_vcpus: [0, 1], max_memkb: 1048576, target_memkb: 1048576, 'type.hvm': {}})
    expect(config.on_crash).toBe('preserve')
    expect(warnings).toEqual([])
  })

  it('has a replicated disk', () => {
    expect(config.disks).toEqual([
      {
        pdev_path: '/var/lib/xen/images/guest.img',
        vdev: 'hda',
        format: 'raw',
        readwrite: 1,
        colo_enable: 'True',
        colo_host: '192.168.1.2',
        colo_port: 9000,
        colo_export: 'qdisk1',
        active_disk: '/mnt/ramfs/active_disk.img',
        hidden_disk: '/mnt/ramfs/hidden_disk.img',
      },
    ])
  })

  it('has a vif with forwarddev and the colo_* keys of both sides', () => {
    const [nic] = config.nics
    expect(nic).toMatchObject({
      devid: 0,
      mac: '00:16:3e:0c:01:01',
      bridge: 'xenbr0',
      model: 'e1000',
      nictype: 'vif_ioemu',
      coloft_forwarddev: 'eth1',
      colo_sock_mirror_id: 'mirror0',
      colo_sock_mirror_port: '9003',
      colo_compare_notify_dev: 'notify0',
      colo_filter_sec_rewriter0_queue: 'all',
      colo_checkpoint_host: '192.168.1.2',
      colo_checkpoint_port: '9010',
    })
    // libxl's device model code reads an indev for redirector 0 and an outdev for redirector 1 only
    const unused = new Set([
      'colo_filter_redirector0_outdev',
      'colo_filter_redirector1_indev',
      'colo_filter_sec_redirector0_outdev',
      'colo_filter_sec_redirector1_indev',
    ])
    for (const k of VIF_COLO_KEYS) expect(nic?.[k] === undefined, k).toBe(unused.has(k))
  })

  it('keeps the simulator settings', () => {
    expect(config.sim).toEqual({
      sim_dirty_rate: 2000,
      sim_working_set: 256,
      sim_seed: 0x5eed,
      sim_nondeterminism: 0.01,
      sim_packet_rate: 100,
    })
  })

  it('is JSON as libxl writes it', () => {
    expect(JSON.parse(JSON.stringify(config))).toEqual(config)
  })

  it('points at the colo-port inside the disk string when it is wrong', () => {
    const bad = text.replace('colo-port=9000', 'colo-port=90o0')
    const line = bad.split('\n').findIndex(l => l.startsWith('disk')) + 1
    const column = (bad.split('\n')[line - 1] ?? '').indexOf('90o0') + 1
    let err: unknown
    try {
      toDomainConfig(parseXlConfig(bad, {file: 'colo.cfg'}), [], {uuid: () => UUID})
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as ConfigError).message.startsWith(`colo.cfg:${line}:${column}: unknown value for colo_port: '90o0'`)).toBe(true)
  })
})

describe('defaults and overrides', () => {
  it('uses libxl and xl defaults: PV, 32 MiB, 1 vcpu', () => {
    expect(build('name = "tiny"\n')).toMatchObject({
      c_info: {type: 'pv', name: 'tiny'},
      b_info: {max_vcpus: 1, avail_vcpus: [0], max_memkb: 32768, target_memkb: 32768},
      disks: [],
      nics: [],
    })
  })

  it('takes maxmem and maxvcpus as ceilings', () => {
    expect(build('name = "b"\nmemory = 512\nmaxmem = 2048\nvcpus = 2\nmaxvcpus = 8\n').b_info).toMatchObject({
      max_memkb: 2 * 1024 * 1024,
      target_memkb: 512 * 1024,
      max_vcpus: 8,
      avail_vcpus: [0, 1],
    })
    expect(build('name = "b"\nmaxmem = 256\n').b_info).toMatchObject({max_memkb: 262144, target_memkb: 262144})
  })

  it('accepts the deprecated builder and prefixes of type names, as xl does', () => {
    expect(build('name = "a"\nbuilder = "hvm"\n').c_info.type).toBe('hvm')
    expect(build('name = "a"\nbuilder = "generic"\n').c_info.type).toBe('pv')
    expect(build('name = "a"\ntype = "pv"\nbuilder = "generic"\n').c_info.type).toBe('pv')
    expect(build('name = "a"\ntype = "h"\n').c_info.type).toBe('hvm')
  })

  it('makes the kernel command line from cmdline, or root and extra', () => {
    expect(build('name = "a"\nroot = "/dev/xvda1"\nextra = "quiet"\n').b_info.cmdline).toBe('root=/dev/xvda1 quiet')
    expect(build('name = "a"\nroot = "/dev/xvda1"\n').b_info.cmdline).toBe('root=/dev/xvda1')
    const warnings: ConfigWarning[] = []
    const cfg = toDomainConfig(parseXlConfig('name = "a"\ncmdline = "ro"\nextra = "quiet"\n', {file: 'vm.cfg'}), [], {uuid: () => UUID, warnings})
    expect(cfg.b_info.cmdline).toBe('ro')
    expect(warnings.map(formatWarning)).toEqual(['vm.cfg:2:11: warning: ignoring root= and extra= in favour of cmdline='])
  })

  it('applies `key=value` overrides after the file, += included', () => {
    const text = readFileSync(new URL('xlexample.pvlinux', FIXTURES), 'utf8')
    const cfg = toDomainConfig(
      parseXlConfig(text, {file: 'xlexample.pvlinux'}),
      ['memory=1024', 'name="renamed"', 'extra+=" quiet"', "disk+=['/img/b.img,qcow2,xvdb,r']", 'sim_seed=42'],
      {uuid: () => UUID},
    )
    expect(cfg.c_info.name).toBe('renamed')
    expect(cfg.b_info).toMatchObject({max_memkb: 1048576, target_memkb: 1048576, cmdline: 'root=/dev/xvda1 quiet'})
    expect(cfg.disks).toEqual([VOLUME, {pdev_path: '/img/b.img', vdev: 'xvdb', format: 'qcow2'}])
    expect(cfg.sim).toEqual({sim_seed: 42})
  })

  it('names the override at fault by its position on the command line', () => {
    let err: unknown
    try {
      build('name = "a"\n', ['memory=1024', 'vcpus=two'])
    } catch (e) {
      err = e
    }
    expect((err as ConfigError).message).toBe("command line:2:7: expected a value after '=': 'two' is not quoted (text values need quotes)")
  })
})
