/**
 * xl's global options come before the command: `xl -vv -N create vm.cfg` (xl.c main: getopt
 * "+vftTN", stopping at the first non-option). oclif only knows flags after the command, so the
 * leading global options are taken off and put back right after the command's words, under
 * names no command uses for anything else (`destroy -f` is not `xl -f destroy`, `list -v` is not
 * `xl -v list`): `-v` (counted) -> `--global-verbose=N`, `-N` -> `--global-dry-run`,
 * `-f` -> `--global-force`, `-t` -> `--global-progress-cr`, `-T` -> `--global-timestamps`.
 * `--root DIR` / `--root=DIR` and `--backend NAME` / `--backend=NAME` keep their names.
 */

export const GLOBAL_FLAG_NAMES = {
  verbose: 'global-verbose',
  dryRun: 'global-dry-run',
  force: 'global-force',
  progressCr: 'global-progress-cr',
  timestamps: 'global-timestamps',
} as const

/** Options with a value that may stand before the command. */
const VALUE_OPTIONS = new Set(['--root', '--backend'])
/** Arguments oclif itself handles before any command: left where they are. */
const PASS_THROUGH = new Set(['--help', '-h', '--version'])
const SHORT_GLOBALS = /^-[vftTN]+$/

/** A leading option xl does not know: xl says "unknown global option" and exits 1. */
export class UnknownGlobalOption extends Error {
  override readonly name = 'UnknownGlobalOption'
  constructor(readonly option: string) {
    super('unknown global option')
  }
}

export interface Preprocessed {
  argv: string[]
  /** True when there were global options before the command. */
  moved: boolean
  /** argv without the leading global options (for a command that takes none). */
  withoutGlobals: string[]
  /** The words that name the command (`['sim', 'checksum']`); empty when none does. */
  command: string[]
}

/**
 * Moves the global options before the command to just after it. `isCommand` tells whether some
 * words form a command id (`['sim', 'checksum']`); the longest such prefix is the command.
 */
export function preprocessArgv(argv: readonly string[], isCommand: (words: readonly string[]) => boolean): Preprocessed {
  const globals: string[] = []
  let verbose = 0
  const seen = new Set<string>()
  let i = 0
  for (; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--') {
      i++
      break
    }
    if (!arg.startsWith('-') || arg === '-') break
    // oclif knows only --help before a command: `xl-ts -h` is the same.
    if (PASS_THROUGH.has(arg)) {
      const same = argv.map((a, k) => (k === i && a === '-h' ? '--help' : a))
      return {argv: same, moved: false, withoutGlobals: same, command: []}
    }
    const eq = arg.indexOf('=')
    const name = eq >= 0 ? arg.slice(0, eq) : arg
    if (VALUE_OPTIONS.has(name)) {
      if (eq >= 0) {
        globals.push(arg)
      } else {
        const value = argv[i + 1]
        globals.push(arg)
        if (value !== undefined) {
          globals.push(value)
          i++
        }
      }
      continue
    }
    if (SHORT_GLOBALS.test(arg)) {
      for (const c of arg.slice(1)) {
        if (c === 'v') verbose++
        else seen.add(c)
      }
      continue
    }
    throw new UnknownGlobalOption(arg)
  }
  if (verbose > 0) globals.push(`--${GLOBAL_FLAG_NAMES.verbose}=${verbose}`)
  if (seen.has('N')) globals.push(`--${GLOBAL_FLAG_NAMES.dryRun}`)
  if (seen.has('f')) globals.push(`--${GLOBAL_FLAG_NAMES.force}`)
  if (seen.has('t')) globals.push(`--${GLOBAL_FLAG_NAMES.progressCr}`)
  if (seen.has('T')) globals.push(`--${GLOBAL_FLAG_NAMES.timestamps}`)

  const rest = argv.slice(i)
  // The command is the longest run of leading words that names one.
  let known = 0
  for (let n = 1; n <= rest.length; n++) {
    const word = rest[n - 1] as string
    if (word.startsWith('-')) break
    if (isCommand(rest.slice(0, n))) known = n
  }
  const command = rest.slice(0, known)
  if (globals.length === 0) return {argv: rest, moved: false, withoutGlobals: rest, command}
  // Globals go after the command's words (after the first word when no command matches).
  const idLength = known > 0 ? known : Math.min(1, rest.length)
  return {argv: [...rest.slice(0, idLength), ...globals, ...rest.slice(idLength)], moved: true, withoutGlobals: rest, command}
}
