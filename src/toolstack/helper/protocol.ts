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

/**
 * The message table, `@msgs` of the .pl as it is written there: msgtype (its position, from 1),
 * flags, name, and the arguments as (type, name) pairs. Everything else about a message is derived
 * from it: the numbers, the cbflags bits, the TypeScript type of a message (an argument `doing_what`
 * is the field `doingWhat`), whether it needs a reply, the encoder and the decoder.
 *
 * Flags: `s`/`r` sent by a save/restore helper; `c` a callback of libxl's callbacks struct; `x` its
 * presence is announced in cbflags (bit `1 << msgtype`); `W` needs a reply at once, `A` a reply
 * when the toolstack's asynchronous work is done (Xen 4.17-4.19, unchanged since).
 */
export const HELPER_MESSAGE_TABLE = [
  {number: 1, flags: 'sr', name: 'log', args: [['uint32_t', 'level'], ['uint32_t', 'errnoval'], ['STRING', 'context'], ['STRING', 'formatted']]},
  {number: 2, flags: 'sr', name: 'progress', args: [['STRING', 'context'], ['STRING', 'doing_what'], ['unsigned long', 'done'], ['unsigned long', 'total']]},
  {number: 3, flags: 'srcxA', name: 'suspend', args: []},
  {number: 4, flags: 'srcxA', name: 'postcopy', args: []},
  {number: 5, flags: 'srcxA', name: 'checkpoint', args: []},
  {number: 6, flags: 'srcxA', name: 'wait_checkpoint', args: []},
  {number: 7, flags: 'scxA', name: 'switch_qemu_logdirty', args: [['uint32_t', 'domid'], ['unsigned', 'enable']]},
  {number: 8, flags: 'rcxW', name: 'static_data_done', args: [['unsigned', 'missing']]},
  {number: 9, flags: 'rcx', name: 'restore_results', args: [['xen_pfn_t', 'store_gfn'], ['xen_pfn_t', 'console_gfn']]},
  {number: 10, flags: 'srW', name: 'complete', args: [['int', 'retval'], ['int', 'errnoval']]},
] as const satisfies readonly {
  readonly number: number
  readonly flags: string
  readonly name: string
  readonly args: readonly (readonly [HelperArgType, string])[]
}[]

type Row = (typeof HELPER_MESSAGE_TABLE)[number]
export type HelperMessageName = Row['name']
/** The messages whose flags hold F. */
type Flagged<F extends string> = Extract<Row, {flags: `${string}${F}${string}`}>['name']
/** `doing_what` -> `doingWhat`: a C name as a field or callback name. */
type Camel<S extends string> = S extends `${infer H}_${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S
/** What an argument decodes to: counts are numbers, frame numbers stay exact. */
type ArgValue<T extends HelperArgType> = T extends 'STRING' ? string : T extends 'xen_pfn_t' ? bigint : number
type Fields<A extends Row['args']> = {readonly [P in A[number] as Camel<P[1]>]: ArgValue<P[0]>}
type Flat<T> = {[K in keyof T]: T[K]} & {}

/** One message as a value: `{type: 'progress', context, doingWhat, done, total}`. */
export type HelperMessageOf<N extends HelperMessageName> = N extends unknown ? Flat<{readonly type: N} & Fields<Extract<Row, {name: N}>['args']>> : never
export type HelperMessage = HelperMessageOf<HelperMessageName>
/** The messages that need a reply (W or A): the helper blocks reading an int after them. */
export type HelperCall = HelperMessageOf<Flagged<'W'> | Flagged<'A'>>
/** The messages that need none. */
export type HelperNotice = Exclude<HelperMessage, HelperCall>
/** The callbacks (`c`) by their names in code: `waitCheckpoint`, `switchQemuLogdirty`, ... */
export type HelperCallbackName = Camel<Flagged<'c'>>
/** A message's arguments in table order, as a callback takes them. */
export type HelperArgValues<N extends HelperMessageName> = ArgTuple<Extract<Row, {name: N}>['args']>
type ArgTuple<A> = {-readonly [I in keyof A]: A[I] extends readonly [infer T extends HelperArgType, string] ? ArgValue<T> : never}
/**
 * A function for each callback, by its name in code, taking its message's arguments in table order
 * and returning `Reply` when the message needs a reply, else `NoReply`.
 */
export type HelperCallbackFunctions<Reply, NoReply> = {
  readonly [N in Flagged<'c'> as Camel<N>]?: (...values: HelperArgValues<N>) => N extends HelperCall['type'] ? Reply : NoReply
}

export interface HelperArgSpec {
  /** The C type and name of the .pl. */
  readonly type: HelperArgType
  readonly name: string
  /** Its field in a HelperMessage: the name camelCased. */
  readonly field: string
}

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
  /** The callback's name in code, the message's name camelCased (`waitCheckpoint`). */
  readonly callbackName: string
  /**
   * `x`: its presence is announced to the helper in cbflags (bit `1 << number`); the helper only
   * installs (and so only ever sends) the callbacks whose bit is set.
   */
  readonly announced: boolean
  /** `W`: needs a reply, synchronous; `A`: needs a reply, asynchronous; else no reply. */
  readonly reply: 'none' | 'sync' | 'async'
  /** `1 << number` when announced. */
  readonly cbflag?: number
  readonly args: readonly HelperArgSpec[]
}

const camel = (name: string): string => name.replace(/_(.)/g, (_, c: string) => c.toUpperCase())

/** The table with what its flags say spelt out, in order. */
export const HELPER_MESSAGES: readonly HelperMessageSpec[] = HELPER_MESSAGE_TABLE.map(({number, flags, name, args}) => {
  const announced = flags.includes('x')
  return {
    number,
    name,
    flags,
    save: flags.includes('s'),
    restore: flags.includes('r'),
    callback: flags.includes('c'),
    callbackName: camel(name),
    announced,
    reply: flags.includes('W') ? 'sync' : flags.includes('A') ? 'async' : 'none',
    ...(announced ? {cbflag: 1 << number} : {}),
    args: args.map(([type, arg]) => ({type, name: arg, field: camel(arg)})),
  }
})

/** msgtype by name. */
export const HELPER_MSG = Object.fromEntries(HELPER_MESSAGES.map((s) => [s.name, s.number])) as {
  readonly [R in Row as R['name']]: R['number']
}

/** cbflags bits: `1u << msgtype` for each announced callback. */
export const CBFLAGS = Object.fromEntries(HELPER_MESSAGES.flatMap((s) => (s.cbflag ? [[s.name, s.cbflag]] : []))) as {
  readonly [N in Flagged<'x'>]: number
}

/**
 * libxc's XGR_CHECKPOINT_* answers to the restore helper's checkpoint callback (and to COLO's
 * postcopy, wait_checkpoint and suspend on the restore side, XEN-FACTS §5.4): the toolstack sends
 * them, the helper's restore acts on them.
 */
export const XGR_CHECKPOINT = {ERROR: 0, SUCCESS: 1, FAILOVER: 2} as const

/** Every cbflags bit a save helper understands, and a restore helper. */
export const SAVE_CBFLAGS = cbflagsOf((s) => s.save)
export const RESTORE_CBFLAGS = cbflagsOf((s) => s.restore)

function cbflagsOf(which: (s: HelperMessageSpec) => boolean): number {
  return HELPER_MESSAGES.reduce((flags, s) => (which(s) && s.cbflag ? flags | s.cbflag : flags), 0)
}

export function helperMessageSpec(type: HelperMessageName): HelperMessageSpec
export function helperMessageSpec(type: number): HelperMessageSpec | undefined
export function helperMessageSpec(type: number | HelperMessageName): HelperMessageSpec | undefined {
  return typeof type === 'number' ? HELPER_MESSAGES[type - 1] : HELPER_MESSAGES[HELPER_MSG[type] - 1]
}

/** A message's arguments in table order. */
export function helperMessageValues(msg: HelperMessage): unknown[] {
  return helperMessageSpec(msg.type).args.map((a) => (msg as unknown as Record<string, unknown>)[a.field])
}

/** The message of that name with these arguments, in table order. */
export function helperMessage<N extends HelperMessageName>(type: N, ...values: HelperArgValues<N>): HelperMessageOf<N> {
  const fields = helperMessageSpec(type).args.map((a, i) => [a.field, values[i]])
  return {type, ...Object.fromEntries(fields)} as HelperMessageOf<N>
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

/** The body of a message: `{u16 msgtype; args}`, its arguments as the table lists them. */
export function encodeHelperMessageBody(msg: HelperMessage): Buffer {
  const spec = helperMessageSpec(msg.type)
  const w = new BodyWriter()
  w.u16(spec.number)
  const values = helperMessageValues(msg)
  spec.args.forEach((a, i) => ARG_CODECS[a.type].write(w, values[i], a.name))
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

/** Each argument type's two ends: how the helper writes it, how the toolstack reads it. */
interface ArgCodec {
  write(w: BodyWriter, value: unknown, what: string): void
  read(r: BodyReader, what: string): unknown
}
const U32: ArgCodec = {write: (w, v, what) => w.u32(v as number, what), read: (r, what) => r.u32(what)}
const U64: ArgCodec = {write: (w, v, what) => w.u64(v as number | bigint, what), read: (r, what) => r.u64(what)}
const ARG_CODECS: {readonly [T in HelperArgType]: ArgCodec} = {
  uint32_t: U32,
  unsigned: U32,
  int: {write: (w, v, what) => w.i32(v as number, what), read: (r, what) => r.i32(what)},
  // A count: taken as a number (exact up to 2^53), as callers use it.
  'unsigned long': {write: U64.write, read: (r, what) => Number(r.u64(what))},
  xen_pfn_t: U64,
  STRING: {write: (w, v, what) => w.str(v as string, what), read: (r, what) => r.str(what)},
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
  const values = spec!.args.map((a) => ARG_CODECS[a.type].read(r, a.name))
  r.end()
  return helperMessage(spec!.name, ...(values as HelperArgValues<HelperMessageName>))
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
