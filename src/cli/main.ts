/**
 * The program: xl's global options before the command are moved after it (./argv.ts), then oclif
 * runs the command. Errors that happen before a command runs (an unknown command or global option,
 * a broken installation) get xl's words and status here; a command's own errors are rendered by
 * XlCommand.catch. Nothing leaves here as a stack trace.
 */
import {Config, Errors, flush, run, settings} from '@oclif/core'

import {GLOBAL_FLAG_NAMES, UnknownGlobalOption, preprocessArgv, type Preprocessed} from './argv.js'
import {EXIT_FAILURE, printError, renderError} from './errors.js'

/**
 * Runs xl-ts with `argv` (without node and script). `root` is the package's bin/run.js URL or
 * any path inside the package, as oclif's execute takes it.
 */
export async function main(argv: readonly string[], root: string): Promise<void> {
  // xl-ts always runs its compiled dist/: oclif need not look for TypeScript sources (it would,
  // and warn, under NODE_ENV=development or test in an installed copy).
  settings.enableAutoTranspile = false
  let command = 'xl-ts'
  // A reader that goes away (`xl-ts list | head -1`) ends the output, not the program with a trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err
  })
  try {
    const config = await Config.load(root)
    let pre: Preprocessed
    try {
      pre = preprocessArgv(argv, words => config.findCommand(words.join(':')) !== undefined)
    } catch (err) {
      if (!(err instanceof UnknownGlobalOption)) throw err
      // xl.c main: fprintf(stderr, "unknown global option\n"); exit(EXIT_FAILURE)
      process.stderr.write('unknown global option\n')
      process.exitCode = EXIT_FAILURE
      return
    }
    if (pre.command.length > 0) command = pre.command.join(' ')
    // A command that does not take xl's global options (stream inspect reads no host; a plugin's,
    // such as autocomplete) runs without them, as xl ignores those a command has no use for.
    const found = pre.moved ? config.findCommand(pre.command.join(':')) : undefined
    const takesGlobals = found === undefined || GLOBAL_FLAG_NAMES.verbose in (found.flags ?? {})
    await startEarly(pre)
    await run(takesGlobals ? pre.argv : pre.withoutGlobals, config)
  } catch (err) {
    if (err instanceof Errors.CLIError && /^command .* not found$/.test(err.message)) {
      // xl.c main: fprintf(stderr, "command not implemented\n"); ret = EXIT_FAILURE
      process.stderr.write('command not implemented\n')
      process.exitCode = EXIT_FAILURE
    } else {
      const rendered = renderError(err, {command})
      printError(rendered)
      process.exitCode = rendered.exitCode
    }
  } finally {
    // As oclif's execute: not awaited, so a stdout that will never drain cannot hold the exit.
    flush().catch(() => undefined)
  }
}

/**
 * `migrate-receive` is run by the sender, which writes the xl header the moment it reads our
 * banner: the programs we need then (our guardian, the restore helper) start while the command
 * loads instead (toolstack/xl/receiver-early.ts; the command takes them).
 */
async function startEarly(pre: Preprocessed): Promise<void> {
  if (pre.command.join(' ') !== 'migrate-receive' || pre.argv.some((a) => a === '--help' || a === '-h')) return
  const {startReceiverEarly} = await import('../toolstack/xl/receiver-early.js')
  startReceiverEarly()
}
