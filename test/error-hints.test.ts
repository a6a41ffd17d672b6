/**
 * The hint line: where errors.ts has something useful to say about a failure, a second stderr line
 * `xl-ts: hint: <what to do>` follows the error line, which stays exactly what it was (xl's words
 * where xl has them). Each hint case through the built CLI, a few failures that get none, and the
 * table itself.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

import {afterEach, beforeAll, beforeEach, describe, expect, it, vi} from 'vitest'

import {HINTS, hintKind, printError, renderError, XlExit, type HintKind} from '../src/cli/errors.js'
import {DeviceModelError} from '../src/toolstack/device-model/errors.js'
import {HypervisorError} from '../src/toolstack/hypervisor/errors.js'
import {BIN, cleanupHost, ensureBuilt, leftovers, lines, newHost, writeConfig, xl, type Run, type RunOptions} from './support/cli.js'

const HINT = 'xl-ts: hint: '

let root: string

beforeAll(async () => {
  await ensureBuilt()
})

beforeEach(() => {
  root = newHost('hint')
})

afterEach(async () => {
  await cleanupHost(root)
})

/** stderr as [error line, hint line], after checking the exit status, that there is nothing else and no stack trace. */
async function run(args: string[], exit: number, opts: RunOptions = {}): Promise<[string, string | undefined]> {
  const r: Run = await xl(args, {root, ...opts})
  const what = `xl-ts ${args.join(' ')}\nstderr: ${r.stderr}`
  expect(r.exitCode, what).toBe(exit)
  expect(r.stderr, what).not.toMatch(/^\s+at /m)
  const l = lines(r.stderr)
  expect(l.length, what).toBeLessThanOrEqual(2)
  return [l[0] as string, l[1]]
}

/** This test's host and its config files, for the cases to name. */
interface Host {
  root: string
  /** name = "x", then `memory = 25 6`: a syntax error at 2:13. */
  bad: string
  /** A good config (name good, 64 MiB). */
  good: string
  /** A guest whose first vif wants colo-compare: its domain starts a device model. */
  colo: string
}

function host(): Host {
  const bad = path.join(root, 'bad.cfg')
  fs.writeFileSync(bad, 'name = "x"\nmemory = 25 6\n')
  const colo = writeConfig(root, 'colo', {name: 'colo', type: 'hvm', memory: 64})
  fs.appendFileSync(colo, 'vif = [ "mac=00:16:3e:00:00:01,colo_sock_compare_sec_in_ip=127.0.0.1,colo_sock_compare_sec_in_port=9399" ]\n')
  return {root, bad, good: writeConfig(root, 'good', {name: 'good', memory: 64}), colo}
}

interface Case {
  kind: HintKind
  args: string[]
  exit: number
  /** The error line, as it was before hints. */
  line: string | RegExp
  hint: string
  opts?: RunOptions
}

const USAGE_HELP = (cmd: string) => `${HINT}see 'xl-ts ${cmd} --help'`
const LIST_DOMAINS = `${HINT}'xl-ts list' shows the domains on this host`
const HOST_FOLDER = `${HINT}pick another state folder for the simulated host, short and writable: --root DIR or XL_TS_ROOT=DIR (e.g. /tmp/xl-ts-a; one folder is one host)`
const NO_XEN = `${HINT}XL_TS_BACKEND=sim (or --backend sim) runs on a simulated host; without either, xl-ts picks it wherever /dev/xen/privcmd is missing`
const NO_QEMU = `${HINT}install qemu-system-x86 (bash scripts/setup), or set XL_TS_QEMU to a qemu-system-x86_64`
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** Every hint case: a name, and the case on this test's host. */
const CASES: [string, (h: Host) => Case][] = [
  // Bad usage, exit 2: the command's help.
  ['usage: a missing argument', () => ({kind: 'usage', args: ['pause'], exit: 2, line: "'xl-ts pause' requires at least 1 argument.", hint: USAGE_HELP('pause')})],
  ['usage: an unknown option of a topic command', () => ({kind: 'usage', args: ['sim', 'checksum', '-x', 'vm'], exit: 2, line: "option `x' not supported.", hint: USAGE_HELP('sim checksum')})],
  ['usage: a bad option value', () => ({kind: 'usage', args: ['migrate', '--timeout', 'soon', 'vm', 'h'], exit: 2, line: 'xl-ts: migrate: --timeout must be a positive number, not "soon"', hint: USAGE_HELP('migrate')})],
  ['usage: a command\'s own exit 2', () => ({kind: 'usage', args: ['remus', '-i', 'x', 'vm', 'h'], exit: 2, line: 'xl-ts: remus: -i takes milliseconds, not "x"', hint: USAGE_HELP('remus')})],
  // Not an XlCommand: rendered by main.ts, through the same errors.ts.
  ['usage: stream inspect', () => ({kind: 'usage', args: ['stream', 'inspect', '--bogus', 'f'], exit: 2, line: 'xl-ts: stream inspect: Nonexistent flag: --bogus', hint: USAGE_HELP('stream inspect')})],
  // An unknown domain: through findDomain, and in xl's own words of domid and domname.
  ['unknown domain: by name', () => ({kind: 'unknown-domain', args: ['pause', 'nosuch'], exit: 1, line: 'nosuch is an invalid domain identifier (rc=-6)', hint: LIST_DOMAINS})],
  ['unknown domain: destroy by id', () => ({kind: 'unknown-domain', args: ['destroy', '4242'], exit: 1, line: 'destroy failed (rc=-21)', hint: LIST_DOMAINS})],
  ['unknown domain: list by id', () => ({kind: 'unknown-domain', args: ['list', '4242'], exit: 1, line: "Error: Domain '4242' does not exist.", hint: LIST_DOMAINS})],
  ['unknown domain: migrate', () => ({kind: 'unknown-domain', args: ['migrate', 'nosuch', 'h'], exit: 1, line: 'nosuch is an invalid domain identifier (rc=-6)', hint: LIST_DOMAINS})],
  ['unknown domain: domid', () => ({kind: 'unknown-domain', args: ['domid', 'nosuch'], exit: 1, line: "Can't get domid of domain name 'nosuch', maybe this domain does not exist.", hint: LIST_DOMAINS})],
  ['unknown domain: domname', () => ({kind: 'unknown-domain', args: ['domname', '4242'], exit: 1, line: "Can't get domain name of domain id '4242', maybe this domain does not exist.", hint: LIST_DOMAINS})],
  // The sim host's state folder.
  [
    'host folder: too long for its sockets',
    h => {
      const long = path.join(h.root, 'x'.repeat(100))
      return {
        kind: 'host-folder',
        args: ['list'],
        exit: 1,
        opts: {root: long},
        line: new RegExp(`^xl-ts: list: state folder ${esc(long)} is too long: its control sockets \\(${esc(long)}/domains/32751/ctl\\) would take \\d+ bytes, a unix socket path holds at most 107; use a shorter --root / XL_TS_ROOT$`),
        hint: HOST_FOLDER,
      }
    },
  ],
  [
    'host folder: not a folder',
    h => ({
      kind: 'host-folder',
      args: ['list'],
      exit: 1,
      opts: {root: h.good},
      line: `xl-ts: list: cannot use ${h.good} as the simulated host's state folder: EEXIST: file already exists, mkdir '${h.good}'`,
      hint: HOST_FOLDER,
    }),
  ],
  [
    'host folder: not a simulated host\'s',
    h => {
      const other = path.join(h.root, 'other')
      fs.mkdirSync(other)
      fs.writeFileSync(path.join(other, 'host.json'), '{}\n')
      return {
        kind: 'host-folder',
        args: ['list'],
        exit: 1,
        opts: {root: other},
        line: `xl-ts: list: ${other}/host.json is not a simulated host's identity (delete it to start afresh)`,
        hint: HOST_FOLDER,
      }
    },
  ],
  // The xen back end, chosen by flag or by the environment.
  ['no xen: --backend xen', () => ({kind: 'no-xen', args: ['list', '--backend', 'xen'], exit: 1, line: 'xl-ts: list: the xen back end is not supported yet: use --backend sim (or XL_TS_BACKEND=sim)', hint: NO_XEN})],
  [
    'no xen: XL_TS_BACKEND=xen',
    () => ({
      kind: 'no-xen',
      args: ['domid', 'vm'],
      exit: 1,
      opts: {env: {XL_TS_BACKEND: 'xen'}},
      line: 'xl-ts: domid: the xen back end is not supported yet: use --backend sim (or XL_TS_BACKEND=sim)',
      hint: NO_XEN,
    }),
  ],
  // A config parse error: where, once more, and the syntax.
  [
    'config syntax: a file',
    h => ({
      kind: 'config-syntax',
      args: ['create', '-q', h.bad],
      exit: 1,
      line: `${h.bad}:2:13: junk after the value of 'memory': found the number 6; end a setting with a newline or ';' (Failed to parse config: Invalid argument)`,
      hint: `${HINT}fix ${h.bad} at line 2, column 13: xl.cfg is KEY = VALUE, one a line (or ;), strings in quotes (name="vm1"), lists in [ ... ]`,
    }),
  ],
  [
    'config syntax: a key=value argument',
    h => ({
      kind: 'config-syntax',
      args: ['create', '-q', h.good, 'vcpus=1', 'memory=abc'],
      exit: 1,
      line: /^command line:2:8: .*'abc' is not quoted.* \(Failed to parse config: Invalid argument\)$/,
      hint: `${HINT}key=value setting 2, column 8: each is an xl.cfg line: strings in quotes (name="vm1"), lists in [ ... ]`,
    }),
  ],
  // A device model without a QEMU (libxl's start of it fails; create destroys the domain, -ERROR_FAIL).
  [
    'no QEMU: a guest that needs a device model',
    h => {
      const qemu = path.join(h.root, 'no-such-qemu')
      return {
        kind: 'no-qemu',
        args: ['create', '-q', h.colo],
        exit: 3,
        opts: {env: {XL_TS_QEMU: qemu}},
        line: new RegExp(`^xl-ts: error: domain colo \\(domid \\d+\\): cannot start the device model: ${esc(qemu)} not found \\(PATH or XL_TS_QEMU\\); Debian's qemu-system-x86 provides it \\(scripts/setup installs it\\)$`),
        hint: NO_QEMU,
      }
    },
  ],
]

describe('hints through the CLI: the error line as before, then the hint', () => {
  it('covers every kind in the table', () => {
    const h = host()
    expect(new Set(CASES.map(([, c]) => c(h).kind))).toEqual(new Set(Object.keys(HINTS)))
  })

  it.each(CASES)('%s', async (_name, make) => {
    const c = make(host())
    const [line, hint] = await run(c.args, c.exit, c.opts)
    if (typeof c.line === 'string') expect(line).toBe(c.line)
    else expect(line).toMatch(c.line)
    expect(hint).toBe(c.hint)
  })

  it('a guest that could not start is not left behind', async () => {
    const h = host()
    await run(['create', '-q', h.colo], 3, {env: {XL_TS_QEMU: path.join(h.root, 'no-such-qemu')}})
    expect(leftovers(h.root)).toEqual({folders: [], shm: [], processes: []})
  })
})

describe('failures without a hint: one line, as before', () => {
  it.each([
    [['shutdown'], 1, 'You must specify -a or a domain id.'],
    [['-N', 'list'], 1, 'command does not implement -N (dryrun) option'],
    [['destroy', '0'], 1, /^Not destroying domain 0; use -f to force\./],
    [['create', '/nonexistent/vm.cfg'], 3, 'Failed to read config file: /nonexistent/vm.cfg: No such file or directory'],
    [['create', '-q', '@good', 'type="xyz"'], 1, /^command line:1:6: Invalid domain type 'xyz'/],
    // Printed before any command runs, by main.ts, as xl words them.
    [['-x', 'list'], 1, 'unknown global option'],
    [['frobnicate'], 1, 'command not implemented'],
  ] as const)('xl-ts %j', async (args, exit, expected) => {
    const h = host()
    const [line, hint] = await run(args.map(a => (a === '@good' ? h.good : a)), exit)
    if (typeof expected === 'string') expect(line).toBe(expected)
    else expect(line).toMatch(expected)
    expect(hint).toBeUndefined()
  })

  it('the lines of a failed migration are the command\'s own: no hint after them', async () => {
    const cfg = writeConfig(root, 'pv', {name: 'pv', memory: 64})
    expect((await xl(['create', '-q', cfg], {root})).exitCode).toBe(0)
    // A PV guest cannot be saved here: xl's lines, "Migration failed, resuming at sender.", exit 1.
    const other = newHost('hint2')
    try {
      const r = await xl(['migrate', '-s', '', 'pv', `XL_TS_ROOT=${other} exec ${process.execPath} ${BIN} migrate-receive`], {root})
      expect(r.exitCode, r.stderr).toBe(1)
      expect(lines(r.stderr).at(-1)).toBe('Migration failed, resuming at sender.')
      expect(r.stderr).not.toContain(HINT)
    } finally {
      await cleanupHost(other)
    }
  })
})

describe('the hint table', () => {
  it('classifies errors by class and code', () => {
    const enoent = Object.assign(new Error('spawn qemu-system-x86_64 ENOENT'), {code: 'ENOENT'})
    expect(hintKind(new DeviceModelError('spawn', '/f', 'cannot start qemu', {cause: enoent}), 1)).toBe('no-qemu')
    expect(hintKind(new DeviceModelError('not-found', '/f', 'qemu-system-x86_64 not found'), 1)).toBe('no-qemu')
    expect(hintKind(new DeviceModelError('timeout', '/f', 'QEMU did not answer'), 1)).toBeUndefined()
    expect(hintKind(new DeviceModelError('spawn', '/f', 'cannot start qemu', {cause: Object.assign(new Error('EACCES'), {code: 'EACCES'})}), 1)).toBeUndefined()
    expect(hintKind(new HypervisorError('no-such-domain', 'domain 7 does not exist', 7), 1)).toBe('unknown-domain')
    expect(hintKind(new HypervisorError('backend-failure', 'the domain process died'), 1)).toBeUndefined()
    expect(hintKind(new XlExit('anything', 2), 2)).toBe('usage')
    expect(hintKind(new XlExit('', 1), 1)).toBeUndefined()
  })

  it('prints the hint as a second line; nothing for an explicit exit or an unexpected error', () => {
    const written: string[] = []
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk))
      return true
    })
    try {
      printError(renderError(new XlExit("'xl-ts pause' requires at least 1 argument.", 2), {command: 'pause'}))
      printError(renderError(new XlExit('', 2), {command: 'pause'}))
      printError(renderError(new TypeError('boom'), {command: 'list'}))
    } finally {
      spy.mockRestore()
    }
    expect(written.join('')).toBe(
      "'xl-ts pause' requires at least 1 argument.\nxl-ts: hint: see 'xl-ts pause --help'\n" +
        'xl-ts: list: boom (run with XL_TS_DEBUG=1 for a stack trace)\n',
    )
  })
})
