/**
 * The main job on the simulated host: two hosts (two state folders), a running 256 MiB guest on
 * the first, a live migration to the second with xl's messages and a progress bar, then the page
 * integrity check on the target. Then a COLO main stream written by our codecs, listed by
 * `xl-ts stream inspect` (COLO sessions themselves arrive with issue 7).
 * Run: npm run demo (after bash scripts/setup).
 */
import {execa} from 'execa'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {checkpointedStream} from '../test/support/synthetic-guest.js'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const cli = path.join(repo, 'bin/run.js')
const dir = mkdtempSync('/tmp/xl-ts-demo-')
const hostA = path.join(dir, 'a')
const hostB = path.join(dir, 'b')
const say = (s: string): void => console.log(`\n=== ${s}`)
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

  const colo = path.join(dir, 'colo.stream')
  writeFileSync(colo, checkpointedStream({pages: 4096}, 'colo', 3))
  say('xl-ts stream inspect colo.stream   (a COLO main stream of 3 checkpoints; Xen\'s verifier cannot read these)')
  await execa('node', [cli, 'stream', 'inspect', colo], {stdio: 'inherit'})
} finally {
  for (const root of [hostA, hostB]) await execa('node', [cli, '--root', root, 'destroy', 'vm1'], {reject: false})
  rmSync(dir, {recursive: true, force: true})
}
