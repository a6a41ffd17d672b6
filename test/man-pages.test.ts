/**
 * The man pages (man/*.1) are generated from the oclif command definitions by scripts/gen-man.mjs
 * (`npm run man`). Here: regenerating gives exactly the committed files; every command has its page
 * and no page is left over; each page's OPTIONS name exactly the command's visible flags (read from
 * the command classes as oclif loads them, not from the generator); package.json lists the pages
 * and ships man/; and every page renders with man(1) and groff without a warning.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {REPO, ensureBuilt} from './support/build.js'

const MAN = path.join(REPO, 'man')
const REGENERATE = 'run `npm run man` and commit man/ (and package.json "man")'

interface FlagInfo {
  name: string
  char?: string
  allowNo?: boolean
  type: string
}

interface CommandInfo {
  /** `stream inspect` */
  id: string
  /** `xl-ts-stream-inspect.1` */
  page: string
  flags: FlagInfo[]
  args: string[]
}

/**
 * The commands as the CLI loads them: oclif's Config for the package, its own commands (not a
 * plugin's), each class's flags merged as oclif merges them, hidden ones left out. Run in a child
 * node, as bin/run.js does, outside vitest (whose NODE_ENV=test sends oclif looking for the sources).
 */
const LOAD_COMMANDS = `
import {Config} from '@oclif/core'
const config = await Config.load(process.argv[1])
const out = {bin: config.bin, globals: [], commands: []}
for (const c of config.commands) {
  if (c.pluginName !== config.pjson.name) continue
  const C = await c.load()
  const flags = Object.entries({...(C.baseFlags ?? {}), ...(C.flags ?? {})})
    .filter(([, f]) => !f.hidden)
    .map(([name, f]) => ({name, char: f.char, allowNo: f.allowNo === true, type: f.type}))
  const args = Object.entries(C.args ?? {}).filter(([, a]) => !a.hidden).map(([name]) => name)
  out.commands.push({id: c.id.replaceAll(':', ' '), flags, args})
}
const {globalFlags} = await import(new URL('dist/cli/base-command.js', 'file://' + process.argv[1] + '/').href)
out.globals = Object.entries(globalFlags()).filter(([name, f]) => !f.hidden && name !== 'help').map(([name, f]) => ({name, char: f.char, allowNo: f.allowNo === true, type: f.type}))
process.stdout.write(JSON.stringify(out))
`

let tmp: string
let bin: string
let commands: CommandInfo[]
let globals: FlagInfo[]

function childEnv(): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {...process.env}
  delete env.NODE_ENV
  for (const k of Object.keys(env)) if (k.startsWith('VITEST')) delete env[k]
  return env
}

const pages = (dir: string): string[] => fs.readdirSync(dir).filter(f => f.endsWith('.1')).sort()
const read = (file: string): string => fs.readFileSync(file, 'utf8')

/** roff to plain text, enough for the tag lines the generator writes. */
function unroff(s: string): string {
  return s
    .replace(/\\f[BIRP]/g, '')
    .replace(/\\-/g, '-')
    .replace(/\\ /g, ' ')
    .replace(/\\&/g, '')
    .replace(/\\e/g, '\\')
}

/** The lines of a section (`.SH NAME` to the next `.SH`). */
function section(page: string, name: string): string[] {
  const lines = page.split('\n')
  const start = lines.findIndex(l => l === `.SH ${name}` || l === `.SH "${name}"`)
  if (start < 0) return []
  const end = lines.findIndex((l, i) => i > start && l.startsWith('.SH '))
  return lines.slice(start + 1, end < 0 ? undefined : end)
}

/** The tags of a section's `.TP` items (the line after each `.TP`), as plain text. */
function tags(lines: string[]): string[] {
  return lines.flatMap((l, i) => (/^\.TP\b/.test(l) && lines[i + 1] !== undefined ? [unroff(lines[i + 1] as string)] : []))
}

/** The option names of tag lines such as `-s, --ssh-command SSHCMD`: `--ssh-command`, `-s`. */
function optionNames(tagLines: string[]): string[] {
  return [...new Set(tagLines.flatMap(t => t.split(/[ ,]+/).filter(w => /^--[a-z0-9]/.test(w) || /^-[A-Za-z0-9]$/.test(w))))].sort()
}

function flagNames(flags: readonly FlagInfo[]): string[] {
  const names = flags.flatMap(f => [
    `--${f.name}`,
    ...(f.type === 'boolean' && f.allowNo ? [`--no-${f.name}`] : []),
    ...(f.char ? [`-${f.char}`] : []),
  ])
  return [...new Set(names)].sort()
}

beforeAll(async () => {
  await ensureBuilt()
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xl-ts-man-'))
  const [gen, load] = await Promise.all([
    execa(process.execPath, ['scripts/gen-man.mjs', '--out', tmp], {cwd: REPO, env: childEnv(), extendEnv: false, reject: false, all: true}),
    execa(process.execPath, ['--input-type=module', '-e', LOAD_COMMANDS, REPO], {cwd: REPO, env: childEnv(), extendEnv: false, reject: false, all: true}),
  ])
  if (gen.exitCode !== 0) throw new Error(`scripts/gen-man.mjs --out ${tmp} exited ${gen.exitCode}:\n${gen.all}`)
  if (load.exitCode !== 0) throw new Error(`loading the commands failed:\n${load.all}`)
  const loaded = JSON.parse(String(load.stdout)) as {bin: string; globals: FlagInfo[]; commands: Omit<CommandInfo, 'page'>[]}
  bin = loaded.bin
  globals = loaded.globals
  commands = loaded.commands.map(c => ({...c, page: `${bin}-${c.id.replaceAll(' ', '-')}.1`})).sort((a, b) => a.id.localeCompare(b.id))
})

afterAll(() => {
  if (tmp) fs.rmSync(tmp, {recursive: true, force: true})
})

describe('man pages', () => {
  it('are what scripts/gen-man.mjs writes now', () => {
    const committed = pages(MAN)
    const fresh = pages(tmp)
    expect(committed, `man/ has other pages than the commands give: ${REGENERATE}`).toEqual(fresh)
    for (const f of fresh) {
      expect(read(path.join(MAN, f)) === read(path.join(tmp, f)), `man/${f} is out of date: ${REGENERATE}`).toBe(true)
    }
  })

  it('exist for every command, and no other', () => {
    expect(commands.length).toBeGreaterThan(10)
    const expected = [`${bin}.1`, ...commands.map(c => c.page)].sort()
    expect(pages(MAN), `every command has its page and no page is stale: ${REGENERATE}`).toEqual(expected)
  })

  it("list exactly each command's visible flags under OPTIONS", () => {
    for (const c of commands) {
      const page = read(path.join(MAN, c.page))
      expect(optionNames(tags(section(page, 'OPTIONS'))), `${c.page}: OPTIONS against ${c.id}'s flags: ${REGENERATE}`).toEqual(flagNames(c.flags))
      expect(page, `${c.page}: NAME`).toContain(`.SH NAME\n${c.page.replace(/\.1$/, '').replaceAll('-', '\\-')} \\- `)
    }
  })

  it("list each command's arguments", () => {
    for (const c of commands) {
      const page = read(path.join(MAN, c.page))
      expect(tags(section(page, 'ARGUMENTS')), `${c.page}: ARGUMENTS: ${REGENERATE}`).toEqual(c.args.map(a => a.toUpperCase()))
    }
  })

  it('xl-ts(1) lists every command and the global options', () => {
    const page = read(path.join(MAN, `${bin}.1`))
    expect(tags(section(page, 'COMMANDS')), `${bin}.1 COMMANDS: ${REGENERATE}`).toEqual(commands.map(c => c.id))
    for (const c of commands) expect(page).toContain(`.BR ${c.page.replace(/\.1$/, '').replaceAll('-', '\\-')} (1)`)
    const listed = optionNames(tags(section(page, 'GLOBAL OPTIONS')))
    expect(listed, `${bin}.1 GLOBAL OPTIONS: ${REGENERATE}`).toEqual([...flagNames(globals), '-h', '--help', '--version'].sort())
  })

  it('are listed in package.json "man" and shipped by "files"', () => {
    const pjson = JSON.parse(read(path.join(REPO, 'package.json'))) as {man?: string[]; files?: string[]}
    expect([...(pjson.man ?? [])].sort(), `package.json "man": ${REGENERATE}`).toEqual(pages(MAN).map(f => `./man/${f}`).sort())
    expect(pjson.files ?? [], 'package.json "files" ships man/').toContain('man')
  })

  it('render with man and groff, without warnings', async () => {
    const env = {...childEnv(), MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat', LC_ALL: 'C.UTF-8', MAN_KEEP_FORMATTING: ''}
    const files = pages(MAN)
    const runs = await Promise.all(
      files.flatMap(f => {
        const file = path.join(MAN, f)
        return [
          execa('man', ['-l', file], {env, extendEnv: false, reject: false}).then(r => ({f, tool: 'man -l', r})),
          execa('groff', ['-man', '-Tutf8', '-ww', '-z', file], {env, extendEnv: false, reject: false}).then(r => ({f, tool: 'groff -ww', r})),
        ]
      }),
    )
    for (const {f, tool, r} of runs) {
      const missing = (r as {code?: string}).code === 'ENOENT' ? ' (not installed: scripts/setup installs man-db and groff-base)' : ''
      expect(r.exitCode, `${tool} man/${f}${missing}\n${r.stderr}`).toBe(0)
      expect(String(r.stderr), `${tool} man/${f}: warnings`).toBe('')
      if (tool === 'man -l') {
        const title = f.replace(/\.1$/, '').toUpperCase()
        expect(String(r.stdout), `man -l man/${f}`).toContain(`${title}(1)`)
        expect(String(r.stdout)).toMatch(/\nNAME\n/)
      }
    }
  })
})
