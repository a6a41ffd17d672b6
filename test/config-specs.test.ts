/**
 * Disk and vif spec strings. The disk cases are the equivalences xl-disk-configuration(5) promises
 * and the split rules of xl's scanner (checked against xl's own scanner while writing them); the vif
 * cases cover every key xl knows, all the COLO ones included, and unknown keys as warnings.
 */
import {describe, expect, it} from 'vitest'
import {
  ConfigError,
  parseDiskSpec,
  parseVifRate,
  parseVifSpec,
  parseXlConfig,
  VIF_COLO_KEYS,
  type ConfigWarning,
  type DiskSpec,
} from '../src/toolstack/config/index.js'

/** The fields a spec sets, without the spec text. */
function fields(d: DiskSpec): Omit<DiskSpec, 'spec'> {
  const {spec: _spec, ...rest} = d
  return rest
}

function diskError(spec: string): ConfigError {
  try {
    parseDiskSpec(spec)
  } catch (e) {
    if (e instanceof ConfigError) return e
    throw e
  }
  throw new Error(`expected ${spec} to fail`)
}

const BASE = {backend: 'unknown', removable: 0, is_cdrom: 0, direct_io_safe: false, specification: 'unknown'} as const

describe('disk specs', () => {
  it('reads the equivalent forms of xl-disk-configuration(5)', () => {
    const volume = {...BASE, pdev_path: '/dev/vg/guest-volume', vdev: 'hda', format: 'raw', readwrite: 1}
    for (const spec of [
      '/dev/vg/guest-volume,,hda',
      '/dev/vg/guest-volume,raw,hda,rw',
      'format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume',
      'raw:/dev/vg/guest-volume,hda,w',
    ]) {
      expect(fields(parseDiskSpec(spec)), spec).toEqual(volume)
    }
    const iso = {...BASE, pdev_path: '/root/image.iso', vdev: 'hdc', format: 'raw', readwrite: 0, is_cdrom: 1, removable: 1}
    for (const spec of [
      '/root/image.iso,,hdc,cdrom',
      '/root/image.iso,,hdc,,cdrom',
      '/root/image.iso,raw,hdc,devtype=cdrom',
      'format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso',
      'raw:/root/image.iso,hdc:cdrom,ro',
    ]) {
      expect(fields(parseDiskSpec(spec)), spec).toEqual(iso)
    }
  })

  it('reads the old prefixes: phy:, tap:aio:, file:, script prefixes', () => {
    expect(parseDiskSpec('phy:/dev/vg/x,xvda,w')).toMatchObject({pdev_path: '/dev/vg/x', vdev: 'xvda', format: 'raw', readwrite: 1})
    expect(parseDiskSpec('tap:aio:/img/x.img,xvdb,r')).toMatchObject({pdev_path: '/img/x.img', vdev: 'xvdb', readwrite: 0})
    expect(parseDiskSpec('file:/img/x.img,ioemu:hda,w')).toMatchObject({pdev_path: '/img/x.img', vdev: 'hda'})
    expect(parseDiskSpec('tap:qcow2:/img/x.qcow2,xvda,w')).toMatchObject({pdev_path: '/img/x.qcow2', format: 'qcow2'})
    expect(parseDiskSpec('drbd:resource0,xvda,w')).toMatchObject({pdev_path: 'resource0', script: 'block-drbd'})
    expect(parseDiskSpec('iscsi:iqn.2001-05.com.example:disk,xvda,w')).toMatchObject({
      pdev_path: 'iqn.2001-05.com.example:disk',
      script: 'block-iscsi',
    })
  })

  it('reads an empty cdrom drive', () => {
    expect(fields(parseDiskSpec(',hdc:cdrom,r'))).toEqual({
      ...BASE,
      pdev_path: '',
      vdev: 'hdc',
      format: 'empty',
      readwrite: 0,
      is_cdrom: 1,
      removable: 1,
    })
    expect(parseDiskSpec('vdev=hdc,devtype=cdrom')).toMatchObject({format: 'empty', removable: 1})
  })

  it('reads every key and flag', () => {
    const d = parseDiskSpec(
      'backend=drv1,backendtype=qdisk,specification=xen,script=block-nbd,direct-io-safe,no-discard,untrusted,grant_usage=0,format=qcow2,vdev=xvdc,access=ro,target=nbd:host:10809',
    )
    expect(fields(d)).toEqual({
      backend_domname: 'drv1',
      backend: 'qdisk',
      specification: 'xen',
      script: 'block-nbd',
      direct_io_safe: true,
      discard_enable: false,
      trusted: false,
      grant_usage: false,
      format: 'qcow2',
      vdev: 'xvdc',
      readwrite: 0,
      is_cdrom: 0,
      removable: 0,
      pdev_path: 'nbd:host:10809',
    })
    expect(parseDiskSpec('/x,,xvda,discard,trusted,grant_usage=1,specification=virtio,backendtype=standalone')).toMatchObject({
      discard_enable: true,
      trusted: true,
      grant_usage: true,
      specification: 'virtio',
      backend: 'standalone',
    })
  })

  it('reads the COLO keys', () => {
    const d = parseDiskSpec(
      'format=raw,vdev=hda,access=w,colo,colo-host=192.168.1.2,colo-port=9000,colo-export=qdisk1,active-disk=/mnt/ramfs/active_disk.img,hidden-disk=/mnt/ramfs/hidden_disk.img,target=/var/lib/xen/images/guest.img',
    )
    expect(fields(d)).toEqual({
      ...BASE,
      format: 'raw',
      vdev: 'hda',
      readwrite: 1,
      colo_enable: true,
      colo_host: '192.168.1.2',
      colo_port: 9000,
      colo_export: 'qdisk1',
      active_disk: '/mnt/ramfs/active_disk.img',
      hidden_disk: '/mnt/ramfs/hidden_disk.img',
      pdev_path: '/var/lib/xen/images/guest.img',
    })
    expect(parseDiskSpec('/x,,xvda,no-colo').colo_enable).toBe(false)
  })

  it('warns when colo is set without the keys COLO needs', () => {
    const warnings: ConfigWarning[] = []
    parseDiskSpec('/img,raw,hda,colo,colo-host=10.0.0.2', {warnings})
    expect(warnings.map(w => `${w.line}:${w.column}: ${w.message}`)).toEqual([
      "1:1: colo is set but colo-port, colo-export, active-disk, hidden-disk are missing: COLO will not replicate this disk (disk spec '/img,raw,hda,colo,colo-host=10.0.0.2')",
    ])
  })

  it('splits as xl does: longest match, flags before positional words', () => {
    // a word that starts like a flag is a positional parameter
    const colocated = parseDiskSpec('/x,raw,colocated')
    expect(colocated.vdev).toBe('colocated')
    expect(colocated.colo_enable).toBeUndefined()
    // target= takes commas; a trailing comma is dropped
    expect(parseDiskSpec('vdev=xvda,target=/images/a,b.img,').pdev_path).toBe('/images/a,b.img')
    // an empty target given positionally may be given again by name
    expect(parseDiskSpec(',raw,xvda,target=/img').pdev_path).toBe('/img')
    // blanks before a parameter are skipped, blanks after one are kept
    expect(parseDiskSpec('  /img ,\traw,  xvda')).toMatchObject({pdev_path: '/img ', vdev: 'xvda'})
  })

  it('rejects what xl rejects, naming the token', () => {
    const cases: [string, string][] = [
      ['/x,,xvda,rw,junk', "1:13: too many positional parameters: 'junk'"],
      ['/x,raw,xvda,access=rx', "1:20: unknown value for access: 'rx'"],
      ['/x,raw,xvda,devtype=floppy', "1:21: unknown value for devtype: 'floppy'"],
      ['/x,raw,xvda,backendtype=blktap', "1:25: unknown value for backendtype: 'blktap'"],
      ['/x,raw,xvda,specification=scsi', "1:27: unknown value for specification: 'scsi'"],
      ['/x,raw,xvda,format=qcow2', "1:20: format respecified: 'qcow2' (already raw)"],
      ['/x,raw,xvda,vdev=xvdb', "1:18: vdev respecified: 'xvdb' (already 'xvda')"],
      ['/x,raw,xvda:tape', "1:13: unknown deprecated type: 'tape'"],
      ['/x,raw,xvda,colo-port=0', "1:23: unknown value for colo_port: '0' (expected a port number, 1-65535)"],
      ['/x,raw,xvda,=y', "1:13: bad disk syntax near '=y'"],
      ['vdev=xvda', '1:1: no target specified (and device not removable)'],
    ]
    for (const [spec, want] of cases) {
      const e = diskError(spec)
      expect(`${e.line}:${e.column}: ${e.detail}`, spec).toBe(`${want} in disk spec '${spec}'`)
      expect(e.code).toBe('disk-spec')
    }
  })

  it('maps columns through the quotes and escapes of the config string', () => {
    const cfg = parseXlConfig("disk = [\n    'a\\\\b.img,raw,xvda,bogus=1' ]\n", {file: 'vm.cfg'})
    const item = cfg.settings.get('disk')?.value
    const value = item?.kind === 'list' ? item.items[0] : undefined
    if (value?.kind !== 'string') throw new Error('no string')
    let err: unknown
    try {
      parseDiskSpec(value.value, {origin: {file: 'vm.cfg', value, key: 'disk'}})
    } catch (e) {
      err = e
    }
    // the spec is a\b.img,raw,xvda,bogus=1: 'bogus' is at offset 17 of the value and 18 of the text
    // between the quotes, which starts at column 6
    expect((err as ConfigError).message).toBe("vm.cfg:2:24: unknown parameter 'bogus=1' in disk spec 'a\\\\b.img,raw,xvda,bogus=1'")
    expect((err as ConfigError).key).toBe('disk')
  })
})

describe('vif specs', () => {
  it('reads the keys of xl-network-configuration(5)', () => {
    const {nic, warnings} = parseVifSpec(
      'mac=00:16:3E:74:3d:76,bridge=xenbr1,type=ioemu,model=rtl8139,vifname=web0,script=vif-route,ip=10.0.0.5 10.0.0.6,backend=netdom,gatewaydev=eth0,mtu=9000,devid=3,vlan=10,rate=10Mb/s@20ms,trusted',
    )
    expect(warnings).toEqual([])
    expect(nic).toEqual({
      devid: 3,
      mac: '00:16:3e:74:3d:76',
      bridge: 'xenbr1',
      nictype: 'vif_ioemu',
      model: 'rtl8139',
      ifname: 'web0',
      script: 'vif-route',
      ip: '10.0.0.5 10.0.0.6',
      backend_domname: 'netdom',
      gatewaydev: 'eth0',
      mtu: 9000,
      vlan: '10',
      rate_bytes_per_interval: 25000,
      rate_interval_usecs: 20000,
      trusted: true,
    })
  })

  it('gives an empty spec every default; the devid is the list position', () => {
    expect(parseVifSpec('', {devid: 2})).toEqual({nic: {devid: 2}, warnings: []})
    expect(parseVifSpec(',, ,type=vif,untrusted,', {devid: 0}).nic).toEqual({devid: 0, nictype: 'vif', trusted: false})
  })

  it('reads forwarddev and every COLO key', () => {
    expect(VIF_COLO_KEYS).toHaveLength(48)
    const spec = ['forwarddev=eth1', ...VIF_COLO_KEYS.map((k, i) => `${k}=v${i}`)].join(',')
    const {nic, warnings} = parseVifSpec(spec)
    expect(warnings).toEqual([])
    expect(nic.coloft_forwarddev).toBe('eth1')
    VIF_COLO_KEYS.forEach((k, i) => expect(nic[k], k).toBe(`v${i}`))
  })

  it('ignores unknown items with a warning, as xl does', () => {
    const cfg = parseXlConfig("vif = [ 'bridge=xenbr0, speed=fast,accel=on, netdev=eth0,bogus' ]\n", {file: 'vm.cfg'})
    const list = cfg.settings.get('vif')?.value
    const value = list?.kind === 'list' ? list.items[0] : undefined
    if (value?.kind !== 'string') throw new Error('no string')
    const {nic, warnings} = parseVifSpec(value.value, {origin: {file: 'vm.cfg', value}})
    expect(nic).toEqual({devid: 0, bridge: 'xenbr0', gatewaydev: 'eth0'})
    expect(warnings.map(w => `${w.file}:${w.line}:${w.column}: ${w.message}`)).toEqual([
      "vm.cfg:1:25: unrecognized argument 'speed=fast'; ignored (vif spec 'bridge=xenbr0, speed=fast,accel=on, netdev=eth0,bogus')",
      "vm.cfg:1:36: the accel parameter for vifs is not supported; ignored (vif spec 'bridge=xenbr0, speed=fast,accel=on, netdev=eth0,bogus')",
      "vm.cfg:1:46: 'netdev' is deprecated, use 'gatewaydev' (vif spec 'bridge=xenbr0, speed=fast,accel=on, netdev=eth0,bogus')",
      "vm.cfg:1:58: unrecognized argument 'bogus'; ignored (vif spec 'bridge=xenbr0, speed=fast,accel=on, netdev=eth0,bogus')",
    ])
  })

  it('keeps the last value of a repeated key', () => {
    expect(parseVifSpec('bridge=a,bridge=b,mac=00:00:00:00:00:01,mac=0:16:3e:1:2:3').nic).toEqual({
      devid: 0,
      bridge: 'b',
      mac: '00:16:3e:01:02:03',
    })
  })

  it('reads rates as xl does', () => {
    expect(parseVifRate('10Mb/s')).toEqual({bytesPerInterval: 62500, intervalUsecs: 50000})
    expect(parseVifRate('1GB/s@1s')).toEqual({bytesPerInterval: 1_000_000_000, intervalUsecs: 1_000_000})
    expect(parseVifRate('100KB/s@500us')).toEqual({bytesPerInterval: 50, intervalUsecs: 500})
    expect(parseVifRate('8b/s@2')).toEqual({bytesPerInterval: 2, intervalUsecs: 2_000_000})
    expect(parseVifRate('010B/s')).toEqual({bytesPerInterval: 0, intervalUsecs: 50000}) // octal, as strtoull reads it
    expect(parseVifRate('')).toBe('no rate specified')
    expect(parseVifRate('10Mbit/s')).toBe('invalid rate')
    expect(parseVifRate('0B/s')).toBe('rate overflow')
    expect(parseVifRate('10MB/s@5h')).toBe('invalid replenishment interval')
    expect(parseVifRate('10MB/s@5000s')).toBe('replenishment interval overflow')
  })
})
