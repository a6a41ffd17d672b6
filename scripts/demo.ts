/**
 * The main job on the simulated host: two hosts (two state folders), a running 256 MiB guest on
 * the first, a live migration to the second with xl's messages and a progress bar, then the page
 * integrity check on the target. Then COLO: a second guest with a COLO disk and a colo-compare vif
 * (its device model is a real QEMU) is protected by a secondary on the second host (`xl-ts remus
 * -c -p`); checkpoints scroll by, taken when the guests' outputs diverge; the first host "dies"
 * (every process of it is killed: toolstack, save helper, the guest and its QEMU), the secondary
 * takes over, and its disk image is the primary's as of the last checkpoint plus its own writes.
 * Run: npm run demo (after bash scripts/setup).
 */
import {execa} from 'execa'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {readdirSync, readFileSync} from 'node:fs'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const cli = path.join(repo, 'bin/run.js')
const dir = mkdtempSync('/tmp/xl-ts-demo-')
const hostA = path.join(dir, 'a')
const hostB = path.join(dir, 'b')
const say = (s: string): void => console.log(`\n=== ${s}`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Kills every process of a simulated host: those naming its folder or running with XL_TS_ROOT set to it. */
function killHost(root: string): void {
  for (const pid of readdirSync('/proc').filter((e) => /^[0-9]+$/.test(e) && Number(e) !== process.pid)) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')
      const env = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')
      if (cmd.some((w) => w.startsWith(root)) || env.includes(`XL_TS_ROOT=${root}`)) process.kill(Number(pid), 'SIGKILL')
    } catch {
      // gone, or not ours to read
    }
  }
}
const xl = (root: string, ...args: string[]) => execa('node', [cli, '--root', root, ...args], {stdio: 'inherit'})

try {
  const cfg = path.join(dir, 'vm1.cfg')
  writeFileSync(cfg, ['name = "vm1"', 'type = "hvm"', 'memory = 256', 'vcpus = 1', 'sim_dirty_rate = 4000', 'sim_working_set = 64', 'sim_seed = 7', 'sim_packet_rate = 100', ''].join('\n'))
  say('host a: xl-ts create vm1.cfg  (a 256 MiB guest dirtying 4000 pages/s)')
  await xl(hostA, 'create', cfg)
  await xl(hostA, 'list')

  say('xl-ts migrate -s "" vm1 "xl-ts --root b migrate-receive"   (two simulated hosts on one machine)')
  await xl(hostA, 'migrate', '-t', '-s', '', 'vm1', `node ${cli} --root ${hostB} migrate-receive`)

  say('after the migration: host a has no vm1, host b runs it')
  await xl(hostA, 'list')
  await xl(hostB, 'list')
  say('page integrity of vm1 on host b (every page consistent, like QEMU\'s migration test)')
  await xl(hostB, 'sim', 'checksum', '--verify', 'vm1')

  // COLO: vm2 on host a with a COLO disk (both hosts start with the same image: the operator's
  // copy) and colo-compare; created paused (its disk must not change before replication starts).
  for (const root of [hostA, hostB]) await execa('qemu-img', ['create', '-q', '-f', 'raw', path.join(root, 'vm2.raw'), '32M'])
  const cfg2 = path.join(dir, 'vm2.cfg')
  writeFileSync(
    cfg2,
    [
      'name = "vm2"',
      'type = "hvm"',
      'memory = 64',
      'sim_dirty_rate = 2000',
      'sim_working_set = 16',
      'sim_seed = 8',
      'sim_packet_rate = 100',
      'sim_disk_rate = 20',
      'sim_nondeterminism = "0.0003"',
      `disk = [ 'format=raw,vdev=hda,access=rw,colo,colo-host=127.0.0.1,colo-port=${9100 + (process.pid % 800)},colo-export=colo1,active-disk=vm2-active.qcow2,hidden-disk=vm2-hidden.qcow2,target=vm2.raw' ]`,
      `vif = [ 'mac=00:16:3e:00:00:02,colo_sock_compare_sec_in_ip=127.0.0.1,colo_sock_compare_sec_in_port=${9900 + (process.pid % 800)}' ]`,
      '',
    ].join('\n'),
  )
  say('host a: xl-ts create -p vm2.cfg  (a COLO disk, replicated by QEMU, and colo-compare on its vif)')
  await xl(hostA, 'create', '-p', cfg2)
  say('xl-ts --root a remus -c -p --json vm2 ...   (COLO: host a primary, host b secondary; both copies run)')
  const colo = execa('node', [cli, '--root', hostA, 'remus', '-c', '-p', '--json', '-s', '', 'vm2', `exec node ${cli} --root ${hostB} migrate-receive --colo`], {
    stdout: 'pipe',
    stderr: 'inherit',
    reject: false,
  })
  // One line per checkpoint from the NDJSON events: why, the primary's dirty pages (A), the
  // secondary's (B), what was sent (A u B), how long the guests stood still.
  let pending = ''
  let released = 0
  colo.stdout?.on('data', (d: Buffer) => {
    pending += d.toString()
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const e = JSON.parse(pending.slice(0, nl)) as Record<string, number | string>
      pending = pending.slice(nl + 1)
      if (e.event === 'release') released++
      if (e.event === 'checkpoint') {
        const asked = e.requestedAtMs !== undefined ? `, ${(Number(e.atMs) - Number(e.requestedAtMs)).toFixed(1)} ms after colo-compare asked` : ''
        console.log(`checkpoint ${e.number} (${e.reason}${asked}): A ${e.primaryDirty ?? '-'} pages, B ${e.secondaryDirty ?? '-'}, sent ${e.pages}, paused ${Number(e.pausedMs).toFixed(1)} ms; ${released} frames released so far`)
      }
    }
  })
  await sleep(6000)
  say('host a dies: its toolstack, its save helper, the guest and its QEMU are killed (SIGKILL)')
  killHost(hostA)
  await colo
  await sleep(1500)
  say('after the failover: host b runs vm2 from the last checkpoint, host a has nothing')
  await xl(hostA, 'list')
  await xl(hostB, 'list')
  await xl(hostB, 'sim', 'checksum', '--verify', 'vm2')
} finally {
  for (const root of [hostA, hostB]) for (const vm of ['vm1', 'vm2']) await execa('node', [cli, '--root', root, 'destroy', vm], {reject: false})
  rmSync(dir, {recursive: true, force: true})
}
