/**
 * xl's global options before the command (`xl-ts --root R -v list`), -N dry runs, the errors that
 * happen before any command runs, and the pieces of src/cli on their own: argv preprocessing, the
 * libxl JSON printer, the error renderer, the list row format.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {execa} from 'execa'
import {afterEach, beforeAll, beforeEach, describe, expect, it, vi} from 'vitest'

import {preprocessArgv, UnknownGlobalOption} from '../src/cli/argv.js'
import {printError, renderError, XlExit} from '../src/cli/errors.js'
import {libxlJson} from '../src/cli/libxl-json.js'
import {LIST_HEADER, listRow, stateLetters} from '../src/commands/list.js'
import {ConfigError} from '../src/toolstack/config/index.js'
import {HypervisorError} from '../src/toolstack/hypervisor/errors.js'
import {BIN, cleanupHost, ensureBuilt, leftovers, lines, newHost, oneErrorLine, writeConfig, xl} from './support/cli.js'

describe('argv preprocessing', () => {
  const commands = new Set(['list', 'create', 'sim:checksum', 'stream:inspect', 'destroy'])
  const isCommand = (words: readonly string[]) => commands.has(words.join(':'))
  const pre = (argv: string[]) => preprocessArgv(argv, isCommand).argv

  it('leaves argv alone when no global option comes first', () => {
    expect(pre(['list', '-v'])).toEqual(['list', '-v'])
    expect(pre(['create', 'vm.cfg', 'memory=512'])).toEqual(['create', 'vm.cfg', 'memory=512'])
  })

  it('moves --root and --backend, in both spellings, after the command', () => {
    expect(pre(['--root', '/r', 'list'])).toEqual(['list', '--root', '/r'])
    expect(pre(['--root=/r', '--backend', 'sim', 'list', 'vm1'])).toEqual(['list', '--root=/r', '--backend', 'sim', 'vm1'])
  })

  it('renames xl\'s one-letter globals so they never mean a command\'s own option', () => {
    expect(pre(['-v', '-v', 'list', '-v'])).toEqual(['list', '--global-verbose=2', '-v'])
    expect(pre(['-vvN', 'create', 'vm.cfg'])).toEqual(['create', '--global-verbose=2', '--global-dry-run', 'vm.cfg'])
    expect(pre(['-f', 'destroy', '0'])).toEqual(['destroy', '--global-force', '0'])
    expect(pre(['-t', '-T', 'list'])).toEqual(['list', '--global-progress-cr', '--global-timestamps'])
  })

  it('puts them after every word of a topic command', () => {
    expect(pre(['--root', 'R', '-v', 'sim', 'checksum', 'vm1'])).toEqual(['sim', 'checksum', '--root', 'R', '--global-verbose=1', 'vm1'])
    expect(pre(['-N', 'nosuch', 'x'])).toEqual(['nosuch', '--global-dry-run', 'x'])
  })

  it('stops at -- and leaves --help and --version to oclif', () => {
    expect(pre(['-v', '--', 'list'])).toEqual(['list', '--global-verbose=1'])
    expect(pre(['--help'])).toEqual(['--help'])
    expect(pre(['--root', 'R', '--version'])).toEqual(['--root', 'R', '--version'])
  })

  it('rejects an option xl does not have as a global one', () => {
    expect(() => pre(['-x', 'list'])).toThrow(UnknownGlobalOption)
    expect(() => pre(['-vx', 'list'])).toThrow('unknown global option')
    expect(() => pre(['--frob', 'list'])).toThrow(UnknownGlobalOption)
  })
})

describe('libxl JSON', () => {
  it('prints as yajl does with beautify on: 4 spaces, empty containers opened and closed on their own lines', () => {
    expect(libxlJson({a: 1, b: {}, c: [], d: ['x', true, null], e: {f: 'g'}})).toBe(
      '{\n    "a": 1,\n    "b": {\n\n    },\n    "c": [\n\n    ],\n    "d": [\n        "x",\n        true,\n        null\n    ],\n    "e": {\n        "f": "g"\n    }\n}\n',
    )
    expect(libxlJson([])).toBe('[\n\n]\n')
  })

  it('escapes strings as yajl_string_encode does', () => {
    expect(libxlJson('a"b\\c\n\t\u0001/é')).toBe('"a\\"b\\\\c\\n\\t\\u0001/é"\n')
  })

  it('leaves out undefined fields and writes non-integers as doubles', () => {
    expect(libxlJson({a: undefined, b: 0.5, c: 2})).toBe('{\n    "b": 0.5,\n    "c": 2\n}\n')
  })
})

describe('error rendering', () => {
  it('uses xl\'s words and status for expected failures', () => {
    expect(renderError(new XlExit('nosuch is an invalid domain identifier (rc=-6)'), {command: 'pause'})).toEqual({
      line: 'nosuch is an invalid domain identifier (rc=-6)',
      exitCode: 1,
    })
    const hv = new HypervisorError('backend-failure', 'the domain process died\nwith a long story')
    expect(renderError(hv, {command: 'create', failureExit: 3})).toEqual({line: 'xl-ts: create: the domain process died with a long story', exitCode: 3})
    const cfg = new ConfigError('syntax', 'vm.cfg', 3, 9, 'unexpected token')
    expect(renderError(cfg, {command: 'create'})).toEqual({
      line: 'vm.cfg:3:9: unexpected token (Failed to parse config: Invalid argument)',
      exitCode: 1,
      hint: 'fix vm.cfg at line 3, column 9: xl.cfg is KEY = VALUE, one a line (or ;), strings in quotes (name="vm1"), lists in [ ... ]',
    })
    const missing = new ConfigError('missing', 'vm.cfg', 0, 0, 'Domain name must be specified.')
    expect(renderError(missing, {command: 'create'})).toEqual({line: 'vm.cfg: Domain name must be specified.', exitCode: 1})
  })

  it('turns an unexpected error into one line with a hint; the stack only with XL_TS_DEBUG=1', () => {
    const err = new TypeError("Cannot read properties of undefined (reading 'x')")
    const r = renderError(err, {command: 'list'})
    expect(r.line).toBe("xl-ts: list: Cannot read properties of undefined (reading 'x') (run with XL_TS_DEBUG=1 for a stack trace)")
    expect(r.exitCode).toBe(1)
    expect(r.stack).toContain('TypeError')

    const written: string[] = []
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk))
      return true
    })
    const saved = process.env.XL_TS_DEBUG
    try {
      delete process.env.XL_TS_DEBUG
      printError(r)
      expect(written).toEqual([`${r.line}\n`])
      written.length = 0
      process.env.XL_TS_DEBUG = '1'
      printError(r)
      expect(written).toHaveLength(2)
      expect(written[1]).toMatch(/^TypeError: .*\n\s+at /)
    } finally {
      spy.mockRestore()
      if (saved === undefined) delete process.env.XL_TS_DEBUG
      else process.env.XL_TS_DEBUG = saved
    }
  })
})

describe('list rows', () => {
  it('are printf("%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f")', () => {
    const state = {running: false, blocked: true, paused: false, shutdown: false, dying: false}
    const d = {domid: 12, name: 'vm1', uuid: '', type: 'pv' as const, maxMemKb: 262144, currentMemKb: 262144, vcpus: 2, pages: 65536, state, cpuTimeNs: 1_234_567_890}
    expect(LIST_HEADER).toBe('Name                                        ID   Mem VCPUs\tState\tTime(s)')
    expect(listRow(d)).toBe('vm1                                         12   256     2     -b----       1.2')
    expect(stateLetters({...state, blocked: false, shutdown: true, shutdownReason: 3})).toBe('---sc-')
    expect(stateLetters({...state, blocked: false, shutdown: true, shutdownReason: 2, dying: true})).toBe('---ssd')
    expect(stateLetters({...state, blocked: false, paused: true})).toBe('--p---')
  })
})

describe('global options through the CLI', () => {
  let root: string

  beforeAll(async () => {
    await ensureBuilt()
  })

  beforeEach(() => {
    root = newHost('glb')
  })

  afterEach(async () => {
    await cleanupHost(root)
  })

  it('node bin/run.js --root R -v list works', async () => {
    const r = await xl(['--root', root, '-v', 'list'], {env: {XL_TS_ROOT: ''}})
    expect(r.exitCode, r.stderr).toBe(0)
    expect(lines(r.stdout)[0]).toBe(LIST_HEADER)
    expect(lines(r.stdout)[1]).toMatch(/^Domain-0 /)
    // The global -v is log verbosity, not list's own -v (no UUID column).
    expect(r.stdout).not.toMatch(/UUID/)
    const own = await xl(['--root', root, 'list', '-v'])
    expect(lines(own.stdout)[0]).toMatch(/UUID {28}Reason-Code\tSecurity Label$/)
    const eq = await xl([`--root=${root}`, '--backend', 'sim', '-vv', 'list'])
    expect(eq.exitCode, eq.stderr).toBe(0)
  })

  it('-vvv logs debug lines on stderr; -T stamps them with date and pid', async () => {
    const r = await xl(['-vvv', '-T', 'list'], {root})
    expect(r.exitCode).toBe(0)
    const logged = lines(r.stderr)
    expect(logged.length).toBeGreaterThan(0)
    for (const l of logged) expect(l).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \[\d+\] xl-ts: debug: /)
    expect(logged.join('\n')).toContain(`root ${root}`)
    const quiet = await xl(['list'], {root})
    expect(quiet.stderr).toBe('')
  })

  it('global options before a topic command: --root R sim checksum', async () => {
    const cfg = writeConfig(root, 'g', {name: 'g1', memory: 64})
    expect((await xl(['--root', root, 'create', '-q', '-p', cfg])).exitCode).toBe(0)
    const r = await xl(['--root', root, '-v', 'sim', 'checksum', 'g1'])
    expect(r.exitCode, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^[0-9a-f]{64}\n$/)
  })

  it('-N (and create -n) prints what would be done and changes nothing', async () => {
    const cfg = writeConfig(root, 'n', {name: 'dry', memory: 64, vcpus: 2})
    for (const args of [['-N', 'create', cfg], ['create', '-n', cfg], ['create', '--dryrun', cfg]]) {
      const r = await xl(args, {root})
      expect(r.exitCode, r.stderr).toBe(0)
      expect(r.stderr).toBe(`Parsing config from ${cfg}\n`)
      const config = JSON.parse(r.stdout) as {c_info: {name: string}; b_info: {max_memkb: number; avail_vcpus: number[]}}
      expect(config.c_info.name).toBe('dry')
      expect(config.b_info).toMatchObject({max_memkb: 65536, avail_vcpus: [0, 1]})
      expect(r.stdout).toMatch(/^\{\n {4}"c_info": \{\n {8}"type": "pv",\n/)
    }
    expect(leftovers(root).folders).toEqual([])

    expect((await xl(['create', '-q', cfg], {root})).exitCode).toBe(0)
    for (const [args, said] of [
      [['-N', 'destroy', 'dry'], /^Dry run: would destroy domain \d+ \(dry\)\n$/],
      [['-N', 'pause', 'dry'], /^Dry run: would pause domain \d+ \(dry\)\n$/],
      [['-N', 'rename', 'dry', 'wet'], /^Dry run: would rename domain \d+ \(dry\) to wet\n$/],
      [['-N', 'shutdown', '-w', 'dry'], /^Dry run: would shut down domain \d+ \(dry\)\n$/],
      [['destroy', '-N', 'dry'], /^Dry run: would destroy domain \d+ \(dry\)\n$/],
    ] as const) {
      const r = await xl([...args], {root})
      expect(r.exitCode, r.stderr).toBe(0)
      expect(r.stdout).toMatch(said)
    }
    const after = await xl(['list', '--json'], {root})
    const dom = (JSON.parse(after.stdout) as {name: string; stateLetters: string}[]).find(d => d.name === 'dry')
    expect(dom?.stateLetters).not.toMatch(/p/)

    // -d prints the config on stderr and creates the domain.
    const debug = await xl(['create', '-d', cfg, 'name="dbg"'], {root})
    expect(debug.exitCode, debug.stderr).toBe(0)
    expect(debug.stdout).toBe('')
    expect(debug.stderr).toMatch(/^Parsing config from .*\n\{\n {4}"c_info": \{\n/)
  })

  it('-N on a command that changes nothing: xl\'s refusal, exit 1', async () => {
    const r = await xl(['-N', 'list'], {root})
    expect(r.exitCode).toBe(1)
    expect(oneErrorLine(r)).toBe('command does not implement -N (dryrun) option')
  })

  it('the global -f is not destroy -f', async () => {
    const r = await xl(['-f', 'destroy', '0'], {root})
    expect(r.exitCode).toBe(1)
    expect(oneErrorLine(r)).toMatch(/^Not destroying domain 0; use -f to force\./)
  })

  it('a command with no use for the global options runs with them ignored (stream inspect, autocomplete)', async () => {
    const file = path.join(root, 'tiny.bin')
    fs.writeFileSync(file, 'xy')
    const r = await xl(['-v', '--root', root, 'stream', 'inspect', file], {root})
    expect(r.exitCode).toBe(1)
    expect(r.stdout).toContain('too short for any stream format')
    expect(r.stderr).not.toContain('Nonexistent flag')
  })

  it('an unknown global option or command: xl\'s message, exit 1', async () => {
    const g = await xl(['-x', 'list'], {root})
    expect(g.exitCode).toBe(1)
    expect(oneErrorLine(g)).toBe('unknown global option')
    const c = await xl(['frobnicate', 'vm1'], {root})
    expect(c.exitCode).toBe(1)
    expect(oneErrorLine(c)).toBe('command not implemented')
  })

  it('a reader that goes away early ends the output quietly (list | head -1)', async () => {
    const r = await execa('bash', ['-c', 'node "$1" --root "$2" list | head -1; echo "rc=${PIPESTATUS[0]}"', 'bash', BIN, root], {
      env: {XL_TS_BACKEND: 'sim'},
      reject: false,
    })
    expect(r.stdout).toBe(`${LIST_HEADER}\nrc=0`)
    expect(r.stderr).toBe('')
  })

  it('--help shows the commands with their summaries', async () => {
    const r = await xl(['--help'])
    expect(r.exitCode).toBe(0)
    for (const cmd of ['create', 'destroy', 'domid', 'domname', 'list', 'pause', 'rename', 'shutdown', 'unpause']) {
      expect(r.stdout).toMatch(new RegExp(`^ {2}${cmd} +\\S`, 'm'))
    }
    const h = await xl(['create', '--help'])
    expect(h.exitCode).toBe(0)
    expect(h.stdout).toMatch(/EXAMPLES/)
  })
})
