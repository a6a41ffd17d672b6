/**
 * COLO block replication (qdisk) with real QEMU (Debian's qemu-system-x86 7.2 and qemu-utils; never
 * skipped): the config rule (which disks are COLO disks, libxl's messages, device numbers), the
 * -drive arguments, the secondary's active/hidden images, and QEMU-REPLICATION.md's Task 3 end to
 * end through src/toolstack/colo/: a primary and a secondary device model on loopback (NBD port
 * picked free), guest writes on the primary reaching the secondary's image, checkpoints making the
 * images identical, a secondary-guest write discarded by the next checkpoint, failover keeping the
 * checkpointed data and later secondary writes (checked offline after QEMU quit), a killed
 * secondary (primary writes go on, status says error, teardown, the primary alone), and the error
 * paths (no NBD server, replication not running, QEMU's own size check, qemu-io failures).
 * Images live in a temporary folder removed afterwards; every QEMU is stopped after each test.
 */
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import {execa} from 'execa'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {guestDrive, qdiskArgs} from '../src/toolstack/colo/qdisk-args.js'
import {QdiskError, coloDisksOf, diskDevNumber, hasColoDisks, qdiskIds, type ColoDisk} from '../src/toolstack/colo/qdisk-config.js'
import {imageVirtualSize, prepareSecondaryImages} from '../src/toolstack/colo/qdisk-images.js'
import {PrimaryReplication, ReplicationError, SecondaryReplication} from '../src/toolstack/colo/qdisk-replication.js'
import {QemuIo, QemuIoError} from '../src/toolstack/qmp/index.js'
import type {LibxlDiskJson} from '../src/toolstack/config/domain.js'
import {startDeviceModel, type DeviceModel} from '../src/toolstack/device-model/index.js'

const MiB = 1024 * 1024
const K64 = 64 * 1024
const SIZE = 16 * MiB

let root: string
const models: DeviceModel[] = []
const pids: number[] = []

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'colo-qdisk-'))
})

afterEach(async () => {
  await Promise.all(models.splice(0).map((dm) => dm.stop({quitTimeoutMs: 2000}).catch(() => undefined)))
})

afterAll(() => {
  for (const pid of pids) expect(fs.existsSync(`/proc/${pid}`), `QEMU pid ${pid} left`).toBe(false)
  fs.rmSync(root, {recursive: true, force: true})
})

let folders = 0
/** A fresh folder: images and a device model's qmp.sock go there. */
function folder(name: string): string {
  const dir = path.join(root, `${++folders}-${name}`)
  fs.mkdirSync(dir)
  return dir
}

async function start(dir: string, extraArgs: string[]): Promise<DeviceModel> {
  const dm = await startDeviceModel({folder: dir, extraArgs})
  models.push(dm)
  pids.push(dm.pid)
  return dm
}

/** A TCP port nobody listens on right now (127.0.0.1). */
async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function qemuImg(...args: string[]): Promise<void> {
  await execa('qemu-img', args)
}

/** Writes a pattern into an image that no QEMU has open. */
async function fill(file: string, format: string, pattern: number, offset: number, len: number): Promise<void> {
  await execa('qemu-io', ['-f', format, '-c', `write -P 0x${pattern.toString(16)} ${offset} ${len}`, file])
}

/** Reads an image (also while a QEMU has it open: -U): true when the range holds the pattern. */
async function holds(file: string, format: string, pattern: number, offset: number, len: number): Promise<boolean> {
  const r = await execa('qemu-io', ['-r', '-U', '-f', format, '-c', `read -P 0x${pattern.toString(16)} ${offset} ${len}`, file])
  expect(r.stdout).toContain(`read ${len}/${len} bytes at offset ${offset}`)
  return !r.stdout.includes('Pattern verification failed')
}

/** `qemu-img compare -U`: true when the two images have the same content. */
async function identical(a: string, b: string, format: string): Promise<boolean> {
  const r = await execa('qemu-img', ['compare', '-U', '-f', format, '-F', format, a, b], {reject: false})
  if (r.exitCode !== 0 && r.exitCode !== 1) throw new Error(`qemu-img compare: ${r.stderr}`)
  return r.exitCode === 0
}

function coloDisk(vdev: string, target: string, format: 'raw' | 'qcow2', exportName: string, port: number): LibxlDiskJson {
  return {
    pdev_path: target,
    vdev,
    backend: 'qdisk',
    format,
    readwrite: 1,
    colo_enable: 'True',
    colo_host: '127.0.0.1',
    colo_port: port,
    colo_export: exportName,
    active_disk: `active-${exportName}.qcow2`,
    hidden_disk: `hidden-${exportName}.qcow2`,
  }
}

/** One side's disks: the same config, resolved into that side's folder (as two hosts would). */
function sideDisks(json: readonly LibxlDiskJson[], dir: string): ColoDisk[] {
  return coloDisksOf(json, (p) => path.join(dir, p))
}

/** The target images of both sides, same size, same initial content (the toolstack's initial sync). */
async function makeTargets(disks: readonly ColoDisk[]): Promise<void> {
  for (const d of disks) {
    await qemuImg('create', '-q', '-f', d.format, d.target, String(SIZE))
    await fill(d.target, d.format, 0x11, 0, MiB)
  }
}

function stopwatch(): () => number {
  const t0 = performance.now()
  return () => performance.now() - t0
}

describe('COLO disks of a domain config (libxl colo_qdisk_setup rule)', () => {
  const id = (p: string) => `/img/${p}`

  it('numbers vdevs as libxl__device_disk_dev_number', () => {
    expect(diskDevNumber('xvda')).toBe(51712)
    expect(diskDevNumber('xvdb')).toBe(51728)
    expect(diskDevNumber('xvda1')).toBe(51713)
    expect(diskDevNumber('xvdq')).toBe((1 << 28) | (16 << 8))
    expect(diskDevNumber('xvdaa')).toBe((1 << 28) | (26 << 8))
    expect(diskDevNumber('d0p1')).toBe(51713)
    expect(diskDevNumber('hda')).toBe(768)
    expect(diskDevNumber('hdb')).toBe(832)
    expect(diskDevNumber('hdc')).toBe(5632)
    expect(diskDevNumber('hdd')).toBe(5696)
    expect(diskDevNumber('hda2')).toBe(770)
    expect(diskDevNumber('sda')).toBe(2048)
    expect(diskDevNumber('sdb3')).toBe(2067)
    expect(diskDevNumber('51712')).toBe(51712)
    expect(diskDevNumber('0x10')).toBe(16)
    for (const bad of ['hde', 'sdq', 'xvd', 'xvda0', 'hda64', 'vda', '', 'xvdA']) expect(diskDevNumber(bad), bad).toBe(-1)
  })

  it('types every disk of a COLO domain, with its QEMU names', () => {
    const json = [coloDisk('xvda', 'a.raw', 'raw', 'colo1', 9000), {...coloDisk('hdb', 'b.qcow2', 'qcow2', 'colo2', 9000), backend: undefined}]
    expect(hasColoDisks(json)).toBe(true)
    expect(hasColoDisks([{vdev: 'xvda', format: 'raw', pdev_path: 'x'}])).toBe(false)
    const disks = coloDisksOf(json, id)
    expect(disks).toEqual([
      {vdev: 'xvda', devNumber: 51712, target: '/img/a.raw', format: 'raw', exportName: 'colo1', host: '127.0.0.1', port: 9000,
        activeDisk: '/img/active-colo1.qcow2', hiddenDisk: '/img/hidden-colo1.qcow2', readonly: false},
      {vdev: 'hdb', devNumber: 832, target: '/img/b.qcow2', format: 'qcow2', exportName: 'colo2', host: '127.0.0.1', port: 9000,
        activeDisk: '/img/active-colo2.qcow2', hiddenDisk: '/img/hidden-colo2.qcow2', readonly: false},
    ])
    expect(qdiskIds(disks[0]!)).toEqual({exportId: 'colo1', topId: 'top-colo1', activeNode: 'active-colo1', hiddenNode: 'hidden-colo1', nbdNode: 'colo_node51712'})
    expect(coloDisksOf([], id)).toEqual([])
  })

  it('refuses a disk that is not a COLO qdisk, saying which keys it lacks', () => {
    const base = coloDisk('xvda', 'a.raw', 'raw', 'colo1', 9000)
    const err = (disks: LibxlDiskJson[]) => {
      try {
        coloDisksOf(disks, id)
      } catch (e) {
        return e as QdiskError
      }
      throw new Error('accepted')
    }
    const plain = err([base, {vdev: 'xvdb', format: 'raw', pdev_path: 'b.raw', readwrite: 1}])
    expect(plain).toBeInstanceOf(QdiskError)
    expect(plain).toMatchObject({code: 'not-handled', vdev: 'xvdb'})
    expect(plain.message).toBe(
      'device not handled by checkpoint (device=vbd:xvdb/51728): not a COLO qdisk, missing colo, colo-host, colo-export, colo-port, active-disk, hidden-disk',
    )
    expect(err([{...base, backend: 'phy'}]).message).toMatch(/device=vbd:xvda\/51712\): not a COLO qdisk, missing backendtype=qdisk \(it is phy\)$/)
    expect(err([{...base, colo_enable: 'False'}]).message).toMatch(/missing colo$/)
    expect(err([{...base, colo_port: 0}]).message).toMatch(/missing colo-port$/)
    expect(err([{...base, colo_host: undefined, hidden_disk: ''}]).message).toMatch(/missing colo-host, hidden-disk$/)
    expect(err([{...base, active_disk: undefined}]).message).toMatch(/missing active-disk$/)

    const mismatch = err([base, coloDisk('xvdb', 'b.raw', 'raw', 'colo2', 9001)])
    expect(mismatch).toMatchObject({code: 'host-port', vdev: 'xvdb'})
    expect(mismatch.message).toBe('The host and port of all disks must be the same (xvda: 127.0.0.1:9000, xvdb: 127.0.0.1:9001)')
    expect(err([base, {...coloDisk('xvdb', 'b.raw', 'raw', 'colo2', 9000), colo_host: '10.0.0.2'}]).code).toBe('host-port')

    expect(err([{...base, vdev: 'vda'}]).message).toBe('COLO disk vda: Invalid or unsupported virtual disk identifier vda')
    expect(err([{...base, format: 'vhd'}]).message).toMatch(/format vhd is not supported for COLO/)
    expect(err([{...base, pdev_path: undefined}]).message).toMatch(/no target/)
    expect(err([{...base, colo_export: 'my export'}]).message).toMatch(/not a valid QEMU id/)
    expect(err([{...base, colo_host: 'a,b'}]).message).toMatch(/colo-host "a,b"/)
    expect(err([base, coloDisk('xvdb', 'b.raw', 'raw', 'colo1', 9000)]).message).toMatch(/QEMU name colo1 is also used by xvda/)
    expect(err([base, coloDisk('xvda', 'b.raw', 'raw', 'colo2', 9000)]).message).toMatch(/same device number 51712 as xvda/)
    expect(err([base, {...coloDisk('xvdb', 'b.raw', 'raw', 'colo2', 9000), active_disk: 'a.raw'}]).message).toMatch(/image \/img\/a.raw is also used by xvda/)
    expect(err([{...base, hidden_disk: base.active_disk}]).message).toMatch(/three different files/)
  })
})

describe('QEMU -drive arguments of COLO disks', () => {
  const disks = coloDisksOf(
    [coloDisk('xvda', 'a,1.raw', 'raw', 'colo1', 9000), {...coloDisk('hdb', 'b.qcow2', 'qcow2', 'colo2', 9000), readwrite: undefined}],
    (p) => `/img/${p}`,
  )

  it('primary: a quorum per disk (id = export) over the target', () => {
    expect(qdiskArgs(disks, 'primary')).toEqual([
      '-drive',
      'if=none,id=colo1,cache=writeback,driver=quorum,read-pattern=fifo,vote-threshold=1,children.0.driver=raw,children.0.file.filename=/img/a,,1.raw',
      '-drive',
      'if=none,id=colo2,cache=writeback,readonly=on,driver=quorum,read-pattern=fifo,vote-threshold=1,children.0.driver=qcow2,children.0.file.filename=/img/b.qcow2',
    ])
    expect(disks.map((d) => guestDrive(d, 'primary'))).toEqual(['colo1', 'colo2'])
  })

  it('secondary: the exported target, and a replication top of its own id per disk', () => {
    const args = qdiskArgs(disks, 'secondary')
    expect(args.slice(0, 4)).toEqual([
      '-drive',
      'if=none,id=colo1,cache=writeback,driver=raw,file.filename=/img/a,,1.raw',
      '-drive',
      'if=none,id=top-colo1,cache=writeback,driver=replication,mode=secondary,top-id=top-colo1,' +
        'file.driver=qcow2,file.node-name=active-colo1,file.file.filename=/img/active-colo1.qcow2,' +
        'file.backing.driver=qcow2,file.backing.node-name=hidden-colo1,file.backing.file.filename=/img/hidden-colo1.qcow2,' +
        'file.backing.backing=colo1',
    ])
    expect(args[7]).toMatch(/^if=none,id=top-colo2,cache=writeback,readonly=on,driver=replication,.*file.backing.backing=colo2$/)
    expect(disks.map((d) => guestDrive(d, 'secondary'))).toEqual(['top-colo1', 'top-colo2'])
  })
})

describe('secondary active/hidden images', () => {
  it('creates missing ones with the target size, keeps right ones, refuses wrong ones', async () => {
    const dir = folder('images')
    const json = [coloDisk('xvda', 'a.raw', 'raw', 'colo1', 9000), coloDisk('xvdb', 'b.qcow2', 'qcow2', 'colo2', 9000)]
    const disks = sideDisks(json, dir)
    await qemuImg('create', '-q', '-f', 'raw', disks[0]!.target, String(SIZE))
    await qemuImg('create', '-q', '-f', 'qcow2', disks[1]!.target, String(2 * SIZE))

    const made = await prepareSecondaryImages(disks)
    expect(made.map((m) => [m.disk.vdev, m.active.action, m.active.size, m.hidden.action, m.hidden.size])).toEqual([
      ['xvda', 'created', SIZE, 'created', SIZE],
      ['xvdb', 'created', 2 * SIZE, 'created', 2 * SIZE],
    ])
    expect(await imageVirtualSize(disks[1]!.activeDisk, 'qcow2')).toBe(2 * SIZE)
    expect(await imageVirtualSize(disks[1]!.hiddenDisk, 'qcow2')).toBe(2 * SIZE)
    const again = await prepareSecondaryImages(disks)
    expect(again.flatMap((m) => [m.active.action, m.hidden.action])).toEqual(['kept', 'kept', 'kept', 'kept'])

    fs.rmSync(disks[0]!.hiddenDisk)
    await qemuImg('create', '-q', '-f', 'qcow2', disks[0]!.hiddenDisk, String(2 * SIZE))
    const wrong = await prepareSecondaryImages(disks).catch((e: unknown) => e)
    expect(wrong).toBeInstanceOf(QdiskError)
    expect(wrong).toMatchObject({code: 'image-size', vdev: 'xvda'})
    expect((wrong as Error).message).toContain(`hidden-disk ${disks[0]!.hiddenDisk} is ${2 * SIZE} bytes, its target ${disks[0]!.target} is ${SIZE} bytes`)

    fs.rmSync(disks[0]!.hiddenDisk)
    await qemuImg('create', '-q', '-f', 'raw', disks[0]!.hiddenDisk, String(SIZE))
    const notQcow2 = await prepareSecondaryImages(disks).catch((e: unknown) => e)
    expect(notQcow2).toMatchObject({code: 'image'})
    expect((notQcow2 as Error).message).toMatch(/Image is not in qcow2 format/)

    const noTarget = await prepareSecondaryImages(sideDisks(json, folder('empty'))).catch((e: unknown) => e)
    expect(noTarget).toMatchObject({code: 'image', vdev: 'xvda'})
    expect((noTarget as Error).message).toMatch(/No such file or directory/)

    // QEMU sees a raw file in whole sectors: 1000 bytes are 1024, and so are the images made for it.
    const odd = sideDisks([coloDisk('xvda', 'odd.raw', 'raw', 'odd', 9000)], dir)
    fs.writeFileSync(odd[0]!.target, Buffer.alloc(1000))
    expect((await prepareSecondaryImages(odd))[0]!.active).toMatchObject({action: 'created', size: 1024})
  })
})

/** Both sides of a COLO pair with their disks, device models, replication and qemu-io. */
async function pair(json: readonly LibxlDiskJson[]) {
  const pdir = folder('primary')
  const sdir = folder('secondary')
  const pDisks = sideDisks(json, pdir)
  const sDisks = sideDisks(json, sdir)
  await makeTargets([...pDisks, ...sDisks])
  const prepared = await prepareSecondaryImages(sDisks)
  const sec = await start(sdir, qdiskArgs(sDisks, 'secondary'))
  const pri = await start(pdir, qdiskArgs(pDisks, 'primary'))
  return {
    pDisks,
    sDisks,
    prepared,
    pri,
    sec,
    P: new PrimaryReplication(pri.qmp, pDisks),
    S: new SecondaryReplication(sec.qmp, sDisks),
    pio: new QemuIo(pri.qmp, (l) => pri.onOutput(l)),
    sio: new QemuIo(sec.qmp, (l) => sec.onOutput(l)),
  }
}

describe('COLO block replication with two real QEMUs', () => {
  it('replicates, checkpoints, discards secondary writes, and fails over keeping the data', async () => {
    const port = await freePort()
    const json = [coloDisk('hda', 'a.raw', 'raw', 'colo-a', port), coloDisk('xvdb', 'b.qcow2', 'qcow2', 'colo-b', port)]
    const setup = stopwatch()
    const {pDisks, sDisks, prepared, pri, sec, P, S, pio, sio} = await pair(json)
    expect(prepared.flatMap((m) => [m.active.action, m.hidden.action])).toEqual(['created', 'created', 'created', 'created'])
    const startReplication = stopwatch()
    await S.start()
    await P.start()
    const startMs = startReplication()
    const setupMs = setup()
    expect(await P.status()).toEqual({error: false})
    expect(await S.status()).toEqual({error: false})
    await P.check()
    await S.check()
    await expect(P.start()).rejects.toMatchObject({code: 'state'})

    const [pa, pb] = pDisks as [ColoDisk, ColoDisk]
    const [sa, sb] = sDisks as [ColoDisk, ColoDisk]
    const topA = guestDrive(sa, 'secondary')
    const topB = guestDrive(sb, 'secondary')

    // The primary guest writes: the NBD write lands in the secondary's target at once, but the
    // secondary guest's view keeps the old data (copied into the hidden disk) until the checkpoint.
    await pio.write(guestDrive(pa, 'primary'), 0xab, 0, K64)
    await pio.write(guestDrive(pb, 'primary'), 0xac, 0, K64)
    expect(await pio.verify(guestDrive(pa, 'primary'), 0xab, 0, K64)).toBe(true)
    expect(await holds(sa.target, 'raw', 0xab, 0, K64)).toBe(true)
    expect(await sio.verify(topA, 0x11, 0, K64)).toBe(true)
    expect(await sio.verify(topA, 0xab, 0, K64)).toBe(false)

    const checkpoint = async () => {
      const t = stopwatch()
      await P.checkpoint()
      await S.checkpoint()
      return t()
    }
    const ckpt: number[] = [await checkpoint()]
    expect(await sio.verify(topA, 0xab, 0, K64)).toBe(true)
    expect(await sio.verify(topB, 0xac, 0, K64)).toBe(true)
    expect(await identical(pa.target, sa.target, 'raw')).toBe(true)
    expect(await identical(pb.target, sb.target, 'qcow2')).toBe(true)

    // A secondary guest write is its own until the next checkpoint throws it away.
    await sio.write(topA, 0xcd, 128 * 1024, K64)
    expect(await sio.verify(topA, 0xcd, 128 * 1024, K64)).toBe(true)
    expect(await holds(sa.target, 'raw', 0x11, 128 * 1024, K64)).toBe(true) // it went to the active disk
    ckpt.push(await checkpoint())
    expect(await sio.verify(topA, 0x11, 128 * 1024, K64)).toBe(true)
    expect(await identical(pa.target, sa.target, 'raw')).toBe(true)

    for (let i = 0; i < 5; i++) {
      await pio.write(guestDrive(pa, 'primary'), 0x20 + i, MiB + i * K64, K64)
      ckpt.push(await checkpoint())
    }
    await P.check()
    await S.check()
    expect(await identical(pa.target, sa.target, 'raw')).toBe(true)
    expect(await identical(pb.target, sb.target, 'qcow2')).toBe(true)

    // The primary is lost after the last checkpoint; the secondary guest wrote meanwhile.
    await sio.write(topA, 0xee, 256 * 1024, K64)
    await pri.stop()
    const failover = await S.failover()
    expect(failover.commitMs).toBeLessThanOrEqual(failover.ms)
    expect(await S.status()).toEqual({error: false})
    expect(await sio.verify(topA, 0xab, 0, K64)).toBe(true)
    expect(await sio.verify(topA, 0xee, 256 * 1024, K64)).toBe(true)
    expect(await sio.verify(topA, 0x24, MiB + 4 * K64, K64)).toBe(true)
    await sio.write(topA, 0x77, 512 * 1024, K64) // the guest goes on, on its own
    const nodes = await sec.qmp.execute<{'node-name': string}[]>('query-named-block-nodes', {flat: true})
    expect(nodes.map((n) => n['node-name']).filter((n) => /^(active|hidden)-/.test(n))).toEqual([])
    await expect(S.failover()).rejects.toMatchObject({code: 'state', message: 'COLO secondary: already failed over'})
    await sec.stop()

    // Offline, after QEMU quit: the secondary's own images hold it all.
    expect(await holds(sa.target, 'raw', 0xab, 0, K64)).toBe(true)
    expect(await holds(sa.target, 'raw', 0x11, 128 * 1024, K64)).toBe(true)
    expect(await holds(sa.target, 'raw', 0xee, 256 * 1024, K64)).toBe(true)
    expect(await holds(sa.target, 'raw', 0x77, 512 * 1024, K64)).toBe(true)
    expect(await holds(sa.target, 'raw', 0x24, MiB + 4 * K64, K64)).toBe(true)
    expect(await holds(sb.target, 'qcow2', 0xac, 0, K64)).toBe(true)

    console.log(
      `COLO qdisk timings: setup ${setupMs.toFixed(0)} ms (replication start ${startMs.toFixed(0)} ms, 2 disks), ` +
        `checkpoint ${Math.min(...ckpt).toFixed(1)}-${Math.max(...ckpt).toFixed(1)} ms, ` +
        `failover ${failover.ms.toFixed(1)} ms (commit ${failover.commitMs.toFixed(1)} ms)`,
    )
    expect(setupMs).toBeLessThan(5000)
    expect(Math.max(...ckpt)).toBeLessThan(1000)
    expect(failover.ms).toBeLessThan(5000)
  })

  it('survives a killed secondary: primary writes complete, status says error, teardown leaves the primary alone', async () => {
    const port = await freePort()
    const {pDisks, sDisks, pri, sec, P, S, pio} = await pair([coloDisk('xvda', 'a.raw', 'raw', 'colo1', port)])
    await S.start()
    await P.start()
    const [pa] = pDisks as [ColoDisk]
    const [sa] = sDisks as [ColoDisk]
    const drive = guestDrive(pa, 'primary')
    await pio.write(drive, 0xab, 0, K64)
    await P.checkpoint()
    await S.checkpoint()

    process.kill(sec.pid, 'SIGKILL')
    await sec.exited
    const t = stopwatch()
    await pio.write(drive, 0xbb, 0, K64)
    const writeMs = t()
    expect(writeMs).toBeLessThan(2000)
    expect(await P.status()).toEqual({error: true, desc: 'I/O error occurred'})
    const failed = await P.check().catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(ReplicationError)
    expect(failed).toMatchObject({code: 'replication-error', side: 'primary', qemuMessage: 'I/O error occurred'})
    expect((failed as Error).message).toBe('replication error occurs when primary vm is running: I/O error occurred')

    const teardown = await P.teardown()
    expect(teardown.ok).toBe(true)
    expect(teardown.steps.map((s) => [s.command, s.target, s.outcome])).toEqual([
      ['xen-set-replication', 'replication', 'ok'],
      ['x-blockdev-change', 'colo1', 'ok'],
      ['blockdev-del', 'colo_node51712', 'ok'],
    ])
    expect(await P.status()).toEqual({error: false})
    await pio.write(drive, 0xbc, K64, K64)
    expect(await pio.verify(drive, 0xbc, K64, K64)).toBe(true)
    const again = await P.teardown()
    expect(again.ok).toBe(true)
    expect(again.steps.slice(1).map((s) => s.outcome)).toEqual(['already', 'already'])
    expect(again.steps[1]!.message).toMatch(/does not have child 'children.1'/)
    await pri.stop()

    expect(await holds(pa.target, 'raw', 0xbb, 0, K64)).toBe(true)
    expect(await holds(pa.target, 'raw', 0xbc, K64, K64)).toBe(true)
    expect(await holds(sa.target, 'raw', 0xab, 0, K64)).toBe(true) // replicated while it lived
    expect(await holds(sa.target, 'raw', 0x11, K64, K64)).toBe(true) // nothing after
    console.log(`COLO qdisk: primary write with the secondary killed: ${writeMs.toFixed(1)} ms`)
  })

  it('reports what QEMU refuses, and stops a secondary that is to be destroyed', async () => {
    const port = await freePort()
    const json = [coloDisk('xvda', 'a.raw', 'raw', 'colo1', port)]
    const {P, S, pio, sec} = await pair(json)

    // No NBD server yet: drive_add fails in HMP's return text.
    const refused = await P.start().catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(ReplicationError)
    expect(refused).toMatchObject({code: 'hmp', side: 'primary', command: 'drive_add'})
    expect((refused as ReplicationError).qemuMessage).toMatch(/Failed to connect to '127.0.0.1:\d+': Connection refused/)
    const nothing = await P.teardown()
    expect(nothing.ok).toBe(true)
    expect(nothing.steps.map((s) => s.outcome)).toEqual(['ok', 'already', 'already'])

    // QEMU would take a failover that has nothing to fail over ({}); the status says so first.
    await expect(S.failover()).rejects.toMatchObject({
      code: 'state',
      qemuMessage: 'Block replication is not running',
      message: 'COLO secondary: cannot fail over: Block replication is not running',
    })
    await S.start()
    await expect(S.start()).rejects.toMatchObject({code: 'state'})
    const stop = await S.stop()
    expect(stop.ok).toBe(true)
    expect(stop.steps.map((s) => [s.command, s.outcome])).toEqual([
      ['xen-set-replication', 'already'],
      ['nbd-server-stop', 'ok'],
    ])
    expect(stop.steps[0]!.message).toBe('Backup job was cancelled unexpectedly')
    const stopAgain = await S.stop()
    expect(stopAgain.ok).toBe(true)
    // Stopped already: QEMU takes the stop again without a word; the NBD server is gone.
    expect(stopAgain.steps.map((s) => [s.outcome, s.message])).toEqual([
      ['ok', undefined],
      ['already', 'NBD server not running'],
    ])

    // A QEMU that is gone: the report says so, nothing throws.
    await sec.stop()
    const gone = await S.stop()
    expect(gone.ok).toBe(false)
    expect(gone.failures).toHaveLength(2)
    await expect(S.checkpoint()).rejects.toMatchObject({code: 'connection', command: 'xen-colo-do-checkpoint'})

    // qemu-io's own failures.
    const beyond = await pio.write('colo1', 0xab, SIZE, K64).catch((e: unknown) => e)
    expect(beyond).toBeInstanceOf(QemuIoError)
    expect(beyond).toMatchObject({code: 'io'})
    expect((beyond as Error).message).toMatch(/write failed: Input\/output error$/)
    await expect(pio.verify('colo1', 0xab, SIZE, K64)).rejects.toMatchObject({code: 'io', message: expect.stringMatching(/read failed: /)})
    await expect(pio.write('nosuch', 0xab, 0, K64)).rejects.toMatchObject({code: 'hmp', message: expect.stringMatching(/Cannot find device/)})
    await expect(pio.write('colo1', 256, 0, K64)).rejects.toMatchObject({code: 'bad-argument'})
    await expect(pio.write('colo1 x', 1, 0, K64)).rejects.toMatchObject({code: 'bad-argument'})

    // Many at once on one QEMU: serialized, each gets its own report.
    const jobs = Array.from({length: 16}, (_, i) => pio.write('colo1', 0x40 + i, 2 * MiB + i * 4096, 4096))
    await Promise.all(jobs)
    const checks = await Promise.all(Array.from({length: 16}, (_, i) => pio.verify('colo1', 0x40 + ((i + (i % 2)) % 16), 2 * MiB + i * 4096, 4096)))
    expect(checks).toEqual(Array.from({length: 16}, (_, i) => i % 2 === 0))
  })

  it('QEMU itself refuses active/hidden images of another size, at replication start', async () => {
    const port = await freePort()
    const dir = folder('mismatch')
    const disks = sideDisks([coloDisk('xvda', 'a.raw', 'raw', 'colo1', port)], dir)
    const [d] = disks as [ColoDisk]
    await qemuImg('create', '-q', '-f', 'raw', d.target, String(SIZE))
    await qemuImg('create', '-q', '-f', 'qcow2', d.activeDisk, String(2 * SIZE))
    await qemuImg('create', '-q', '-f', 'qcow2', d.hiddenDisk, String(2 * SIZE))
    await expect(prepareSecondaryImages(disks)).rejects.toMatchObject({code: 'image-size'})
    // What happens without that check: QEMU starts, and says so only now.
    const sec = await start(dir, qdiskArgs(disks, 'secondary'))
    const S = new SecondaryReplication(sec.qmp, disks)
    await expect(S.start()).rejects.toMatchObject({
      code: 'command',
      command: 'xen-set-replication',
      qemuMessage: "Active disk, hidden disk, secondary disk's length are not the same",
    })
  })
})
