/**
 * The libxl stream writer (libxl_stream_write.c's part, XEN-FACTS §2.4): the libxl header and the
 * libxl records around the libxc stream, on the stream fd with exact writes, each announced as an
 * event with its offset. Offsets: a file tells its position; on a pipe they are counted until the
 * hand-off to the helper, after which nobody can say how many bytes the helper wrote (null).
 */
import {fdPosition, writeAll} from '../fd/index.js'
import {EMULATOR, encodeLibxlHeader, encodeLibxlRecord, type LibxlRecord} from '../stream/index.js'
import type {MigrateError} from './errors.js'
import type {MigrateEventHandler} from './events.js'
import {ioError} from './errors.js'

export class LibxlStreamWriter {
  #counted: number
  #handedOff = false
  #handOffPosition: number | undefined
  #index = 0
  #deviceStateBytes = 0

  constructor(
    readonly fd: number,
    offset: number,
    private readonly emit: MigrateEventHandler | undefined,
  ) {
    this.#counted = offset
  }

  /** Bytes of device model state written so far. */
  get deviceStateBytes(): number {
    return this.#deviceStateBytes
  }

  /** The stream offset of the next byte, or null once the helper has written on a pipe. */
  where(): number | null {
    return fdPosition(this.fd) ?? (this.#handedOff ? null : this.#counted)
  }

  /** The helper writes from here on (its bytes are not counted). */
  handOff(): void {
    this.#handedOff = true
    this.#handOffPosition = fdPosition(this.fd)
  }

  /** The bytes the helper wrote, when the fd is a file (its position moved that far since the hand-off). */
  helperBytes(): number | undefined {
    const now = fdPosition(this.fd)
    return now !== undefined && this.#handOffPosition !== undefined ? now - this.#handOffPosition : undefined
  }

  async header(): Promise<void> {
    this.emit?.({kind: 'libxl-header', offset: this.where() ?? 0})
    await this.#write([encodeLibxlHeader()], 'libxl header', 'the libxl stream header')
  }

  async record(rec: LibxlRecord, step: MigrateError['step'] = 'libxl records'): Promise<void> {
    const parts = encodeLibxlRecord(rec)
    const offset = this.where()
    await this.#write(parts, step, `the libxl ${rec.kind} record`)
    this.emit?.({kind: 'libxl-record', record: rec.kind, index: this.#index++, offset, length: parts[0]!.readUInt32LE(4)})
  }

  /** The device model's state (EMULATOR_CONTEXT, qemu-xen). */
  async emulatorContext(blob: Buffer): Promise<void> {
    await this.record({kind: 'EMULATOR_CONTEXT', emulator: EMULATOR.QEMU_UPSTREAM, index: 0, blob}, 'emulator context')
    this.#deviceStateBytes += blob.length
    this.emit?.({kind: 'device-state', direction: 'saved', bytes: blob.length})
  }

  /** Raw bytes that are not libxl records of ours (a clean stop's libxc END). */
  async raw(parts: Buffer[], what: string): Promise<void> {
    await this.#write(parts, 'libxl records', what)
  }

  async #write(parts: Buffer[], step: MigrateError['step'], what: string): Promise<void> {
    try {
      this.#counted += await writeAll(this.fd, parts, {what})
    } catch (err) {
      throw ioError(err, step, `cannot write ${what}`)
    }
  }
}
