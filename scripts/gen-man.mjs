#!/usr/bin/env node
/**
 * Writes the roff man pages from the oclif command definitions, so they cannot drift from the
 * commands: man/xl-ts.1 (the program, its global options, the list of commands, the environment)
 * and man/xl-ts-<command id, spaces as dashes>.1 for every command (NAME from its summary,
 * SYNOPSIS from its flags and args, DESCRIPTION from its description, OPTIONS from every flag that
 * is not hidden, ARGUMENTS, EXAMPLES with the templates filled in, EXIT STATUS from the
 * description's "Exit status:" paragraph).
 *
 *   node scripts/gen-man.mjs             # writes man/, and package.json's "man" list
 *   node scripts/gen-man.mjs --out DIR   # writes DIR only (test/man-pages.test.ts compares it to man/)
 *
 * `npm run man` builds first: the commands are read from tsc's output (dist/commands/**), the
 * global options from dist/cli/base-command.js. The output depends on nothing but those and
 * package.json (name, version, description, oclif.bin): no date, so regenerating gives the same
 * bytes. Pages in the output folder that no command writes any more (xl-ts-*.1) are removed.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const DIST = path.join(ROOT, 'dist')
const PJSON = path.join(ROOT, 'package.json')
const MAN_DIR = path.join(ROOT, 'man')

// ---------------------------------------------------------------------------------------------------
// roff

/** Text for a roff text line or macro argument: backslashes, hyphens (minus signs, so option
 * names copy and paste), anything outside ASCII as a \[uXXXX] escape. */
function esc(text) {
  let out = ''
  for (const ch of String(text)) {
    const cp = ch.codePointAt(0)
    if (ch === '\\') out += '\\e'
    else if (ch === '-') out += '\\-'
    else if (ch === '\t') out += ' '
    else if (cp < 0x20) continue
    else if (cp > 0x7e) out += `\\[u${cp.toString(16).toUpperCase().padStart(4, '0')}]`
    else out += ch
  }
  return out
}

/** One text line: escaped, and kept from being read as a request (leading . or '). */
function line(text) {
  const e = esc(text)
  return /^[.']/.test(e) ? `\\&${e}` : e
}

/** A quoted macro argument. */
function arg(text) {
  return `"${esc(text).replaceAll('"', '\\(dq')}"`
}

const bold = (text) => `\\fB${esc(text)}\\fR`
const ital = (text) => `\\fI${esc(text)}\\fR`

/** Paragraphs (separated by blank lines) as roff: filled text, or literal when indented. */
function paragraphs(text, first = '.PP') {
  const out = []
  const paras = String(text)
    .replace(/\r\n?/g, '\n')
    .split(/\n[ \t]*\n/)
    .map((p) => p.replace(/^\n+|\s+$/g, ''))
    .filter((p) => p.trim() !== '')
  for (const [i, p] of paras.entries()) {
    if (i > 0 || first) out.push(i > 0 ? '.PP' : first)
    const lines = p.split('\n')
    if (lines.some((l) => /^\s/.test(l))) {
      out.push('.RS 4', '.nf', ...lines.map((l) => line(l.replace(/\s+$/, ''))), '.fi', '.RE')
    } else {
      out.push(...lines.map((l) => line(l.trim())))
    }
  }
  return out
}

/** The header line, with no date: the same bytes every time. */
function th(title, pkg) {
  // No hyphenated words (option and command names stay whole; HY is what groff's .YS restores),
  // ragged right.
  return `.TH ${arg(title.toUpperCase())} 1 "" ${arg(`${pkg.bin} ${pkg.version}`)} ${arg(`${pkg.bin} manual`)}\n.nr HY 0\n.nh\n.ad l`
}

/** "Migrate a domain to another host." -> "migrate a domain to another host" (NAME lines). */
function nameText(summary) {
  const s = String(summary ?? '').trim().replace(/\.$/, '')
  return /^[A-Z][a-z]/.test(s) ? s[0].toLowerCase() + s.slice(1) : s
}

// ---------------------------------------------------------------------------------------------------
// The commands

/** Every command of this package, as oclif finds them: dist/commands/<a>/<b>.js is `a b`. */
async function loadCommands(topicSeparator) {
  const dir = path.join(DIST, 'commands')
  if (!fs.existsSync(dir)) throw new Error(`${dir} not found: run "npm run build" first (or "npm run man")`)
  const files = []
  const walk = (d) => {
    for (const e of fs.readdirSync(d, {withFileTypes: true})) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (/\.js$/.test(e.name) && !/\.d\.js$/.test(e.name)) files.push(p)
    }
  }
  walk(dir)
  const commands = []
  for (const file of files) {
    const mod = await import(pathToFileURL(file).href)
    const C = mod.default
    if (typeof C !== 'function' || typeof C.run !== 'function') continue
    let parts = path.relative(dir, file).replace(/\.js$/, '').split(path.sep)
    if (parts.at(-1) === 'index') parts = parts.slice(0, -1)
    if (parts.length === 0) continue
    const id = C.id ? String(C.id).replaceAll(':', topicSeparator) : parts.join(topicSeparator)
    if (C.hidden) continue
    commands.push({id, C})
  }
  return commands.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}

/** A command's flags as oclif merges them ({...baseFlags, ...flags}), without the hidden ones. */
function visibleFlags(C) {
  return Object.entries({...(C.baseFlags ?? {}), ...(C.flags ?? {})})
    .filter(([, f]) => !f.hidden)
    .map(([name, f]) => ({name, ...f}))
}

/** oclif's help template fields, as the examples and descriptions use them. */
function fill(text, bin, id) {
  const out = String(text)
    .replace(/<%=\s*config\.bin\s*%>/g, bin)
    .replace(/<%=\s*command\.id\s*%>/g, id)
  if (out.includes('<%')) throw new Error(`${id}: a help template gen-man.mjs cannot fill: ${out}`)
  return out
}

/** The value a flag takes, for the synopsis and OPTIONS: helpValue, else its options, else VALUE. */
function flagValue(f) {
  if (f.type === 'boolean') return undefined
  if (f.helpValue) return ital(f.helpValue)
  if (Array.isArray(f.options) && f.options.length > 0) return f.options.map(ital).join('|')
  return ital('VALUE')
}

/** `\fB\-s\fR, \fB\-\-ssh\-command\fR \fISSHCMD\fR` (and `, \fB\-\-no\-squash\fR` for allowNo). */
function flagTag(f) {
  const names = []
  if (f.char) names.push(bold(`-${f.char}`))
  names.push(bold(`--${f.name}`))
  if (f.type === 'boolean' && f.allowNo) names.push(bold(`--no-${f.name}`))
  const value = flagValue(f)
  return names.join(', ') + (value ? ` ${value}` : '')
}

/** `[\fB\-s\fR\ \fISSHCMD\fR]` for the synopsis: the short name when there is one. */
function flagUsage(f) {
  const name = f.char ? `-${f.char}` : f.type === 'boolean' && f.allowNo ? `--[no-]${f.name}` : `--${f.name}`
  const value = flagValue(f)
  return `[${bold(name)}${value ? `\\ ${value}` : ''}]`
}

function flagText(f, all) {
  const out = []
  const summary = f.summary ?? f.description ?? ''
  if (!summary) throw new Error(`flag --${f.name} has neither summary nor description`)
  out.push(...paragraphs(summary, ''))
  if (f.summary && f.description) out.push(...paragraphs(f.description).map((l) => (l === '.PP' ? '.IP' : l)))
  const notes = []
  if (f.required) notes.push('Required.')
  if (Array.isArray(f.options) && f.options.length > 0 && f.helpValue) notes.push(`One of: ${f.options.join(', ')}.`)
  if (f.default !== undefined && typeof f.default !== 'function') {
    if (f.type === 'boolean') {
      if (f.default === true) notes.push(`Default: --${f.name}.`)
    } else {
      notes.push(`Default: ${Array.isArray(f.default) ? f.default.join(', ') : f.default}.`)
    }
  }
  if (f.env) notes.push(`Environment: ${f.env}.`)
  const others = (names) =>
    names
      .map((n) => all.find((o) => o.name === n))
      .filter(Boolean)
      .map((o) => (o.char ? `-${o.char}/--${o.name}` : `--${o.name}`))
      .join(', ')
  if (Array.isArray(f.exclusive) && f.exclusive.length > 0) notes.push(`Not with ${others(f.exclusive)}.`)
  if (Array.isArray(f.dependsOn) && f.dependsOn.length > 0) notes.push(`Needs ${others(f.dependsOn)}.`)
  if (notes.length > 0) out.push('.br', line(notes.join(' ')))
  return out
}

function argName(name) {
  return name.toUpperCase()
}

// ---------------------------------------------------------------------------------------------------
// Pages

function commandPage({id, C}, pkg, pageName, globalLetters) {
  const bin = pkg.bin
  const flags = visibleFlags(C)
  const own = flags.filter((f) => f.helpGroup !== 'GLOBAL')
  const global = flags.filter((f) => f.helpGroup === 'GLOBAL')
  const args = Object.entries(C.args ?? {}).filter(([, a]) => !a.hidden)
  if (!C.summary) throw new Error(`${id}: no summary`)

  const out = [th(pageName, pkg), '.SH NAME', `${esc(pageName)} \\- ${esc(nameText(C.summary))}`]

  out.push('.SH SYNOPSIS', `.SY ${esc(bin)}`)
  if (global.length > 0) out.push(`[${ital('global options')}]`)
  out.push(bold(id))
  out.push(...own.map(flagUsage))
  for (const [name, a] of args) out.push(a.required ? ital(argName(name)) : `[${ital(argName(name))}]`)
  out.push('.YS')

  // The description, without its "Exit status:" paragraph, which has its own section.
  const description = fill(C.description ?? C.summary, bin, id)
  const paras = description.replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/)
  const exit = paras.filter((p) => /^\s*Exit status:/i.test(p))
  const body = paras.filter((p) => !/^\s*Exit status:/i.test(p)).join('\n\n')
  out.push('.SH DESCRIPTION', ...paragraphs(body, ''))

  if (flags.length > 0) {
    out.push('.SH OPTIONS')
    for (const f of own) out.push('.TP', flagTag(f), ...flagText(f, flags))
    if (global.length > 0) {
      if (own.length > 0) out.push('.SS "Global options"')
      // A global letter the command leaves out is one of its own options after its name.
      const omitted = globalLetters.filter((c) => !global.some((f) => f.char === c))
      const mine = omitted.map((c) => own.find((f) => f.char === c)).filter(Boolean)
      let text = `xl's global options, given before the command (${bin} [global options] ${id}) or after its name. See ${bin}(1).`
      if (mine.length > 0) {
        const list = (xs) => xs.join(', ').replace(/, ([^,]*)$/, ' and $1')
        text +=
          ` After the command's name, ${list(mine.map((f) => `-${f.char}`))} ${mine.length === 1 ? 'is' : 'are'} ${id}'s own ${list(mine.map((f) => `--${f.name}`))} (above);` +
          ` xl's ${list(mine.map((f) => `-${f.char}`))} still ${mine.length === 1 ? 'works' : 'work'} before it.`
      }
      out.push(line(text))
      for (const f of global) {
        const text = flagText(f, flags)
        // XlCommand.dryRun: how the command takes xl's -N.
        if (f.name === 'dry-run' && C.dryRun === 'refuse') {
          text.push('.br', line(`${id} does not implement it: "command does not implement -N (dryrun) option", exit 1, as xl says.`))
        }
        out.push('.TP', flagTag(f), ...text)
      }
    }
  }

  if (args.length > 0) {
    out.push('.SH ARGUMENTS')
    for (const [name, a] of args) {
      out.push('.TP', ital(argName(name)))
      const text = a.description ?? ''
      if (!text) throw new Error(`${id}: argument ${name} has no description`)
      out.push(...paragraphs(text, ''))
      const notes = []
      if (Array.isArray(a.options) && a.options.length > 0) notes.push(`One of: ${a.options.join(', ')}.`)
      if (a.default !== undefined && typeof a.default !== 'function') notes.push(`Default: ${a.default}.`)
      if (notes.length > 0) out.push('.br', line(notes.join(' ')))
    }
  }

  const examples = (C.examples ?? []).map((e) =>
    typeof e === 'string' ? {command: fill(e, bin, id)} : {description: e.description && fill(e.description, bin, id), command: fill(e.command, bin, id)},
  )
  if (examples.length > 0) {
    out.push('.SH EXAMPLES')
    for (const e of examples) {
      out.push('.PP')
      if (e.description) out.push(...paragraphs(e.description, ''))
      out.push('.RS 4', '.nf', ...e.command.split('\n').map((l) => line(l.replace(/^\$ /, ''))), '.fi', '.RE')
    }
  }

  if (exit.length > 0) {
    out.push('.SH "EXIT STATUS"', ...paragraphs(exit.map((p) => p.trim().replace(/^Exit status:\s*/i, '')).join('\n\n'), ''))
  }

  out.push('.SH "SEE ALSO"', `.BR ${esc(bin)} (1),`, '.BR xl (1)')
  return `${out.join('\n')}\n`
}

/** The environment an operator sets (the variables xl-ts passes to its own helper are not). */
function environment(bin) {
  return [
    ['XL_TS_BACKEND', `The hypervisor back end, sim or xen, when --backend is not given. Default: xen where /dev/xen/privcmd exists, else sim.`],
    [
      'XL_TS_ROOT',
      `The simulated host's state folder, when --root is not given. Two folders are two hosts: "XL_TS_ROOT=./host-b ${bin} migrate-receive" is a second host on the same machine.`,
    ],
    ['XL_TS_QEMU', 'The QEMU binary that runs the device models (COLO disks and proxy): a path, or a name looked up in PATH. Default: qemu-system-x86_64.'],
    ['XL_TS_DEBUG', 'When set to anything but empty or 0, an unexpected error also prints its stack trace on stderr.'],
    [
      'LIBXL_SAVE_HELPER',
      `The save/restore helper to run instead of ${bin}'s own, with libxl-save-helper's arguments and message protocol (for instance Xen's libxl-save-helper). Used by save, restore, migrate, migrate-receive and remus.`,
    ],
    ['XDG_STATE_HOME, HOME', `Where the simulated host's state folder is by default, for users other than root (see FILES).`],
  ]
}

/** xl's global options as every XlCommand has them (src/cli/base-command.ts globalFlags). */
async function loadGlobals() {
  const {globalFlags} = await import(pathToFileURL(path.join(DIST, 'cli', 'base-command.js')).href)
  // -h/--help is listed by itself, with --version.
  return Object.entries(globalFlags())
    .filter(([name, f]) => !f.hidden && name !== 'help')
    .map(([name, f]) => ({name, ...f}))
}

function mainPage(commands, pkg, globals) {
  const bin = pkg.bin
  const letters = globals.filter((f) => f.char).map((f) => f.char)
  // Commands whose own options use one of the global letters, and commands without the globals.
  const owners = []
  const without = []
  for (const {id, C} of commands) {
    const base = Object.values(C.baseFlags ?? {})
    if (!base.some((f) => f.helpGroup === 'GLOBAL')) {
      without.push(id)
      continue
    }
    for (const f of Object.values(C.flags ?? {})) {
      if (!f.hidden && letters.includes(f.char)) owners.push(`${id} -${f.char}`)
    }
  }

  const out = [th(bin, pkg), '.SH NAME', `${esc(bin)} \\- ${esc(nameText(pkg.description))}`]
  out.push(
    '.SH SYNOPSIS',
    `.SY ${esc(bin)}`,
    `[${ital('global options')}]`,
    ital('command'),
    `[${ital('options')}]`,
    `[${ital('arguments')}]`,
    '.YS',
    `.SY ${esc(bin)}`,
    ital('command'),
    bold('--help'),
    '.YS',
    `.SY ${esc(bin)}`,
    `${bold('--help')} | ${bold('--version')}`,
    '.YS',
  )
  const item = (text) => ['.IP \\(bu 2', line(text)]
  out.push(
    '.SH DESCRIPTION',
    line(
      `${bin} is an xl-compatible toolstack, written in TypeScript, for moving and protecting running Xen virtual machines. ` +
        `It does three of xl's jobs with xl's flags, xl's messages and exit codes, and xl's bytes on the wire, so an operator's scripts keep working and a stream written by one side can be read by the other:`,
    ),
    ...item(`live migration: ${bin} migrate, run on the source host, starts ${bin} migrate-receive on the target over ssh;`),
    ...item(`Remus, periodic checkpoints to a backup host: ${bin} remus;`),
    ...item(`COLO, a primary and a secondary that run in lock step: ${bin} remus -c, or ${bin} migrate --colo.`),
    '.PP',
    line(
      `Around these it has xl's domain commands (create, list, destroy, pause, unpause, rename, shutdown, domid, domname, save, restore) and two of its own: stream inspect, which checks a savefile or a captured stream record by record, and sim checksum.`,
    ),
    '.PP',
    line(
      `On machines without Xen everything runs on a simulated Xen host, the default where /dev/xen/privcmd is absent: a state folder (--root) is a host, so two folders are two hosts on one machine.`,
    ),
    '.PP',
    line(
      `As in xl, the global options come before the command (${bin} -vv --root ./host-a list). ` +
        `Each command's page lists them too: they may also be given after the command's name, except where the command uses the letter for an option of its own` +
        (owners.length > 0 ? ` (${owners.join(', ')})` : '') +
        '.' +
        (without.length > 0 ? ` ${without.join(', ')} ${without.length === 1 ? 'has' : 'have'} no use for them and ${without.length === 1 ? 'ignores' : 'ignore'} them.` : ''),
    ),
  )

  out.push('.SH "GLOBAL OPTIONS"')
  for (const f of globals) {
    const tag = flagTag(f)
    const text = flagText(f, globals)
    if (f.char === 'v') text.push('.br', line(`Repeat it for more: -vv.`))
    if (f.name === 'dry-run') {
      const honour = commands.filter(({C}) => C.dryRun === 'honour').map(({id}) => id)
      const refuse = commands.filter(({C}) => C.dryRun === 'refuse').map(({id}) => id)
      if (honour.length > 0) text.push('.br', line(`Taken by ${honour.join(', ')}${refuse.length > 0 ? `; the other commands (${refuse.join(', ')}) refuse it: "command does not implement -N (dryrun) option", exit 1` : ''}.`))
    }
    out.push('.TP', tag, ...text)
  }
  out.push('.TP', `${bold('-h')}, ${bold('--help')}`, line(`Show help: the list of commands, or after a command (${bin} migrate -h) its usage and options.`))
  out.push('.TP', bold('--version'), line('Show the version.'))

  out.push('.SH COMMANDS')
  const width = Math.max(...commands.map(({id}) => id.length)) + 2
  for (const {id, C} of commands) {
    const page = `${bin}-${id.replaceAll(' ', '-')}`
    out.push(`.TP ${width}n`, bold(id), line(C.summary ?? ''), `See\n.BR ${esc(page)} (1).`)
  }

  out.push('.SH ENVIRONMENT')
  for (const [name, text] of environment(bin)) out.push('.TP', bold(name), line(text))

  out.push(
    '.SH FILES',
    '.TP',
    bold('/var/lib/xl-ts'),
    line(`The simulated host's state folder when ${bin} runs as root (without --root or XL_TS_ROOT).`),
    '.TP',
    bold('$XDG_STATE_HOME/xl-ts'),
    line(`The simulated host's state folder for other users; ~/.local/state/xl-ts when XDG_STATE_HOME is unset or not absolute.`),
    '.TP',
    bold('/dev/xen/privcmd'),
    line('Where it exists, the default back end is xen instead of sim.'),
  )

  out.push(
    '.SH "EXIT STATUS"',
    ...paragraphs(
      [
        "xl's: 0 on success, 1 on failure, 2 on bad usage (an unknown option, a missing or extra argument, a bad option value). " +
          'Some commands have others, as xl does (create: 3 and 6; remus: 255): each command\'s page lists its own.',
        'An unknown command ("command not implemented") and an unknown global option ("unknown global option") exit 1, as in xl.',
      ].join('\n\n'),
      '',
    ),
  )

  out.push('.SH "SEE ALSO"')
  const refs = [...commands.map(({id}) => `${bin}-${id.replaceAll(' ', '-')}`), 'xl', 'xl.cfg']
  const sections = {xl: 1, 'xl.cfg': 5}
  refs.forEach((r, i) => out.push(`.BR ${esc(r)} (${sections[r] ?? 1})${i < refs.length - 1 ? ',' : ''}`))
  return `${out.join('\n')}\n`
}

// ---------------------------------------------------------------------------------------------------
// package.json's "man" list

/** Sets "man" in package.json to `list`, touching nothing else (inserted after "bin" when absent). */
function updatePackageMan(list) {
  const text = fs.readFileSync(PJSON, 'utf8')
  const current = JSON.parse(text).man
  if (JSON.stringify(current) === JSON.stringify(list)) return false
  const value = `[\n${list.map((m) => `    ${JSON.stringify(m)}`).join(',\n')}\n  ]`
  let next
  const existing = /\n  "man": (\[[^\]]*\]|"[^"]*")/
  if (existing.test(text)) {
    next = text.replace(existing, `\n  "man": ${value}`)
  } else {
    const bin = /\n  "bin": (\{[^}]*\}|"[^"]*"),?\n/.exec(text)
    if (!bin) throw new Error('package.json: no "bin" to put "man" after')
    const hadComma = bin[0].trimEnd().endsWith(',')
    const at = bin.index + bin[0].length
    next = `${text.slice(0, bin.index)}\n  "bin": ${bin[1]},\n  "man": ${value}${hadComma ? ',' : ''}\n${text.slice(at)}`
  }
  if (JSON.stringify(JSON.parse(next).man) !== JSON.stringify(list)) throw new Error('package.json: could not set "man"')
  fs.writeFileSync(PJSON, next)
  return true
}

// ---------------------------------------------------------------------------------------------------

async function main(argv) {
  let out = MAN_DIR
  let custom = false
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--out' && argv[i + 1] !== undefined) {
      out = path.resolve(argv[++i])
      custom = true
    } else if (a.startsWith('--out=')) {
      out = path.resolve(a.slice('--out='.length))
      custom = true
    } else {
      throw new Error(`usage: node scripts/gen-man.mjs [--out DIR]  (unexpected: ${a})`)
    }
  }

  const pjson = JSON.parse(fs.readFileSync(PJSON, 'utf8'))
  const topicSeparator = pjson.oclif?.topicSeparator ?? ':'
  const pkg = {bin: pjson.oclif?.bin ?? pjson.name, version: pjson.version, description: pjson.description}
  const commands = await loadCommands(topicSeparator)

  const globals = await loadGlobals()
  const globalLetters = globals.filter((f) => f.char).map((f) => f.char)
  const pages = new Map()
  pages.set(`${pkg.bin}.1`, mainPage(commands, pkg, globals))
  for (const c of commands) {
    const name = `${pkg.bin}-${c.id.split(topicSeparator).join('-')}`
    pages.set(`${name}.1`, commandPage(c, pkg, name, globalLetters))
  }

  fs.mkdirSync(out, {recursive: true})
  const ours = new RegExp(`^${pkg.bin.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(-.+)?\\.1$`)
  for (const f of fs.readdirSync(out)) {
    if (ours.test(f) && !pages.has(f)) fs.rmSync(path.join(out, f))
  }
  for (const [file, text] of pages) {
    const p = path.join(out, file)
    if (!fs.existsSync(p) || fs.readFileSync(p, 'utf8') !== text) fs.writeFileSync(p, text)
  }
  const list = [...pages.keys()].map((f) => `./man/${f}`)
  if (!custom && updatePackageMan(list)) process.stderr.write('gen-man: package.json "man" updated\n')
  process.stderr.write(`gen-man: ${pages.size} pages in ${path.relative(process.cwd(), out) || '.'}\n`)
}

main(process.argv.slice(2)).catch((err) => {
  process.stderr.write(`gen-man: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
})
