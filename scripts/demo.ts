/**
 * The main job on the simulated host: two hosts (two state folders), a running 256 MiB guest on
 * the first, a live migration to the second with xl's messages and a progress bar, then the page
 * integrity check on the target. Then COLO: the guest, now on the second host, is protected by a
 * secondary on the first (`xl-ts remus -c`), checkpoints scroll by, the second host "dies" (every
 * process of it is killed: toolstack, save helper, the guest), and the secondary takes over.
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

  say('xl-ts --root b remus -c --json vm1 ...   (COLO: host b primary, host a secondary; both copies run)')
  const colo = execa('node', [cli, '--root', hostB, 'remus', '-c', '-p', '--json', '--max-interval', '300', '-s', '', 'vm1', `exec node ${cli} --root ${hostA} migrate-receive --colo`], {
    stdout: 'pipe',
    stderr: 'inherit',
    reject: false,
  })
  // One line per checkpoint from the NDJSON events: why, the primary's dirty pages (A), the
  // secondary's (B), what was sent (A u B), how long the guests stood still.
  let pending = ''
  colo.stdout?.on('data', (d: Buffer) => {
    pending += d.toString()
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const e = JSON.parse(pending.slice(0, nl)) as Record<string, number | string>
      pending = pending.slice(nl + 1)
      if (e.event === 'checkpoint') {
        console.log(`checkpoint ${e.number} (${e.reason}): A ${e.primaryDirty ?? '-'} pages, B ${e.secondaryDirty ?? '-'}, sent ${e.pages}, paused ${Number(e.pausedMs).toFixed(1)} ms`)
      }
    }
  })
  await sleep(4000)
  say('host b dies: its toolstack, its save helper and the guest itself are killed (SIGKILL)')
  killHost(hostB)
  await colo
  await sleep(1500)
  say('after the failover: host a runs vm1 from the last checkpoint, host b has nothing')
  await xl(hostA, 'list')
  await xl(hostB, 'list')
  await xl(hostA, 'sim', 'checksum', '--verify', 'vm1')
} finally {
  for (const root of [hostA, hostB]) await execa('node', [cli, '--root', root, 'destroy', 'vm1'], {reject: false})
  rmSync(dir, {recursive: true, force: true})
}
