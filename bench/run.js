#!/usr/bin/env node
/**
 * Runs benchmarks, each in its own Node process: `npm run bench` runs all of bench/*.mjs,
 * `npm run bench -- stream-codec [--runs 9 ...]` runs the named ones and passes the options on.
 * `npm run bench` builds first: the benchmarks import the compiled code from dist/.
 */
import {spawnSync} from 'node:child_process'
import {readdirSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.mjs'))
  .map((f) => f.slice(0, -'.mjs'.length))
  .sort()

const args = process.argv.slice(2)
const names = []
while (args.length && !args[0].startsWith('-')) names.push(args.shift())
for (const name of names) {
  if (!available.includes(name)) {
    console.error(`bench: no benchmark "${name}"; there are: ${available.join(', ')}`)
    process.exit(2)
  }
}

let failed = 0
for (const name of names.length ? names : available) {
  console.log(`\n=== bench/${name}.mjs ${args.join(' ')}`.trimEnd())
  const run = spawnSync(process.execPath, [path.join(here, `${name}.mjs`), ...args], {stdio: 'inherit'})
  if (run.status !== 0) {
    console.error(`bench: ${name} failed (${run.status ?? run.signal})`)
    failed++
  }
}
process.exit(failed ? 1 : 0)
