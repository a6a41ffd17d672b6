import {Args, Command, Errors, Flags} from '@oclif/core'

import {
  COLUMN_HEADER,
  INSPECT_FORMATS,
  InspectTally,
  RowMaker,
  RowPrinter,
  STREAM_TYPES,
  errorJson,
  errorMessage,
  formatJson,
  formatSummary,
  inspectStream,
  rowJson,
  summaryJson,
  type InspectFormat,
  type JsonObject,
  type SummaryContext,
} from '../../render/index.js'
import {FdByteSource, errnoText, openForReading, type OpenedFile} from '../../toolstack/fd/index.js'
import type {StreamType} from '../../toolstack/stream/index.js'

/** The schema version of --json (docs/json.md): every object carries it as `v`. */
export const INSPECT_JSON_VERSION = 1

const PREFIX = 'xl-ts: stream inspect:'

/** Decimal or 0x-hex page count. */
function parsePages(input: string): number {
  const n = /^0x[0-9a-f]+$/i.test(input) ? Number.parseInt(input, 16) : /^[0-9]+$/.test(input) ? Number(input) : Number.NaN
  if (!Number.isSafeInteger(n) || n < 1) {
    // A usage error: exit status 2, as xl gives for bad options.
    throw new Errors.CLIError(`Expected a number of pages (decimal or 0x hex, at least 1) but received: ${input}`, {exit: 2})
  }
  return n
}

/**
 * Batches lines to stdout. This is a data command: its listing goes to stdout, errors to stderr.
 * Once stdout is gone (`| head`), output stops but the stream is still checked to its end, so the
 * exit status stays true.
 */
class Output {
  #pending: string[] = []
  #size = 0
  #closed = false

  constructor() {
    process.stdout.on('error', () => {
      this.#closed = true
    })
  }

  line(s: string): void {
    if (this.#closed) return
    this.#pending.push(s)
    this.#size += s.length
    if (this.#size >= 16 * 1024) this.flush()
  }

  json(o: JsonObject): void {
    this.line(JSON.stringify({v: INSPECT_JSON_VERSION, ...o}))
  }

  flush(): void {
    if (this.#closed || this.#pending.length === 0) return
    const text = `${this.#pending.join('\n')}\n`
    this.#pending = []
    this.#size = 0
    process.stdout.write(text)
  }
}

export default class StreamInspect extends Command {
  static override summary = 'Check a saved or captured migration stream and list its records.'

  static override description = `Reads an xl savefile, a libxl or libxc migration stream, or a COLO back channel record by record, checks every header and record as xl's receiver would (lengths, padding, reserved fields, record order, PAGE_DATA arithmetic), and lists them: offset, layer (xl, libxl, libxc, back), record index, type, length and a short detail. Consecutive PAGE_DATA records are squashed into one line unless --no-squash. A summary follows: records per layer, pages and bytes of page data, checkpoints, the stream type, and "valid" or the first error.

The format is told from the first bytes unless -f is given. Checkpointed streams (Remus, COLO) may end between checkpoints, as they do when the primary goes away; the stream type is told from what follows each checkpoint (COLO sends CHECKPOINT_STATE records, Remus does not).

A FILE of "-" reads standard input, exactly up to the end of the stream: nothing past it is consumed, so the rest of a shared input stays for the next reader.

Exit status: 0 when the stream is valid, 1 when it is not or cannot be read (one line on stderr names the record and byte offset; "xxd -s OFFSET FILE" shows the bytes), 2 on bad usage.`

  static override examples = [
    {description: 'List and check a savefile written by "xl save" or "xl-ts save":', command: '<%= config.bin %> <%= command.id %> /var/lib/xen/save/vm.save'},
    {description: 'Check a captured migration stream from stdin, as NDJSON for a script:', command: '<%= config.bin %> <%= command.id %> --json - < capture'},
    {description: 'Show every PAGE_DATA record of a COLO stream capture on its own line:', command: '<%= config.bin %> <%= command.id %> --no-squash --stream-type colo colo-primary.stream'},
    {description: 'Check a COLO back channel capture (secondary to primary) against the guest size:', command: '<%= config.bin %> <%= command.id %> -f back-channel --p2m-size 0x40000 backchannel.bin'},
    {description: 'Only the verdict, for a script:', command: '<%= config.bin %> <%= command.id %> vm.save > /dev/null && echo valid'},
  ]

  static override args = {
    file: Args.string({
      description: 'stream file, FIFO or device to read; - for standard input',
      required: true,
      // "-" is read by us through fd 0, exactly; oclif must never slurp stdin itself.
      ignoreStdin: true,
    }),
  }

  static override flags = {
    format: Flags.string({
      char: 'f',
      description: 'stream format (default: told from the first bytes)',
      options: [...INSPECT_FORMATS],
    }),
    'stream-type': Flags.string({
      description: 'what the stream must be; unknown accepts plain and checkpointed streams and tells Remus from COLO',
      options: [...STREAM_TYPES],
      default: 'unknown',
    }),
    'p2m-size': Flags.custom<number>({
      description: 'guest size in pages (decimal or 0x hex): reject pfns at or beyond it',
      helpValue: 'PAGES',
      parse: async (input) => parsePages(input),
    })(),
    json: Flags.boolean({
      description: 'print one JSON object per header and record (NDJSON), then a summary or an error object',
      default: false,
    }),
    squash: Flags.boolean({
      description: 'squash consecutive PAGE_DATA records into one line (--no-squash: one line each)',
      default: true,
      allowNo: true,
    }),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(StreamInspect)
    const out = new Output()

    let input: OpenedFile
    if (args.file === '-') {
      input = {fd: 0, close: async () => {}}
    } else {
      try {
        input = await openForReading(args.file)
      } catch (err) {
        this.#fail(`cannot open ${args.file}: ${errnoText(err)}`)
        return
      }
    }

    const streamType = flags['stream-type'] as StreamType
    const source = new FdByteSource(input.fd)
    const tally = new InspectTally(streamType)
    const rows = new RowMaker()
    const printer = new RowPrinter((line) => out.line(line), flags.squash)
    let sniffed = false
    let error: unknown

    if (!flags.json) out.line(COLUMN_HEADER)
    try {
      const events = inspectStream(source, {
        streamType,
        ...(flags.format ? {format: flags.format as InspectFormat} : {}),
        ...(flags['p2m-size'] !== undefined ? {p2mSize: flags['p2m-size']} : {}),
      })
      for await (const ev of events) {
        tally.add(ev)
        if (ev.layer === 'format') sniffed = ev.sniffed
        if (flags.json) {
          const f = formatJson(ev)
          if (f) out.json(f)
          for (const row of rows.rows(ev)) out.json(rowJson(row))
        } else {
          for (const row of rows.rows(ev)) printer.print(row)
        }
      }
    } catch (err) {
      error = err
    } finally {
      await input.close()
    }
    printer.flush()

    const summary = tally.summary()
    const trailing = input.size !== undefined && summary.end === 'END' ? input.size - source.offset : 0
    const ctx: SummaryContext = {
      summary,
      bytes: source.offset,
      sniffed,
      ...(trailing > 0 ? {trailingBytes: trailing} : {}),
      ...(error !== undefined ? {error} : {}),
    }
    if (flags.json) out.json(error === undefined ? summaryJson(ctx) : errorJson(error, ctx))
    else for (const line of formatSummary(ctx)) out.line(line)
    out.flush()
    if (error !== undefined) this.#fail(errorMessage(error))
  }

  /** One line on stderr, exit status 1; never a stack trace. */
  #fail(message: string): void {
    process.stderr.write(`${PREFIX} ${message.replace(/\s*\n\s*/g, ' ')}\n`)
    process.exitCode = 1
  }
}
