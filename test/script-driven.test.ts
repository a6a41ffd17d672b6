/**
 * A bash script drives a live migration as an operator's script would: `set -euo pipefail`, xl-ts
 * on PATH, `migrate --json` read with jq (docs/json.md, schema v1), the exit status checked, the
 * domain looked up on the target with `list --json`, the downtime printed. Two simulated hosts
 * (two state folders) on this machine; `-s ''` makes the host string the receiver's command.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {execa} from 'execa'
import {afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {BIN, cleanupHost, ensureBuilt, newHost, writeConfig, xl} from './support/cli.js'

/** The operator's script: migrate-vm SRC DST CONFIG NAME. */
const SCRIPT = String.raw`#!/usr/bin/env bash
# migrate-vm SRC DST CONFIG NAME: start the guest NAME from CONFIG on host SRC, live-migrate it to
# host DST, check that it runs there, and print what the migration cost.
set -euo pipefail
src=$1 dst=$2 cfg=$3 name=$4


progress=$(mktemp)
trap 'rm -f "$progress" "$progress.err"' EXIT

xl-ts --root "$src" create -q "$cfg"

status=0
# -s '': the host string is the receiver's whole command, run with sh -c (%q keeps DST one word).
xl-ts --root "$src" migrate --json -s '' "$name" "xl-ts --root $(printf %q "$dst") migrate-receive" \
  >"$progress" 2>"$progress.err" || status=$?

# The last object is the result (schema v1).
result=$(jq -c 'select(.event == "result")' "$progress")
if [[ -z $result || $(jq -r .v <<<"$result") != 1 ]]; then
  echo "no v1 result from xl-ts migrate (exit $status):" >&2
  cat "$progress.err" >&2
  exit 2
fi
if [[ $(jq -r .domain <<<"$result") != "$name" ]]; then
  echo "the result names $(jq -r .domain <<<"$result"), not $name" >&2
  exit 2
fi
if [[ $status -ne 0 || $(jq -r .ok <<<"$result") != true ]]; then
  echo "migration of $(jq -r .domain <<<"$result") failed: exit $status, outcome $(jq -r .outcome <<<"$result"): $(jq -r '.error // "?"' <<<"$result")"
  # Where does it run now? (xl's lines on stderr say it too.)
  if xl-ts --root "$src" list --json | jq -e --arg n "$name" 'any(.[]; .name == $n)' >/dev/null; then
    echo "$name still runs on the source"
  fi
  exit 1
fi

# The domain is on the target now, running, and gone from the source.
domid=$(xl-ts --root "$dst" list --json | jq -r --arg n "$name" '.[] | select(.name == $n) | .domid')
[[ -n $domid ]] || { echo "$name is not on the target" >&2; exit 1; }
state=$(xl-ts --root "$dst" list --json | jq -r --arg n "$name" '.[] | select(.name == $n) | .stateLetters')
[[ $state != *p* ]] || { echo "$name is paused on the target ($state)" >&2; exit 1; }
if xl-ts --root "$src" list --json | jq -e --arg n "$name" 'any(.[]; .name == $n)' >/dev/null; then
  echo "$name is still on the source" >&2
  exit 1
fi

rounds=$(jq -s '[.[] | select(.event == "iteration")] | length' "$progress")
phases=$(jq -rs '[.[] | select(.event == "phase") | .phase] | join(",")' "$progress")
echo "migrated $name: domid $domid on the target, state $state"
jq -r '"downtime \(.downtimeMs) ms, total \(.totalMs) ms, \(.iterations) iterations, \(.pagesSent) pages, \(.pausedPages) while paused, \(.bytes) bytes"' <<<"$result"
echo "rounds $rounds, phases $phases"
`

let a: string
let b: string
let dir: string

beforeAll(async () => {
  await ensureBuilt()
})

beforeEach(() => {
  a = newHost('sda')
  b = newHost('sdb')
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-script-'))
  // xl-ts on PATH, as an installed one would be: the script and the receiver's `sh -c` both find it.
  fs.mkdirSync(path.join(dir, 'bin'))
  fs.writeFileSync(path.join(dir, 'bin', 'xl-ts'), `#!/bin/sh\nexec '${process.execPath}' '${BIN}' "$@"\n`, {mode: 0o755})
  fs.writeFileSync(path.join(dir, 'migrate-vm'), SCRIPT, {mode: 0o755})
})

afterEach(async () => {
  await cleanupHost(a)
  await cleanupHost(b)
  fs.rmSync(dir, {recursive: true, force: true})
})

async function runScript(cfg: string, name: string) {
  return execa('bash', [path.join(dir, 'migrate-vm'), a, b, cfg, name], {
    env: {PATH: `${path.join(dir, 'bin')}:${process.env.PATH ?? ''}`, XL_TS_BACKEND: 'sim', TMPDIR: dir},
    reject: false,
    timeout: 120_000,
  })
}

async function names(root: string): Promise<string[]> {
  return (JSON.parse((await xl(['list', '--json'], {root})).stdout) as {name: string}[]).map((d) => d.name)
}

describe('a bash script drives a migration through --json', () => {
  it('migrates a guest, finds it on the target and prints the downtime', async () => {
    const cfg = writeConfig(dir, 'vm', {name: 'scripted', type: 'hvm', memory: 64, sim_dirty_rate: 400, sim_seed: 5})
    const r = await runScript(cfg, 'scripted')
    expect(r.exitCode, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0)
    expect(r.stderr).toBe('')
    const out = String(r.stdout).split('\n')
    expect(out).toHaveLength(3)
    const [head, numbers, rounds] = out as [string, string, string]
    const m = /^migrated scripted: domid (\d+) on the target, state ([r-][b-]----)$/.exec(head)
    expect(m, head).not.toBeNull()
    const n = /^downtime ([0-9.]+) ms, total ([0-9.]+) ms, (\d+) iterations, (\d+) pages, (\d+) while paused, (\d+) bytes$/.exec(numbers)
    expect(n, numbers).not.toBeNull()
    const [downtime, total, iterations, pages, paused, bytes] = (n as RegExpExecArray).slice(1).map(Number) as number[]
    expect(downtime).toBeGreaterThan(0)
    expect(downtime).toBeLessThan(total as number)
    expect(iterations).toBeGreaterThanOrEqual(1)
    // 64 MiB is 16384 pages: all of them at least once, and their bytes on the wire.
    expect(pages).toBeGreaterThanOrEqual(16384)
    expect(paused).toBeLessThanOrEqual(pages as number)
    expect(bytes).toBeGreaterThan(16384 * 4096)
    expect(rounds).toMatch(/^rounds \d+, phases connect,banner,header,precopy,stop-and-copy,ready,go,report$/)

    // What the script said is what the hosts say.
    const onB = (JSON.parse((await xl(['list', '--json'], {root: b})).stdout) as {name: string; domid: number}[]).find((d) => d.name === 'scripted')
    expect(onB?.domid).toBe(Number(m?.[1]))
    expect(await names(a)).toEqual(['Domain-0'])
  })

  it('reads a failed migration from the result and finds the guest still on the source', async () => {
    // A PV guest cannot be saved on the simulated host: the migration fails and resumes it at the source.
    const cfg = writeConfig(dir, 'pv', {name: 'scripted-pv', type: 'pv', memory: 64})
    const r = await runScript(cfg, 'scripted-pv')
    expect(r.exitCode, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(1)
    expect(String(r.stdout).split('\n')).toEqual([
      expect.stringMatching(/^migration of scripted-pv failed: exit 1, outcome resumed: Save failed: .*PV guest/),
      'scripted-pv still runs on the source',
    ])
    expect(await names(a)).toEqual(['Domain-0', 'scripted-pv'])
    expect(await names(b)).toEqual(['Domain-0'])
  })
})
