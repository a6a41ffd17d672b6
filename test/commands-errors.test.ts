/**
 * Bad input to every domain command, through the built CLI: each gives xl's exit status and
 * exactly one error line on stderr (xl's words where xl has them), followed by one
 * `xl-ts: hint: ...` line where errors.ts has a hint for it, never a stack trace, and changes
 * nothing on the host.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {afterEach, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {cleanupHost, ensureBuilt, lines, newHost, writeConfig, xl, type Run} from './support/cli.js'

let root: string
let cfg: string

beforeAll(async () => {
  await ensureBuilt()
})

beforeEach(async () => {
  root = newHost('err')
  cfg = writeConfig(root, 'vm', {name: 'err-vm', memory: 64, vcpus: 1})
})

afterEach(async () => {
  await cleanupHost(root)
})

const HINT_USAGE = (cmd: string) => `xl-ts: hint: see 'xl-ts ${cmd} --help'`
const HINT_DOMAIN = "xl-ts: hint: 'xl-ts list' shows the domains on this host"
const HINT_CONFIG = /^xl-ts: hint: (fix .* at line \d+, column \d+|key=value setting \d+, column \d+): /

/**
 * The error line of a failed run, after checking the rest of stderr: nothing more when `hint` is
 * undefined, else exactly that hint line; never a stack trace.
 */
function errorLine(r: Run, hint: string | RegExp | undefined, what = ''): string {
  const l = lines(r.stderr)
  expect(r.stderr, what).not.toMatch(/^\s+at /m)
  expect(l, `${what}\nstderr: ${r.stderr}`).toHaveLength(hint === undefined ? 1 : 2)
  if (typeof hint === 'string') expect(l[1], what).toBe(hint)
  else if (hint) expect(l[1], what).toMatch(hint)
  return l[0] as string
}

/** Runs the CLI on this test's host and checks the exit status, the error line and its hint (if any). */
async function fails(args: string[], exit: number, line: string | RegExp, hint?: string | RegExp): Promise<void> {
  const r = await xl(args, {root})
  const what = `xl-ts ${args.join(' ')}`
  expect(r.exitCode, `${what}\nstderr: ${r.stderr}`).toBe(exit)
  const got = errorLine(r, hint, what)
  if (typeof line === 'string') expect(got, what).toBe(line)
  else expect(got, what).toMatch(line)
  expect(r.stdout, what).toBe('')
}

async function names(): Promise<string[]> {
  const r = await xl(['list', '--json'], {root})
  expect(r.exitCode).toBe(0)
  return (JSON.parse(r.stdout) as {name: string}[]).map(d => d.name)
}

async function createVm(): Promise<void> {
  const r = await xl(['create', '-q', cfg], {root})
  expect(r.exitCode, r.stderr).toBe(0)
}

describe('unknown domains', () => {
  it('by name: "<q> is an invalid domain identifier (rc=-6)", exit 1, for every command', async () => {
    await createVm()
    const bad = 'no-such-vm'
    const invalid = `${bad} is an invalid domain identifier (rc=-6)`
    const each = [
      ['pause', bad],
      ['unpause', bad],
      ['destroy', bad],
      ['rename', bad, 'other'],
      ['shutdown', bad],
      ['shutdown', '-w', bad],
      ['list', bad],
      ['list', 'err-vm', bad],
      ['sim', 'checksum', bad],
    ]
    await Promise.all(each.map(args => fails(args, 1, invalid, HINT_DOMAIN)))
    await fails(['domid', bad], 1, `Can't get domid of domain name '${bad}', maybe this domain does not exist.`, HINT_DOMAIN)
    await fails(['domname', bad], 1, 'Invalid domain id.', HINT_DOMAIN)
    expect(await names()).toEqual(['Domain-0', 'err-vm'])
  })

  it('by id: each command says what xl says for a domid that is not there, exit 1', async () => {
    await createVm()
    const id = '4242'
    const notFound = `${id} is an invalid domain identifier (rc=-21)`
    const each = [['pause', id], ['unpause', id], ['rename', id, 'other'], ['shutdown', id], ['sim', 'checksum', id]]
    await Promise.all(each.map(args => fails(args, 1, notFound, HINT_DOMAIN)))
    await fails(['destroy', id], 1, 'destroy failed (rc=-21)', HINT_DOMAIN)
    await fails(['list', id], 1, `Error: Domain '${id}' does not exist.`, HINT_DOMAIN)
    await fails(['domname', id], 1, `Can't get domain name of domain id '${id}', maybe this domain does not exist.`, HINT_DOMAIN)
    // domid takes its argument as a name, even all digits.
    await fails(['domid', '1'], 1, `Can't get domid of domain name '1', maybe this domain does not exist.`, HINT_DOMAIN)
    expect(await names()).toEqual(['Domain-0', 'err-vm'])
  })

  it('Domain-0 is not destroyed without -f, and not by the sim with it', async () => {
    const refused =
      'Not destroying domain 0; use -f to force. This can only be done when using a disaggregated hardware domain and toolstack.'
    await fails(['destroy', '0'], 1, refused)
    await fails(['destroy', 'Domain-0'], 1, refused)
    await fails(['destroy', '-f', '0'], 1, /^destroy failed \(rc=-\d+\): domain 0 cannot be destroyed/)
    await fails(['rename', 'Domain-0', 'dom0'], 1, /^Can't rename domain 'Domain-0': /)
  })
})

describe('names are unique on a host', () => {
  it('create of a name in use: libxl\'s message, exit 3 (-ERROR_FAIL)', async () => {
    await createVm()
    await fails(['create', '-q', cfg], 3, 'Domain with name "err-vm" already exists.')
    // Without -q, xl's "Parsing config from" comes first, then the one error line.
    const r = await xl(['create', cfg], {root})
    expect(r.exitCode).toBe(3)
    expect(r.stderr).toBe(`Parsing config from ${cfg}\nDomain with name "err-vm" already exists.\n`)
    // Another name through key=value is fine.
    const other = await xl(['create', '-q', cfg, 'name="err-vm2"'], {root})
    expect(other.exitCode, other.stderr).toBe(0)
    expect(await names()).toEqual(['Domain-0', 'err-vm', 'err-vm2'])
  })

  it('rename to a name in use: "Can\'t rename domain", exit 1; the domain keeps its name', async () => {
    await createVm()
    expect((await xl(['create', '-q', cfg, 'name="second"'], {root})).exitCode).toBe(0)
    await fails(['rename', 'err-vm', 'second'], 1, `Can't rename domain 'err-vm': Domain with name "second" already exists.`)
    await fails(['rename', 'second', 'Domain-0'], 1, `Can't rename domain 'second': Domain with name "Domain-0" already exists.`)
    expect(await names()).toEqual(['Domain-0', 'err-vm', 'second'])
    // Renaming to its own name is no change, as libxl allows it.
    expect((await xl(['rename', 'err-vm', 'err-vm'], {root})).exitCode).toBe(0)
  })
})

describe('config files', () => {
  it('a missing or unreadable config file: "Failed to read config file", exit 3', async () => {
    const missing = path.join(root, 'missing.cfg')
    await fails(['create', missing], 3, `Failed to read config file: ${missing}: No such file or directory`)
    await fails(['create', '-f', root], 3, `Failed to read config file: ${root}: Is a directory`)
    expect(await names()).toEqual(['Domain-0'])
  })

  it('no config file at all: exit 6 (-ERROR_INVAL)', async () => {
    await fails(['create'], 6, 'Config file not specified and none in save file')
    await fails(['create', 'memory=64'], 6, 'Config file not specified and none in save file')
  })

  it('a syntax error: file:line:column, "Failed to parse config: Invalid argument", exit 1', async () => {
    const bad = path.join(root, 'bad.cfg')
    fs.writeFileSync(bad, 'name = "x"\nmemory = 25 6\n')
    await fails(['create', '-q', bad], 1, new RegExp(`^${bad}:2:13: .*\\(Failed to parse config: Invalid argument\\)$`), `xl-ts: hint: fix ${bad} at line 2, column 13: xl.cfg is KEY = VALUE, one a line (or ;), strings in quotes (name="vm1"), lists in [ ... ]`)
    const unterminated = path.join(root, 'unterminated.cfg')
    fs.writeFileSync(unterminated, 'name = "x\n')
    await fails(['create', '-q', unterminated], 1, new RegExp(`^${unterminated}:1:\\d+: .*\\(Failed to parse config: Invalid argument\\)$`), HINT_CONFIG)
    // With "Parsing config from" before it, as xl prints it.
    const r = await xl(['create', bad], {root})
    expect(r.exitCode).toBe(1)
    expect(r.stderr.split('\n')[0]).toBe(`Parsing config from ${bad}`)
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(3)
    expect(r.stderr.trimEnd().split('\n')[2]).toMatch(HINT_CONFIG)
    expect(await names()).toEqual(['Domain-0'])
  })

  it('a config without a name: "Domain name must be specified.", exit 1', async () => {
    const noName = writeConfig(root, 'noname', {memory: 64})
    await fails(['create', '-q', noName], 1, `${noName}: Domain name must be specified.`)
  })

  it('bad key=value settings: file "command line", line and column, exit 1', async () => {
    await fails(['create', '-q', cfg, 'memory=abc'], 1, /^command line:1:8: .*\(Failed to parse config: Invalid argument\)$/, /^xl-ts: hint: key=value setting 1, column 8: /)
    await fails(['create', '-q', cfg, 'vcpus=1', 'memory=12 3'], 1, /^command line:2:\d+: /, /^xl-ts: hint: key=value setting 2, column \d+: /)
    // Not a syntax error (a string where a number goes): the line says it all, no hint.
    await fails(['create', '-q', cfg, 'memory="lots"'], 1, /^command line:1:8: /)
    await fails(['create', '-q', cfg, 'type="xyz"'], 1, /^command line:1:6: Invalid domain type 'xyz'/)
    expect(await names()).toEqual(['Domain-0'])
  })

  it('a second config file is bad usage, exit 2', async () => {
    await fails(['create', '-q', cfg, 'other.cfg'], 2, /^xl-ts: create: unexpected argument 'other.cfg'/, HINT_USAGE('create'))
  })
})

describe('usage', () => {
  it('an unknown option: "option `x\' not supported.", exit 2, for every command', async () => {
    const each = [
      ['create', '-x', cfg],
      ['create', cfg, '--frobnicate'],
      ['list', '-x'],
      ['destroy', '-x', 'err-vm'],
      ['pause', '-p', 'err-vm'],
      ['unpause', '--all', 'err-vm'],
      ['rename', '-x', 'a', 'b'],
      ['shutdown', '-x', 'err-vm'],
      ['domid', '-x', 'err-vm'],
      ['domname', '-x', '1'],
      ['sim', 'checksum', '-x', 'err-vm'],
    ]
    await Promise.all(
      each.map(args => {
        const flag = args.find(a => a.startsWith('-')) as string
        const cmd = args[0] === 'sim' ? 'sim checksum' : (args[0] as string)
        return fails(args, 2, `option \`${flag.startsWith('--') ? flag : flag.slice(1)}' not supported.`, HINT_USAGE(cmd))
      }),
    )
  })

  it('a missing argument: "\'xl-ts CMD\' requires at least N argument(s).", exit 2', async () => {
    const each = ['destroy', 'pause', 'unpause', 'domid', 'domname', 'sim checksum']
    await Promise.all(each.map(cmd => fails(cmd.split(' '), 2, `'xl-ts ${cmd}' requires at least 1 argument.`, HINT_USAGE(cmd))))
    await fails(['rename'], 2, `'xl-ts rename' requires at least 2 arguments.`, HINT_USAGE('rename'))
    await fails(['rename', 'err-vm'], 2, `'xl-ts rename' requires at least 2 arguments.`, HINT_USAGE('rename'))
  })

  it('too many arguments or a bad option value: exit 2', async () => {
    await fails(['pause', 'a', 'b'], 2, 'xl-ts: pause: unexpected argument: b', HINT_USAGE('pause'))
    await fails(['list', '--backend', 'vmware'], 2, /^xl-ts: list: Expected --backend=vmware to be one of: sim, xen$/, HINT_USAGE('list'))
  })

  it('shutdown without a domain or -a: exit 1, as xl', async () => {
    await fails(['shutdown'], 1, 'You must specify -a or a domain id.')
    await fails(['shutdown', '-w'], 1, 'You must specify -a or a domain id.')
  })

  it('the back end that is not there yet: one line and how to pick the simulated host, exit 1', async () => {
    await fails(['list', '--backend', 'xen'], 1, /^xl-ts: list: .*xen back end is not supported/, /^xl-ts: hint: XL_TS_BACKEND=sim \(or --backend sim\) /)
  })
})
