/**
 * The callback protocol between the toolstack and the save/restore helper, both ends, as pure codecs
 * (XEN-FACTS §5.3-5.4; the message table is `@msgs` in Xen's tools/libs/light/libxl_save_msgs_gen.pl,
 * the framing is libxl_save_helper.c / libxl_save_callout.c).
 *
 * helper -> toolstack, on the helper's stdout, in host byte order (little-endian: x86_64, arm64):
 *
 *     u16 msglen;  body[msglen] = { u16 msgtype; args... }
 *
 * msgtype is the message's position in the table, from 1. Arguments are packed with no padding:
 * `int`, `unsigned`, `uint32_t` are 4 bytes, `unsigned long` and `xen_pfn_t` 8 bytes (LP64), a STRING
 * is `u32 len` (counting its NUL) then the bytes and the NUL. The helper asserts msglen < 64 KiB.
 * libxl's receiver rejects a string of length 0 or without its NUL, a short argument and bytes left
 * over after the last argument; so does this decoder (libxl then silently drops the message; we
 * call it a protocol error).
 *
 * toolstack -> helper, on the helper's stdin: one host `int` (4 bytes), only in answer to a message
 * that needs a value (W: libxl answers at once; A: libxl answers when its asynchronous work is done;
 * to the helper both are the same, it blocks reading the int).
 *
 * Strings are C strings: they are decoded as UTF-8 up to the first NUL (what libxl would print).
 */

/** Largest message body the helper may send (it asserts `len < 64*1024`). */
export const HELPER_MAX_BODY = 0xffff
/** Size of the msglen prefix and of the msgtype at the start of the body. */
export const HELPER_LEN_SIZE = 2
export const HELPER_TYPE_SIZE = 2
/** A reply is one host int. */
export const HELPER_REPLY_SIZE = 4

/** The argument types the message table uses. */
export type HelperArgType = 'uint32_t' | 'unsigned' | 'int' | 'unsigned long' | 'xen_pfn_t' | 'STRING'

/** Bytes of a fixed-size argument type on LP64. */
export const HELPER_ARG_SIZE: Readonly<Record<Exclude<HelperArgType, 'STRING'>, number>> = {
  uint32_t: 4,
  unsigned: 4,
  int: 4,
  'unsigned long': 8,
  xen_pfn_t: 8,
}

export type HelperMessageName =
  | 'log'
  | 'progress'
  | 'suspend'
  | 'postcopy'
  | 'checkpoint'
  | 'wait_checkpoint'
  | 'switch_qemu_logdirty'
  | 'static_data_done'
  | 'restore_results'
  | 'complete'

export interface HelperMessageSpec {
  /** msgtype on the wire: position in @msgs, from 1. */
  readonly number: number
  readonly name: HelperMessageName
  /** The flags string of @msgs, as written there. */
  readonly flags: string
  /** `s`: sent by a --save-domain helper. */
  readonly save: boolean
  /** `r`: sent by a --restore-domain helper. */
  readonly restore: boolean
  /** `c`: a function pointer in libxl's callbacks struct (a callback the caller provides). */
  readonly callback: boolean
  /**
   * `x`: its presence is announced to the helper in cbflags (bit `1 << number`); the helper only
   * installs (and so only ever sends) the callbacks whose bit is set.
   */
  readonly announced: boolean
  /** `W`: needs a reply, synchronous; `A`: needs a reply, asynchronous; else no reply. */
  readonly reply: 'none' | 'sync' | 'async'
  /** `1 << number` when announced. */
  readonly cbflag?: number
  readonly args: readonly {readonly name: string; readonly type: HelperArgType}[]
}

function spec(number: number, flags: string, name: HelperMessageName, args: HelperMessageSpec['args']): HelperMessageSpec {
  const announced = flags.includes('x')
  return {
    number,
    name,
    flags,
    save: flags.includes('s'),
    restore: flags.includes('r'),
    callback: flags.includes('c'),
    announced,
    reply: flags.includes('W') ? 'sync' : flags.includes('A') ? 'async' : 'none',
    ...(announced ? {cbflag: 1 << number} : {}),
    args,
  }
}

/** The message table, in order (Xen 4.17-4.19, unchanged since). */
export const HELPER_MESSAGES: readonly HelperMessageSpec[] = [
  spec(1, 'sr', 'log', [
    {name: 'level', type: 'uint32_t'},
    {name: 'errnoval', type: 'uint32_t'},
    {name: 'context', type: 'STRING'},
    {name: 'formatted', type: 'STRING'},
  ]),
  spec(2, 'sr', 'progress', [
    {name: 'context', type: 'STRING'},
    {name: 'doing_what', type: 'STRING'},
    {name: 'done', type: 'unsigned long'},
    {name: 'total', type: 'unsigned long'},
  ]),
  spec(3, 'srcxA', 'suspend', []),
  spec(4, 'srcxA', 'postcopy', []),
  spec(5, 'srcxA', 'checkpoint', []),
  spec(6, 'srcxA', 'wait_checkpoint', []),
  spec(7, 'scxA', 'switch_qemu_logdirty', [
    {name: 'domid', type: 'uint32_t'},
    {name: 'enable', type: 'unsigned'},
  ]),
  spec(8, 'rcxW', 'static_data_done', [{name: 'missing', type: 'unsigned'}]),
  spec(9, 'rcx', 'restore_results', [
    {name: 'store_gfn', type: 'xen_pfn_t'},
    {name: 'console_gfn', type: 'xen_pfn_t'},
  ]),
  spec(10, 'srW', 'complete', [
    {name: 'retval', type: 'int'},
    {name: 'errnoval', type: 'int'},
  ]),
]

export const HELPER_MSG = {
  log: 1,
  progress: 2,
  suspend: 3,
  postcopy: 4,
  checkpoint: 5,
  wait_checkpoint: 6,
  switch_qemu_logdirty: 7,
  static_data_done: 8,
  restore_results: 9,
  complete: 10,
} as const satisfies Record<HelperMessageName, number>

/** cbflags bits: `1u << msgtype` for each announced callback. */
export const CBFLAGS = {
  suspend: 1 << 3,
  postcopy: 1 << 4,
  checkpoint: 1 << 5,
  wait_checkpoint: 1 << 6,
  switch_qemu_logdirty: 1 << 7,
  static_data_done: 1 << 8,
  restore_results: 1 << 9,
} as const

/** Every cbflags bit a save helper understands, and a restore helper. */
export const SAVE_CBFLAGS = CBFLAGS.suspend | CBFLAGS.postcopy | CBFLAGS.checkpoint | CBFLAGS.wait_checkpoint | CBFLAGS.switch_qemu_logdirty
export const RESTORE_CBFLAGS =
  CBFLAGS.suspend | CBFLAGS.postcopy | CBFLAGS.checkpoint | CBFLAGS.wait_checkpoint | CBFLAGS.static_data_done | CBFLAGS.restore_results

export function helperMessageSpec(type: number): HelperMessageSpec | undefined {
  return HELPER_MESSAGES[type - 1]
}

/** xentoollog levels (tools/include/xentoollog.h), the `level` of a log message. */
export const XTL_LEVELS = ['none', 'debug', 'verbose', 'detail', 'progress', 'info', 'notice', 'warn', 'error', 'critical'] as const
export type XtlLevelName = (typeof XTL_LEVELS)[number]
export const XTL = {
  NONE: 0,
  DEBUG: 1,
  VERBOSE: 2,
  DETAIL: 3,
  PROGRESS: 4,
  INFO: 5,
  NOTICE: 6,
  WARN: 7,
  ERROR: 8,
  CRITICAL: 9,
} as const

export function xtlLevelName(level: number): XtlLevelName | `level ${number}` {
  return XTL_LEVELS[level] ?? `level ${level}`
}

export type HelperMessage =
  | {readonly type: 'log'; readonly level: number; readonly errnoval: number; readonly context: string; readonly formatted: string}
  | {readonly type: 'progress'; readonly context: string; readonly doingWhat: string; readonly done: number; readonly total: number}
  | {readonly type: 'suspend'}
  | {readonly type: 'postcopy'}
  | {readonly type: 'checkpoint'}
  | {readonly type: 'wait_checkpoint'}
  | {readonly type: 'switch_qemu_logdirty'; readonly domid: number; readonly enable: number}
  | {readonly type: 'static_data_done'; readonly missing: number}
  | {readonly type: 'restore_results'; readonly storeGfn: bigint; readonly consoleGfn: bigint}
  | {readonly type: 'complete'; readonly retval: number; readonly errnoval: number}

export type HelperProtocolErrorCode =
  | 'short-body' // a body too short to hold its msgtype
  | 'unknown-message' // a msgtype outside 1..10
  | 'truncated-argument' // the body ends inside an argument
  | 'bad-string' // a STRING of length 0 or without its trailing NUL
  | 'trailing-bytes' // bytes after the last argument
  | 'too-long' // (encoding) a body over 65535 bytes
  | 'truncated-frame' // the byte stream ended inside a message
  | 'bad-value' // (encoding) an argument outside its type's range, a NUL inside a string
  | 'bad-reply' // a reply that is not 4 bytes

export class HelperProtocolError extends Error {
  override readonly name = 'HelperProtocolError'
  constructor(
    readonly code: HelperProtocolErrorCode,
    readonly detail: string,
    /** Offset of the message's msglen in the helper's output, when decoding a stream. */
    readonly offset?: number,
    /** 0-based index of the message in the helper's output. */
    readonly index?: number,
    /** The msgtype at fault, when known. */
    readonly msgtype?: number,
  ) {
    super(describe(detail, offset, index, msgtype))
  }
}

function describe(detail: string, offset?: number, index?: number, msgtype?: number): string {
  const where: string[] = []
  if (index !== undefined) where.push(`message #${index}`)
  if (msgtype !== undefined) where.push(`type ${msgtype}${helperMessageSpec(msgtype) ? ` (${helperMessageSpec(msgtype)!.name})` : ''}`)
  if (offset !== undefined) where.push(`at offset ${offset}`)
  return where.length ? `helper ${where.join(', ')}: ${detail}` : `helper message: ${detail}`
}

// ---------------------------------------------------------------------------------------------------
// Encoding (the helper's end)

class BodyWriter {
  readonly parts: Buffer[] = []
  length = 0
  push(b: Buffer): void {
    this.parts.push(b)
    this.length += b.length
  }
  u16(v: number): void {
    const b = Buffer.allocUnsafe(2)
    b.writeUInt16LE(v)
    this.push(b)
  }
  u32(v: number, what: string): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new HelperProtocolError('bad-value', `${what}=${v} is not a uint32`)
    const b = Buffer.allocUnsafe(4)
    b.writeUInt32LE(v)
    this.push(b)
  }
  i32(v: number, what: string): void {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new HelperProtocolError('bad-value', `${what}=${v} is not an int`)
    const b = Buffer.allocUnsafe(4)
    b.writeInt32LE(v)
    this.push(b)
  }
  u64(v: number | bigint, what: string): void {
    const big = typeof v === 'bigint' ? v : Number.isSafeInteger(v) ? BigInt(v) : -1n
    if (big < 0n || big > 0xffffffffffffffffn) throw new HelperProtocolError('bad-value', `${what}=${v} is not an unsigned 64-bit value`)
    const b = Buffer.allocUnsafe(8)
    b.writeBigUInt64LE(big)
    this.push(b)
  }
  str(s: string, what: string): void {
    const bytes = Buffer.from(s, 'utf8')
    if (bytes.includes(0)) throw new HelperProtocolError('bad-value', `${what} contains a NUL byte`)
    const b = Buffer.allocUnsafe(4 + bytes.length + 1)
    b.writeUInt32LE(bytes.length + 1, 0)
    bytes.copy(b, 4)
    b[4 + bytes.length] = 0
    this.push(b)
  }
}

/** The body of a message: `{u16 msgtype; args}`. */
export function encodeHelperMessageBody(msg: HelperMessage): Buffer {
  const w = new BodyWriter()
  w.u16(HELPER_MSG[msg.type])
  switch (msg.type) {
    case 'log':
      w.u32(msg.level, 'level')
      w.u32(msg.errnoval, 'errnoval')
      w.str(msg.context, 'context')
      w.str(msg.formatted, 'formatted')
      break
    case 'progress':
      w.str(msg.context, 'context')
      w.str(msg.doingWhat, 'doing_what')
      w.u64(msg.done, 'done')
      w.u64(msg.total, 'total')
      break
    case 'switch_qemu_logdirty':
      w.u32(msg.domid, 'domid')
      w.u32(msg.enable, 'enable')
      break
    case 'static_data_done':
      w.u32(msg.missing, 'missing')
      break
    case 'restore_results':
      w.u64(msg.storeGfn, 'store_gfn')
      w.u64(msg.consoleGfn, 'console_gfn')
      break
    case 'complete':
      w.i32(msg.retval, 'retval')
      w.i32(msg.errnoval, 'errnoval')
      break
    case 'suspend':
    case 'postcopy':
    case 'checkpoint':
    case 'wait_checkpoint':
      break
  }
  return Buffer.concat(w.parts, w.length)
}

/** A whole frame as the helper writes it: `u16 msglen` then the body. */
export function encodeHelperMessage(msg: HelperMessage): Buffer {
  const body = encodeHelperMessageBody(msg)
  if (body.length > HELPER_MAX_BODY) {
    throw new HelperProtocolError('too-long', `a ${msg.type} message of ${body.length} bytes does not fit msglen (< 64 KiB)`)
  }
  const frame = Buffer.allocUnsafe(HELPER_LEN_SIZE + body.length)
  frame.writeUInt16LE(body.length, 0)
  body.copy(frame, HELPER_LEN_SIZE)
  return frame
}

/** The toolstack's answer: one host int. */
export function encodeHelperReply(value: number): Buffer {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
    throw new HelperProtocolError('bad-value', `reply ${value} is not an int`)
  }
  const b = Buffer.allocUnsafe(HELPER_REPLY_SIZE)
  b.writeInt32LE(value, 0)
  return b
}

/** The helper's reading of a reply. */
export function decodeHelperReply(bytes: Buffer): number {
  if (bytes.length !== HELPER_REPLY_SIZE) {
    throw new HelperProtocolError('bad-reply', `a reply is ${HELPER_REPLY_SIZE} bytes, got ${bytes.length}`)
  }
  return bytes.readInt32LE(0)
}

// ---------------------------------------------------------------------------------------------------
// Decoding (the toolstack's end)

class BodyReader {
  pos = HELPER_TYPE_SIZE
  constructor(
    private readonly body: Buffer,
    private readonly fail: (code: HelperProtocolErrorCode, detail: string) => never,
  ) {}
  #need(n: number, what: string): void {
    if (this.body.length - this.pos < n) {
      this.fail('truncated-argument', `body ends inside ${what} (needs ${n} bytes at ${this.pos}, body is ${this.body.length})`)
    }
  }
  u32(what: string): number {
    this.#need(4, what)
    const v = this.body.readUInt32LE(this.pos)
    this.pos += 4
    return v
  }
  i32(what: string): number {
    this.#need(4, what)
    const v = this.body.readInt32LE(this.pos)
    this.pos += 4
    return v
  }
  u64(what: string): bigint {
    this.#need(8, what)
    const v = this.body.readBigUInt64LE(this.pos)
    this.pos += 8
    return v
  }
  str(what: string): string {
    const len = this.u32(`the length of ${what}`)
    if (len === 0) this.fail('bad-string', `${what} has length 0 (a C string has at least its NUL)`)
    this.#need(len, what)
    const bytes = this.body.subarray(this.pos, this.pos + len)
    if (bytes[len - 1] !== 0) this.fail('bad-string', `${what} (${len} bytes) does not end in NUL`)
    this.pos += len
    const nul = bytes.indexOf(0)
    return bytes.toString('utf8', 0, nul)
  }
  end(): void {
    if (this.pos !== this.body.length) {
      this.fail('trailing-bytes', `${this.body.length - this.pos} bytes after the last argument`)
    }
  }
}

export interface DecodeSite {
  readonly offset?: number
  readonly index?: number
}

/** Decodes one message body (`{u16 msgtype; args}`), strictly as libxl's receiver does. */
export function decodeHelperMessageBody(body: Buffer, site: DecodeSite = {}): HelperMessage {
  if (body.length < HELPER_TYPE_SIZE) {
    throw new HelperProtocolError('short-body', `body of ${body.length} bytes has no msgtype`, site.offset, site.index)
  }
  const type = body.readUInt16LE(0)
  const fail = (code: HelperProtocolErrorCode, detail: string): never => {
    throw new HelperProtocolError(code, detail, site.offset, site.index, type)
  }
  const spec = helperMessageSpec(type)
  if (!spec) fail('unknown-message', `unknown msgtype ${type} (known: 1..${HELPER_MESSAGES.length})`)
  const r = new BodyReader(body, fail)
  let msg: HelperMessage
  switch (spec!.name) {
    case 'log': {
      const level = r.u32('level')
      const errnoval = r.u32('errnoval')
      const context = r.str('context')
      const formatted = r.str('formatted')
      msg = {type: 'log', level, errnoval, context, formatted}
      break
    }
    case 'progress': {
      const context = r.str('context')
      const doingWhat = r.str('doing_what')
      const done = Number(r.u64('done'))
      const total = Number(r.u64('total'))
      msg = {type: 'progress', context, doingWhat, done, total}
      break
    }
    case 'switch_qemu_logdirty': {
      const domid = r.u32('domid')
      const enable = r.u32('enable')
      msg = {type: 'switch_qemu_logdirty', domid, enable}
      break
    }
    case 'static_data_done':
      msg = {type: 'static_data_done', missing: r.u32('missing')}
      break
    case 'restore_results': {
      const storeGfn = r.u64('store_gfn')
      const consoleGfn = r.u64('console_gfn')
      msg = {type: 'restore_results', storeGfn, consoleGfn}
      break
    }
    case 'complete': {
      const retval = r.i32('retval')
      const errnoval = r.i32('errnoval')
      msg = {type: 'complete', retval, errnoval}
      break
    }
    case 'suspend':
    case 'postcopy':
    case 'checkpoint':
    case 'wait_checkpoint':
      msg = {type: spec!.name}
      break
  }
  r.end()
  return msg
}

export interface DecodedHelperMessage {
  readonly message: HelperMessage
  /** Offset of its msglen in the helper's output. */
  readonly offset: number
  /** 0-based index in the helper's output. */
  readonly index: number
  /** Frame size: 2 + msglen. */
  readonly size: number
}

/**
 * Turns the helper's output, in whatever pieces it arrives, into messages. After an error the
 * decoder is spent: every later push throws the same error.
 */
export class HelperMessageDecoder {
  #pending: Buffer = Buffer.alloc(0)
  #offset = 0
  #index = 0
  #error: HelperProtocolError | undefined

  /** Bytes taken so far that belong to a message not complete yet. */
  get pendingBytes(): number {
    return this.#pending.length
  }

  /** Bytes consumed as whole messages. */
  get offset(): number {
    return this.#offset
  }

  /** Messages decoded so far. */
  get count(): number {
    return this.#index
  }

  push(chunk: Buffer): DecodedHelperMessage[] {
    if (this.#error) throw this.#error
    let buf = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk])
    const out: DecodedHelperMessage[] = []
    try {
      while (buf.length >= HELPER_LEN_SIZE) {
        const msglen = buf.readUInt16LE(0)
        const size = HELPER_LEN_SIZE + msglen
        if (buf.length < size) break
        const message = decodeHelperMessageBody(buf.subarray(HELPER_LEN_SIZE, size), {offset: this.#offset, index: this.#index})
        out.push({message, offset: this.#offset, index: this.#index, size})
        this.#offset += size
        this.#index++
        buf = buf.subarray(size)
      }
    } catch (err) {
      if (err instanceof HelperProtocolError) this.#error = err
      throw err
    }
    // Copy a leftover so a large chunk is not kept alive for a few bytes.
    this.#pending = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf)
    return out
  }

  /** The output has ended: throws 'truncated-frame' when it ended inside a message. */
  end(): void {
    if (this.#error) throw this.#error
    if (this.#pending.length === 0) return
    const have = this.#pending.length
    const detail =
      have < HELPER_LEN_SIZE
        ? `output ended after ${have} byte of a message length`
        : `output ended after ${have - HELPER_LEN_SIZE} of ${this.#pending.readUInt16LE(0)} body bytes`
    this.#error = new HelperProtocolError('truncated-frame', detail, this.#offset, this.#index)
    throw this.#error
  }
}
