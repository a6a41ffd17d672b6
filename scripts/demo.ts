/**
 * The main job, as far as xl-ts goes today: the migration stream of a synthetic 64 MiB HVM guest,
 * written by our codecs as xl would write a savefile, listed by `xl-ts stream inspect`, then checked
 * by Xen's own verify-stream-v2; and a three-checkpoint COLO stream, which only we can read.
 * Run: npm run demo (after bash scripts/setup). Live migration and COLO on the simulated host replace
 * this as they land.
 */
import {execa} from 'execa'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {checkpointedStream, xlFile} from '../test/support/synthetic-guest.js'

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dir = mkdtempSync(path.join(tmpdir(), 'xl-ts-demo-'))
const say = (s: string): void => console.log(`\n=== ${s}`)

try {
  const savefile = path.join(dir, 'guest.save')
  writeFileSync(savefile, xlFile({pages: 16384}))
  say(`xl-ts stream inspect ${savefile}   (a 64 MiB HVM guest, as xl save writes it)`)
  await execa('node', [path.join(repo, 'bin/run.js'), 'stream', 'inspect', savefile], {stdio: 'inherit'})

  const {stdout: root} = await execa('bash', [path.join(repo, 'scripts/fetch-xen-utils')])
  const xen = path.join(root, 'usr/lib/xen-4.17')
  say("Xen 4.17's own verify-stream-v2 -f xl on the same file")
  await execa('python3', [path.join(xen, 'bin/verify-stream-v2'), '-v', '-f', 'xl', '-i', savefile], {
    stdio: 'inherit',
    env: {PYTHONPATH: path.join(xen, 'lib/python')},
  })

  const colo = path.join(dir, 'colo.stream')
  writeFileSync(colo, checkpointedStream({pages: 4096}, 'colo', 3))
  say(`xl-ts stream inspect ${colo}   (a COLO main stream of 3 checkpoints; verify-stream-v2 cannot read these)`)
  await execa('node', [path.join(repo, 'bin/run.js'), 'stream', 'inspect', colo], {stdio: 'inherit'})
} finally {
  rmSync(dir, {recursive: true, force: true})
}
