/**
 * Shell completion through @oclif/plugin-autocomplete (package.json "oclif.plugins"): its commands
 * run under this CLI's argv handling and error rendering (src/cli/main.ts), the bash script it
 * writes names our commands and their flags, and bash, given that script, completes command
 * names, `sim` subcommands and flags.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BIN, ROOT, ensureBuilt} from './support/cli.js'

let cache: string

beforeAll(async () => {
  await ensureBuilt()
  cache = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-ac-'))
})

afterAll(() => fs.rmSync(cache, {recursive: true, force: true}))

/** Runs `xl-ts ARGS` with its cache (where the plugin writes the scripts) in a temp folder. */
async function xl(args: readonly string[]) {
  const r = await execa(process.execPath, [BIN, ...args], {cwd: ROOT, env: {XL_TS_CACHE_DIR: cache}, reject: false, timeout: 30_000, stdin: 'ignore'})
  return {exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr)}
}

const bashFunctions = () => path.join(cache, 'autocomplete', 'functions', 'bash', 'xl-ts.bash')

/** What bash completes for the words typed so far (the last one being completed). */
async function complete(words: readonly string[]): Promise<string[]> {
  const quoted = words.map(w => `'${w}'`).join(' ')
  const script = `source '${bashFunctions()}'; COMP_WORDS=(xl-ts ${quoted}); COMP_CWORD=${words.length}; _xl-ts_autocomplete; printf '%s\\n' "\${COMPREPLY[@]}"`
  const r = await execa('bash', ['--norc', '--noprofile', '-c', script], {reject: false})
  expect(r.stderr).toBe('')
  return String(r.stdout)
    .split('\n')
    .filter(l => l.length > 0)
    .sort()
}

describe('xl-ts autocomplete', () => {
  it('prints the bash setup and writes the completion scripts', async () => {
    const r = await xl(['autocomplete', 'bash'])
    expect(r.exitCode).toBe(0)
    expect(r.stdout).toContain('printf "$(xl-ts autocomplete script bash)" >> ~/.bashrc')
    expect(fs.existsSync(bashFunctions())).toBe(true)
    expect(fs.existsSync(path.join(cache, 'autocomplete', 'functions', 'zsh', '_xl-ts'))).toBe(true)
  })

  it('script bash: the line for ~/.bashrc, sourcing the setup from our cache', async () => {
    const r = await xl(['autocomplete', 'script', 'bash'])
    expect(r.exitCode).toBe(0)
    expect(r.stdout.trim()).toBe(
      `XL_TS_AC_BASH_SETUP_PATH=${path.join(cache, 'autocomplete', 'bash_setup')} && test -f $XL_TS_AC_BASH_SETUP_PATH && source $XL_TS_AC_BASH_SETUP_PATH; # xl-ts autocomplete setup`,
    )
  })

  it('the bash script names every command with its flags, hidden ones left out', () => {
    const text = fs.readFileSync(bashFunctions(), 'utf8')
    for (const id of ['create', 'destroy', 'list', 'migrate', 'migrate-receive', 'remus', 'save', 'restore', 'sim:checksum', 'stream:inspect'])
      expect(text).toMatch(new RegExp(`^${id} `, 'm'))
    expect(text).toMatch(/^remus .*--max-interval/m)
    expect(text).toMatch(/^migrate-receive .*--coloft-script/m)
    expect(text).not.toContain('--global-')
  })

  it('bash completes commands, sim subcommands and flags', async () => {
    expect(await complete(['migr'])).toEqual(['migrate', 'migrate-receive'])
    expect(await complete(['sim', 'ch'])).toEqual(['checksum'])
    expect(await complete(['remus', '--max'])).toEqual(['--max-interval'])
    expect(await complete(['list', '--j'])).toEqual(['--json'])
  })

  it("errors come out in xl-ts's words: exit 2, no stack trace", async () => {
    // (further lines, such as a hint to --help, are src/cli/errors.ts's business)
    const r = await xl(['autocomplete', 'fish'])
    expect(r.exitCode).toBe(2)
    expect(r.stderr.split('\n')[0]).toBe('xl-ts: autocomplete: Expected fish to be one of: zsh, bash, powershell')
    expect(r.stderr).not.toMatch(/^\s+at /m)
    const flag = await xl(['autocomplete', '--bogus'])
    expect(flag.exitCode).toBe(2)
    expect(flag.stderr.split('\n')[0]).toBe('xl-ts: autocomplete: Nonexistent flag: --bogus')
    expect(flag.stderr).not.toMatch(/^\s+at /m)
  })
})
