/**
 * The save/restore helper protocol codecs and argv, against Xen's definitions: the message table
 * and cbflags checked field by field against @msgs of libxl_save_msgs_gen.pl (4.17), golden frames
 * built by hand from the .pl's argument encodings (plus one frame captured from Xen's own
 * libxl-save-helper), the incremental decoder under arbitrary chunking, malformed frames, and the
 * argv of libxl_save_callout.c's run_helper.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import fc from 'fast-check'
import {describe, expect, it} from 'vitest'

import {
  CBFLAGS,
  HELPER_MAX_BODY,
  HELPER_MESSAGES,
  HELPER_MSG,
  HelperArgvError,
  HelperMessageDecoder,
  HelperProtocolError,
  RESTORE_CBFLAGS,
  SAVE_CBFLAGS,
  STREAM_TYPE,
  XCFLAGS,
  XTL,
  buildHelperArgv,
  cbflagNames,
  cbflagsFor,
  decodeHelperMessageBody,
  decodeHelperReply,
  encodeHelperMessage,
  encodeHelperReply,
  parseHelperArgv,
  xtlLevelName,
  type HelperMessage,
} from '../src/toolstack/helper/index.js'
import {HelperSide} from '../src/toolstack/save-helper/helper-side.js'
import {ProgressGate} from '../src/toolstack/save-helper/progress-gate.js'

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const str = (s: string): string => Buffer.from(s + '\0').toString('hex')

describe('the message table (libxl_save_msgs_gen.pl @msgs)', () => {
  it('has the 10 messages in order with the flags of the .pl', () => {
    expect(HELPER_MESSAGES.map((m) => [m.number, m.flags, m.name])).toEqual([
      [1, 'sr', 'log'],
      [2, 'sr', 'progress'],
      [3, 'srcxA', 'suspend'],
      [4, 'srcxA', 'postcopy'],
      [5, 'srcxA', 'checkpoint'],
      [6, 'srcxA', 'wait_checkpoint'],
      [7, 'scxA', 'switch_qemu_logdirty'],
      [8, 'rcxW', 'static_data_done'],
      [9, 'rcx', 'restore_results'],
      [10, 'srW', 'complete'],
    ])
    for (const m of HELPER_MESSAGES) expect(HELPER_MSG[m.name]).toBe(m.number)
  })

  it('has the argument types of the .pl', () => {
    const args = Object.fromEntries(HELPER_MESSAGES.map((m) => [m.name, m.args.map((a) => `${a.type} ${a.name}`)]))
    expect(args).toEqual({
      log: ['uint32_t level', 'uint32_t errnoval', 'STRING context', 'STRING formatted'],
      progress: ['STRING context', 'STRING doing_what', 'unsigned long done', 'unsigned long total'],
      suspend: [],
      postcopy: [],
      checkpoint: [],
      wait_checkpoint: [],
      switch_qemu_logdirty: ['uint32_t domid', 'unsigned enable'],
      static_data_done: ['unsigned missing'],
      restore_results: ['xen_pfn_t store_gfn', 'xen_pfn_t console_gfn'],
      complete: ['int retval', 'int errnoval'],
    })
  })

  it('derives save/restore, reply kind and cbflags bits (1u << msgnum for x) from the flags', () => {
    const by = Object.fromEntries(HELPER_MESSAGES.map((m) => [m.name, m]))
    expect(by.suspend).toMatchObject({save: true, restore: true, callback: true, announced: true, reply: 'async', cbflag: 0x8})
    expect(by.switch_qemu_logdirty).toMatchObject({save: true, restore: false, reply: 'async', cbflag: 0x80})
    expect(by.static_data_done).toMatchObject({save: false, restore: true, reply: 'sync', cbflag: 0x100})
    expect(by.restore_results).toMatchObject({save: false, restore: true, reply: 'none', cbflag: 0x200})
    expect(by.complete).toMatchObject({save: true, restore: true, callback: false, announced: false, reply: 'sync'})
    expect(by.log).toMatchObject({reply: 'none', announced: false})
    expect(by.log!.cbflag).toBeUndefined()
    expect(CBFLAGS).toEqual({
      suspend: 0x8,
      postcopy: 0x10,
      checkpoint: 0x20,
      wait_checkpoint: 0x40,
      switch_qemu_logdirty: 0x80,
      static_data_done: 0x100,
      restore_results: 0x200,
    })
    expect(SAVE_CBFLAGS).toBe(0xf8)
    expect(RESTORE_CBFLAGS).toBe(0x378)
  })

  it('gives the typical cbflags of XEN-FACTS §5.4 from the callbacks libxl installs', () => {
    const f = (): number => 1
    expect(cbflagsFor('save', {suspend: f, switchQemuLogdirty: f})).toBe(0x88) // plain save
    expect(cbflagsFor('save', {suspend: f, postcopy: f, checkpoint: f, switchQemuLogdirty: f})).toBe(0xb8) // Remus
    expect(cbflagsFor('save', {suspend: f, postcopy: f, checkpoint: f, waitCheckpoint: f, switchQemuLogdirty: f})).toBe(0xf8) // COLO
    expect(cbflagsFor('restore', {staticDataDone: f})).toBe(0x300) // plain restore
    expect(cbflagsFor('restore', {staticDataDone: f, checkpoint: f})).toBe(0x320) // Remus
    expect(cbflagsFor('restore', {staticDataDone: f, checkpoint: f, suspend: f, postcopy: f, waitCheckpoint: f})).toBe(0x378) // COLO
    // A restore-only callback is not announced to a save helper.
    expect(cbflagsFor('save', {staticDataDone: f})).toBe(0)
    expect(cbflagNames(0x88)).toEqual(['suspend', 'switch_qemu_logdirty'])
  })

  it('our helper installs the callbacks those cbflags announce to its mode, and no others', () => {
    const names = (mode: 'save' | 'restore', cbflags: number): string[] => Object.keys(new HelperSide(-1, -1).callbacks(mode, cbflags))
    expect(names('save', 0x88)).toEqual(['suspend', 'switchQemuLogdirty'])
    expect(names('save', 0xb8)).toEqual(['suspend', 'postcopy', 'checkpoint', 'switchQemuLogdirty'])
    expect(names('save', 0xf8)).toEqual(['suspend', 'postcopy', 'checkpoint', 'waitCheckpoint', 'switchQemuLogdirty'])
    expect(names('restore', 0x320)).toEqual(['checkpoint', 'staticDataDone', 'restoreResults'])
    expect(names('restore', 0x378)).toEqual(['suspend', 'postcopy', 'checkpoint', 'waitCheckpoint', 'staticDataDone', 'restoreResults'])
    expect(names('save', 0x300)).toEqual([])
  })

  it('a callback of our helper writes its frame and returns the reply', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helper-side-'))
    try {
      fs.writeFileSync(path.join(dir, 'in'), hex('02000000'))
      const inFd = fs.openSync(path.join(dir, 'in'), 'r')
      const outFd = fs.openSync(path.join(dir, 'out'), 'w')
      const side = new HelperSide(inFd, outFd)
      expect(await side.callbacks('restore', 0x300).staticDataDone!(3)).toBe(2)
      side.callbacks('restore', 0x300).restoreResults!(0x10n, 0x11n)
      fs.closeSync(inFd)
      fs.closeSync(outFd)
      expect(fs.readFileSync(path.join(dir, 'out')).toString('hex')).toBe(hex('0600 0800 03000000 1200 0900 1000000000000000 1100000000000000').toString('hex'))
    } finally {
      fs.rmSync(dir, {recursive: true, force: true})
    }
  })

  it('names xentoollog levels', () => {
    expect(XTL.DEBUG).toBe(1)
    expect(XTL.ERROR).toBe(8)
    expect(xtlLevelName(4)).toBe('progress')
    expect(xtlLevelName(9)).toBe('critical')
    expect(xtlLevelName(42)).toBe('level 42')
  })
})

/** Frames built by hand: u16 msglen (LE), then u16 msgtype and the arguments, packed. */
const GOLDEN: Array<[string, HelperMessage, string]> = [
  ['suspend', {type: 'suspend'}, '0200 0300'],
  ['wait_checkpoint', {type: 'wait_checkpoint'}, '0200 0600'],
  [
    'log (uint32 level, uint32 errnoval, STRING, STRING)',
    {type: 'log', level: 8, errnoval: 2, context: 'xc', formatted: 'boom'},
    `1a00 0100 08000000 02000000 03000000 ${str('xc')} 05000000 ${str('boom')}`,
  ],
  [
    'progress (STRING, STRING, unsigned long x2)',
    {type: 'progress', context: '', doingWhat: 'Frames', done: 1024, total: 2 ** 33},
    `2200 0200 01000000 00 07000000 ${str('Frames')} 0004000000000000 0000000002000000`,
  ],
  ['switch_qemu_logdirty (uint32, unsigned)', {type: 'switch_qemu_logdirty', domid: 5, enable: 1}, '0a00 0700 05000000 01000000'],
  ['static_data_done (unsigned)', {type: 'static_data_done', missing: 3}, '0600 0800 03000000'],
  [
    'restore_results (xen_pfn_t x2)',
    {type: 'restore_results', storeGfn: 0x123456789abcdef0n, consoleGfn: 0xffffffffffffffffn},
    '1200 0900 f0debc9a78563412 ffffffffffffffff',
  ],
  ['complete (int, int)', {type: 'complete', retval: -1, errnoval: 5}, '0a00 0a00 ffffffff 05000000'],
  [
    'log as Xen 4.17 libxl-save-helper wrote it (captured)',
    {type: 'log', level: 1, errnoval: 0, context: 'libxl-save-helper', formatted: 'starting save'},
    '3200 0100 01000000 00000000 12000000 6c69 6278 6c2d 7361 7665 2d68 656c 7065 7200 0e000000 7374 6172 7469 6e67 2073 6176 6500',
  ],
]

describe('golden frames', () => {
  it.each(GOLDEN)('%s', (_, msg, bytes) => {
    const frame = hex(bytes)
    expect(encodeHelperMessage(msg).toString('hex')).toBe(frame.toString('hex'))
    const d = new HelperMessageDecoder()
    const got = d.push(frame)
    expect(got).toHaveLength(1)
    expect(got[0]!.message).toEqual(msg)
    expect(got[0]!.size).toBe(frame.length)
    d.end()
  })

  it('replies are one little-endian int', () => {
    expect(encodeHelperReply(1).toString('hex')).toBe('01000000')
    expect(encodeHelperReply(-2).toString('hex')).toBe('feffffff')
    expect(decodeHelperReply(hex('02000000'))).toBe(2)
    expect(decodeHelperReply(hex('ffffff7f'))).toBe(0x7fffffff)
    expect(() => encodeHelperReply(2 ** 31)).toThrow(HelperProtocolError)
    expect(() => encodeHelperReply(0.5)).toThrow(/not an int/)
    expect(() => decodeHelperReply(hex('0100'))).toThrow(/a reply is 4 bytes, got 2/)
  })
})

const u32 = fc.integer({min: 0, max: 0xffffffff})
const i32 = fc.integer({min: -0x80000000, max: 0x7fffffff})
const text = fc.string({maxLength: 40}).map((s) => s.replace(/\0/g, ''))
const u64 = fc.bigInt({min: 0n, max: 0xffffffffffffffffn})
const arbMessage: fc.Arbitrary<HelperMessage> = fc.oneof(
  fc.record({type: fc.constant('log' as const), level: u32, errnoval: u32, context: text, formatted: text}),
  fc.record({
    type: fc.constant('progress' as const),
    context: text,
    doingWhat: text,
    done: fc.integer({min: 0, max: Number.MAX_SAFE_INTEGER}),
    total: fc.integer({min: 0, max: Number.MAX_SAFE_INTEGER}),
  }),
  fc.constantFrom<HelperMessage>({type: 'suspend'}, {type: 'postcopy'}, {type: 'checkpoint'}, {type: 'wait_checkpoint'}),
  fc.record({type: fc.constant('switch_qemu_logdirty' as const), domid: u32, enable: u32}),
  fc.record({type: fc.constant('static_data_done' as const), missing: u32}),
  fc.record({type: fc.constant('restore_results' as const), storeGfn: u64, consoleGfn: u64}),
  fc.record({type: fc.constant('complete' as const), retval: i32, errnoval: i32}),
)

describe('HelperMessageDecoder', () => {
  it('decodes any sequence of messages, however the bytes are cut', () => {
    fc.assert(
      fc.property(fc.array(arbMessage, {maxLength: 30}), fc.array(fc.integer({min: 0, max: 10000}), {maxLength: 40}), (msgs, cuts) => {
        const frames = msgs.map(encodeHelperMessage)
        const all = Buffer.concat(frames)
        const points = [...new Set(cuts.map((c) => c % (all.length + 1)))].sort((a, b) => a - b)
        const d = new HelperMessageDecoder()
        const got: HelperMessage[] = []
        const offsets: number[] = []
        let prev = 0
        for (const p of [...points, all.length]) {
          for (const m of d.push(all.subarray(prev, p))) {
            got.push(m.message)
            offsets.push(m.offset)
            expect(m.index).toBe(got.length - 1)
          }
          prev = p
        }
        d.end()
        expect(got).toEqual(msgs)
        let off = 0
        expect(offsets).toEqual(frames.map((f) => ((off += f.length), off - f.length)))
        expect(d.offset).toBe(all.length)
        expect(d.pendingBytes).toBe(0)
      }),
      {numRuns: 300},
    )
  })

  it('decodes byte by byte', () => {
    const msgs: HelperMessage[] = GOLDEN.map((g) => g[1])
    const all = Buffer.concat(msgs.map(encodeHelperMessage))
    const d = new HelperMessageDecoder()
    const got: HelperMessage[] = []
    for (let i = 0; i < all.length; i++) got.push(...d.push(all.subarray(i, i + 1)).map((m) => m.message))
    expect(got).toEqual(msgs)
  })

  it('treats a C string as ending at its first NUL (what libxl would print)', () => {
    const body = hex(`0100 05000000 00000000 04000000 61006200 02000000 7a00`)
    expect(decodeHelperMessageBody(body)).toEqual({type: 'log', level: 5, errnoval: 0, context: 'a', formatted: 'z'})
  })
})

function decodeError(bytes: string | Buffer, end = false): HelperProtocolError {
  const d = new HelperMessageDecoder()
  try {
    d.push(typeof bytes === 'string' ? hex(bytes) : bytes)
    if (end) d.end()
  } catch (e) {
    expect(e).toBeInstanceOf(HelperProtocolError)
    return e as HelperProtocolError
  }
  throw new Error('no error')
}

describe('malformed frames', () => {
  const ok = encodeHelperMessage({type: 'suspend'}).toString('hex')
  const cases: Array<[string, string, HelperProtocolError['code'], RegExp]> = [
    ['msglen 0', '0000', 'short-body', /body of 0 bytes has no msgtype/],
    ['msglen 1', '0100 03', 'short-body', /body of 1 bytes/],
    ['msgtype 0', '0200 0000', 'unknown-message', /unknown msgtype 0 \(known: 1\.\.10\)/],
    ['msgtype 11', '0200 0b00', 'unknown-message', /unknown msgtype 11/],
    ['msgtype 0xffff', '0200 ffff', 'unknown-message', /unknown msgtype 65535/],
    ['complete cut short', '0600 0a00 00000000', 'truncated-argument', /inside errnoval/],
    ['restore_results cut inside a pfn', '0c00 0900 0100000000000000 0200', 'truncated-argument', /inside console_gfn/],
    ['STRING of length 0', '0e00 0100 01000000 00000000 00000000', 'bad-string', /context has length 0/],
    ['STRING without its NUL', `1400 0100 01000000 00000000 02000000 6162 02000000 6300`, 'bad-string', /context \(2 bytes\) does not end in NUL/],
    ['STRING longer than the body', '1000 0100 01000000 00000000 ff000000 6100', 'truncated-argument', /inside context/],
    ['bytes after the last argument', '0b00 0a00 00000000 00000000 99', 'trailing-bytes', /1 bytes after the last argument/],
    ['a suspend with an argument', '0300 0300 00', 'trailing-bytes', /1 bytes after/],
  ]
  it.each(cases)('%s', (_, bytes, code, message) => {
    const e = decodeError(ok + bytes.replace(/\s+/g, ''))
    expect(e.code).toBe(code)
    expect(e.message).toMatch(message)
    expect(e.index).toBe(1)
    expect(e.offset).toBe(4)
  })

  it('names the message type in the error', () => {
    expect(decodeError('0600 0a00 00000000').message).toBe('helper message #0, type 10 (complete), at offset 0: body ends inside errnoval (needs 4 bytes at 6, body is 6)')
  })

  it('output that ends inside a message', () => {
    expect(decodeError('0a00 0a00 00', true)).toMatchObject({code: 'truncated-frame', detail: 'output ended after 3 of 10 body bytes'})
    expect(decodeError('0a', true)).toMatchObject({code: 'truncated-frame', detail: 'output ended after 1 byte of a message length'})
  })

  it('a decoder stays failed', () => {
    const d = new HelperMessageDecoder()
    expect(() => d.push(hex('0200 6300'))).toThrow(/unknown msgtype 99/)
    expect(() => d.push(hex(ok))).toThrow(/unknown msgtype 99/)
  })

  it('the encoder refuses what the helper could not send', () => {
    expect(() => encodeHelperMessage({type: 'log', level: 1, errnoval: 0, context: 'a\0b', formatted: ''})).toThrow(/context contains a NUL byte/)
    const long = 'x'.repeat(HELPER_MAX_BODY)
    expect(() => encodeHelperMessage({type: 'log', level: 1, errnoval: 0, context: '', formatted: long})).toThrow(
      expect.objectContaining({code: 'too-long'}),
    )
    // The longest log that fits: 2 + 4 + 4 + (4 + 1) + (4 + len + 1) = 65535.
    const fits = 'y'.repeat(HELPER_MAX_BODY - 20)
    expect(encodeHelperMessage({type: 'log', level: 1, errnoval: 0, context: '', formatted: fits}).readUInt16LE(0)).toBe(0xffff)
    expect(() => encodeHelperMessage({type: 'complete', retval: 2 ** 31, errnoval: 0})).toThrow(/retval=2147483648 is not an int/)
    expect(() => encodeHelperMessage({type: 'static_data_done', missing: -1})).toThrow(/missing=-1 is not a uint32/)
    expect(() => encodeHelperMessage({type: 'restore_results', storeGfn: -1n, consoleGfn: 0n})).toThrow(/store_gfn/)
  })
})

describe('argv (libxl_save_callout.c run_helper)', () => {
  it('--save-domain io_fd recv_fd domid xcflags cbflags stream_type', () => {
    const argv = buildHelperArgv({mode: 'save', ioFd: 3, recvFd: -1, domid: 7, xcflags: XCFLAGS.LIVE, cbflags: 0x88, streamType: STREAM_TYPE.PLAIN})
    expect(argv).toEqual(['--save-domain', '3', '-1', '7', '1', '136', '0'])
    expect(parseHelperArgv(argv)).toEqual({mode: 'save', ioFd: 3, recvFd: -1, domid: 7, xcflags: 1, cbflags: 136, streamType: 0})
    const colo = buildHelperArgv({mode: 'save', ioFd: 3, recvFd: 4, domid: 1, xcflags: XCFLAGS.LIVE | XCFLAGS.DEBUG, cbflags: 0xf8, streamType: STREAM_TYPE.COLO})
    expect(colo).toEqual(['--save-domain', '3', '4', '1', '3', '248', '2'])
  })

  it('--restore-domain io_fd send_back_fd domid store_evtchn store_domid console_evtchn console_domid cbflags stream_type', () => {
    const args = {
      mode: 'restore',
      ioFd: 3,
      sendBackFd: 4,
      domid: 12,
      storeEvtchn: 1,
      storeDomid: 0,
      consoleEvtchn: 2,
      consoleDomid: 0,
      cbflags: 0x378,
      streamType: STREAM_TYPE.COLO,
    } as const
    const argv = buildHelperArgv(args)
    expect(argv).toEqual(['--restore-domain', '3', '4', '12', '1', '0', '2', '0', '888', '2'])
    expect(parseHelperArgv(argv)).toEqual(args)
  })

  it('refuses what is not a helper argv', () => {
    const bad: Array<[string[], RegExp]> = [
      [[], /first argument must be --save-domain or --restore-domain/],
      [['--save'], /first argument/],
      [['--save-domain', '3', '-1', '7', '1', '136'], /takes 6 numbers, got 5/],
      [['--save-domain', '3', '-1', '7', '1', '136', '0', '0'], /takes 6 numbers, got 7/],
      [['--save-domain', '-1', '-1', '7', '1', '136', '0'], /io_fd -1 is not a file descriptor/],
      [['--save-domain', '3', '-2', '7', '1', '136', '0'], /recv_fd -2 is not -1 or a file descriptor/],
      [['--save-domain', '3', '-1', '0x7', '1', '136', '0'], /domid "0x7" is not a decimal number/],
      [['--save-domain', '3', '-1', '7', '1', '136', '3'], /stream_type 3 is not 0, 1 or 2/],
      [['--save-domain', '3', '-1', '4294967296', '1', '136', '0'], /domid 4294967296 does not fit 32 bits/],
      [['--restore-domain', '3', '-1', '7', '1', '65536', '2', '0', '768', '0'], /store_domid 65536 is not a domid/],
    ]
    for (const [argv, re] of bad) {
      expect(() => parseHelperArgv(argv)).toThrow(HelperArgvError)
      expect(() => parseHelperArgv(argv)).toThrow(re)
    }
    expect(() => buildHelperArgv({mode: 'save', ioFd: -1, recvFd: -1, domid: 1, xcflags: 0, cbflags: 0, streamType: 0})).toThrow(RangeError)
    expect(() => buildHelperArgv({mode: 'save', ioFd: 3, recvFd: -1, domid: 1, xcflags: 0, cbflags: 0, streamType: 5 as 0})).toThrow(/stream type 5/)
  })
})

describe('ProgressGate: which page progress the helper passes on', () => {
  it('the start and end of each pass always, in between at most one per interval', () => {
    const gate = new ProgressGate(50)
    const seen: string[] = []
    const at = (prefix: string, done: number, total: number, now: number): void => {
      if (gate.pass(prefix, done, total, now)) seen.push(`${prefix} ${done}@${now}`)
    }
    at('Frames iteration 1', 0, 4096, 0)
    for (let done = 1024, now = 10; done < 4096 * 8; done += 1024, now += 10) at('Frames iteration 1', done, 4096 * 8, now)
    at('Frames iteration 1', 4096 * 8, 4096 * 8, 325)
    // A new pass goes at once, whatever the clock says.
    at('Frames iteration 2', 1024, 2048, 326)
    at('Frames iteration 2', 2048, 2048, 327)
    expect(seen).toEqual([
      'Frames iteration 1 0@0',
      'Frames iteration 1 5120@50',
      'Frames iteration 1 10240@100',
      'Frames iteration 1 15360@150',
      'Frames iteration 1 20480@200',
      'Frames iteration 1 25600@250',
      'Frames iteration 1 30720@300',
      'Frames iteration 1 32768@325',
      'Frames iteration 2 1024@326',
      'Frames iteration 2 2048@327',
    ])
  })
})
