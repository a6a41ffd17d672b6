/**
 * QMP without a socket and without QEMU: the line framing (chunking, CRLF, UTF-8 split across
 * chunks, the line bound), the message parser (every kind, every malformed shape), the command
 * encoder, and the session (ids matched across interleaved events and out-of-order replies, replies
 * without id or with an unknown id, late replies, timeouts naming the command, error replies as typed
 * values, event waits with filter / since / timeout, ending with commands pending, arbitrary bytes).
 */
import fc from 'fast-check'
import {describe, expect, it} from 'vitest'

import {
  LineFramer,
  QmpCommandError,
  QmpConnectionError,
  QmpSession,
  QmpTimeoutError,
  encodeQmpCommand,
  formatQmpVersion,
  parseQmpMessage,
  type QmpAnomaly,
} from '../src/toolstack/qmp/index.js'

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}'

const lines = (framer: LineFramer, ...chunks: (string | Buffer)[]) =>
  chunks.flatMap((c) => framer.push(typeof c === 'string' ? Buffer.from(c) : c))

describe('LineFramer', () => {
  it('splits lines at \\n across chunks and drops the \\r of \\r\\n', () => {
    const f = new LineFramer()
    expect(lines(f, 'ab', 'c\r\nde', 'f\n\ng\r', '\n')).toEqual([{line: 'abc'}, {line: 'def'}, {line: ''}, {line: 'g'}])
    expect(f.pendingBytes).toBe(0)
    expect(lines(f, 'tail')).toEqual([])
    expect(f.flush()).toEqual([{line: 'tail'}])
    expect(f.flush()).toEqual([])
  })

  it('decodes UTF-8 split across chunks, and bad UTF-8 without throwing', () => {
    const f = new LineFramer()
    const bytes = Buffer.from('é€\n')
    expect(lines(f, bytes.subarray(0, 1), bytes.subarray(1, 3), bytes.subarray(3))).toEqual([{line: 'é€'}])
    expect(lines(f, Buffer.from([0xff, 0xfe, 0x0a]))).toEqual([{line: '\ufffd\ufffd'}])
  })

  it('does not keep a line over the bound: one overlong item as it goes over, then it frames on', () => {
    const f = new LineFramer(8)
    expect(lines(f, '12345678\n')).toEqual([{line: '12345678'}])
    expect(lines(f, '12345', '6789')).toEqual([{overlong: 9}])
    expect(lines(f, 'abcdef')).toEqual([])
    expect(f.pendingBytes).toBe(0) // nothing of the long line is held
    expect(lines(f, 'gh\nok\n')).toEqual([{line: 'ok'}])
    expect(lines(f, 'x'.repeat(100))).toEqual([{overlong: 100}]) // noticed without its end
    expect(f.flush()).toEqual([])
    expect(lines(f, 'next\n')).toEqual([{line: 'next'}])
  })

  it('holds at most the bound whatever the chunking', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({maxLength: 40}), {maxLength: 30}), (chunks) => {
        const f = new LineFramer(16)
        for (const c of chunks) {
          for (const item of f.push(Buffer.from(c))) if ('line' in item) expect(Buffer.byteLength(item.line)).toBeLessThanOrEqual(16 * 3)
          expect(f.pendingBytes).toBeLessThanOrEqual(16)
        }
      }),
    )
  })

  it('refuses a bound that is not positive', () => {
    expect(() => new LineFramer(0)).toThrow(RangeError)
  })
})

describe('parseQmpMessage', () => {
  it('reads the greeting of QEMU 7.2 (version kept)', () => {
    const m = parseQmpMessage(GREETING)
    expect(m).toEqual({
      kind: 'greeting',
      greeting: {version: {major: 7, minor: 2, micro: 22, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3'}, capabilities: ['oob']},
    })
    if (m.kind === 'greeting') expect(formatQmpVersion(m.greeting.version)).toBe('7.2.22')
  })

  it('reads replies with and without id, error replies and events', () => {
    expect(parseQmpMessage('{"return": {"status": "running"}, "id": 2}')).toEqual({kind: 'return', value: {status: 'running'}, hasId: true, id: 2})
    expect(parseQmpMessage('{"return": {}}')).toEqual({kind: 'return', value: {}, hasId: false})
    expect(parseQmpMessage('{"id": 5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}')).toEqual({
      kind: 'error',
      errorClass: 'CommandNotFound',
      desc: 'The command nope has not been found',
      hasId: true,
      id: 5,
    })
    expect(parseQmpMessage('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": false}}')).toEqual({
      kind: 'event',
      event: {event: 'SHUTDOWN', data: {guest: false}, timestamp: {seconds: 1, microseconds: 2}},
    })
    expect(parseQmpMessage('{"event": "STOP"}')).toEqual({kind: 'event', event: {event: 'STOP'}})
    expect(parseQmpMessage('{"something": 1}')).toEqual({kind: 'unknown', value: {something: 1}})
  })

  it('refuses what is not QMP with a protocol error that quotes it', () => {
    const bad = [
      ['{"return": ', /not JSON/],
      ['garbage', /not JSON.*"garbage"/],
      ['[1,2]', /not a JSON object/],
      ['null', /not a JSON object/],
      ['42', /not a JSON object/],
      ['{"error": "x", "id": 1}', /error reply without class and desc/],
      ['{"error": {"class": "GenericError"}, "id": 1}', /error reply without class and desc/],
      ['{"QMP": {"version": {}, "capabilities": []}}', /greeting without a QEMU version/],
      ['{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22}}}}', /greeting without a capabilities list/],
      ['{"event": 3}', /event without a name/],
      ['{"event": "X", "data": [1]}', /data that is not an object/],
    ] as const
    for (const [line, why] of bad) {
      let err: unknown
      try {
        parseQmpMessage(line, 'QEMU pid 1')
      } catch (e) {
        err = e
      }
      expect(err, line).toBeInstanceOf(QmpConnectionError)
      expect((err as QmpConnectionError).code).toBe('protocol')
      expect((err as Error).message).toMatch(/^QEMU pid 1: QMP protocol error: /)
      expect((err as Error).message).toMatch(why)
    }
  })

  it('never throws anything but a QmpConnectionError, and never pollutes prototypes', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (line) => {
        try {
          parseQmpMessage(line)
        } catch (e) {
          expect(e).toBeInstanceOf(QmpConnectionError)
        }
      }),
    )
    parseQmpMessage('{"__proto__": {"polluted": 1}, "return": {}, "id": 1}')
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})

describe('encodeQmpCommand', () => {
  it('writes one line with execute, arguments and our id', () => {
    expect(encodeQmpCommand('query-status', undefined, 1)).toBe('{"execute":"query-status","id":1}\n')
    expect(encodeQmpCommand('xen-set-replication', {enable: true, primary: false}, 7)).toBe(
      '{"execute":"xen-set-replication","arguments":{"enable":true,"primary":false},"id":7}\n',
    )
    expect(encodeQmpCommand('qmp_capabilities', undefined, 2)).toContain('"qmp_capabilities"')
  })

  it('refuses a command name that is not one, arguments that are not an object or not JSON', () => {
    for (const name of ['', 'a b', '{"execute":"quit"}', 'x\n', '-x']) expect(() => encodeQmpCommand(name, undefined, 1)).toThrow(TypeError)
    expect(() => encodeQmpCommand('x', [1] as unknown as Record<string, unknown>, 1)).toThrow(/must be an object/)
    expect(() => encodeQmpCommand('x', {n: 1n}, 1)).toThrow(TypeError)
  })
})

/** A session fed by the test; `sent` holds what it wrote, parsed. */
function session(options: {timeoutMs?: number; maxLineBytes?: number; greet?: boolean} = {}) {
  const sent: {execute: string; arguments?: unknown; id: number}[] = []
  const anomalies: QmpAnomaly[] = []
  const fatal: QmpConnectionError[] = []
  const s = new QmpSession({
    label: 'QEMU pid 9',
    send: (line) => sent.push(JSON.parse(line)),
    onFatal: (e) => fatal.push(e),
    ...(options.timeoutMs === undefined ? {} : {defaultTimeoutMs: options.timeoutMs}),
    ...(options.maxLineBytes === undefined ? {} : {maxLineBytes: options.maxLineBytes}),
  })
  s.onAnomaly((a) => anomalies.push(a))
  const feed = (...objs: unknown[]) => s.receive(Buffer.from(objs.map((o) => (typeof o === 'string' ? o : JSON.stringify(o)) + '\r\n').join('')))
  if (options.greet !== false) feed(GREETING)
  return {s, sent, anomalies, fatal, feed}
}

const settled = <T>(p: Promise<T>) => p.then((value) => ({value}), (error: unknown) => ({error}))

describe('QmpSession', () => {
  it('waits for the greeting first and keeps it', async () => {
    const {s, feed} = session({greet: false})
    expect(s.greeting).toBeUndefined()
    feed(GREETING)
    expect((await s.greetingReceived).version.micro).toBe(22)
    expect(s.greeting?.capabilities).toEqual(['oob'])
  })

  it('takes the event QEMU 7.2 can send before its greeting (RESUME as the guest starts), and says so', async () => {
    const {s, feed, anomalies, fatal} = session({greet: false})
    feed({timestamp: {seconds: 1795448108, microseconds: 275328}, event: 'RESUME'}, GREETING)
    expect(fatal).toEqual([])
    expect((await s.greetingReceived).version.micro).toBe(22)
    expect(anomalies).toEqual([{kind: 'event-before-greeting', message: 'QEMU pid 9: event RESUME before the QMP greeting (a QEMU race, taken)'}])
    expect((await s.waitEvent('RESUME', {since: 0, timeoutMs: 10})).seq).toBe(1)
  })

  it('ends with not-qmp when events keep coming and no greeting', () => {
    const {s, feed, fatal} = session({greet: false})
    feed(...Array.from({length: 17}, () => ({event: 'RESUME'})))
    expect(fatal).toHaveLength(1)
    expect(fatal[0]!.code).toBe('not-qmp')
    expect(s.isOpen).toBe(false)
  })

  it('ends with not-qmp when the first message is not a greeting', async () => {
    const {s, fatal, feed} = session({greet: false})
    const pending = settled(s.execute('query-status'))
    feed({return: {}, id: 1})
    expect(fatal).toHaveLength(1)
    expect(fatal[0]!.code).toBe('not-qmp')
    expect(s.isOpen).toBe(false)
    await expect(s.greetingReceived).rejects.toThrow(/expected a QMP greeting/)
    const r = await pending
    expect((r as {error: QmpConnectionError}).error.message).toMatch(/expected a QMP greeting.*; no reply to "query-status"/)
  })

  it('matches replies by id across events and out of order', async () => {
    const {s, sent, feed, anomalies} = session()
    const events: string[] = []
    s.onEvent((e) => events.push(`${e.seq}:${e.event}`))
    const a = s.execute('stop')
    const b = s.execute<{status: string}>('query-status', {verbose: true})
    expect(sent).toEqual([
      {execute: 'stop', id: 1},
      {execute: 'query-status', arguments: {verbose: true}, id: 2},
    ])
    feed({event: 'STOP', timestamp: {seconds: 1, microseconds: 0}}, {return: {status: 'paused'}, id: 2}, {event: 'X'}, {return: {}, id: 1})
    expect(await b).toEqual({status: 'paused'})
    expect(await a).toEqual({})
    expect(events).toEqual(['1:STOP', '2:X'])
    expect(anomalies).toEqual([])
    expect(s.pendingCommands).toEqual([])
  })

  it('reports a reply without id or with an unknown id, and leaves the command waiting', async () => {
    const {s, feed, anomalies, fatal} = session()
    const p = s.execute('query-version')
    feed({error: {class: 'GenericError', desc: "JSON parse error, invalid keyword 'garbage'"}}, {return: 1, id: 99}, {return: 2, id: 'x'}, {return: 3})
    expect(anomalies.map((a) => a.kind)).toEqual(['reply-without-id', 'unknown-id', 'unknown-id', 'reply-without-id'])
    expect(anomalies[0]!.message).toMatch(/^QEMU pid 9: a reply without an id: .*JSON parse error/)
    expect(fatal).toEqual([])
    expect(s.pendingCommands).toEqual(['query-version'])
    feed({return: {qemu: {major: 7}}, id: 1})
    expect(await p).toEqual({qemu: {major: 7}})
  })

  it('turns an error reply into a QmpCommandError, or a value with tryExecute', async () => {
    const {s, feed} = session()
    const p = settled(s.execute('xen-set-replication', {enable: false, primary: true}))
    const q = s.tryExecute('nope')
    const r = s.tryExecute<number>('ok')
    feed(
      {id: 1, error: {class: 'GenericError', desc: 'Block replication is not running'}},
      {id: 2, error: {class: 'CommandNotFound', desc: 'The command nope has not been found'}},
      {id: 3, return: 5},
    )
    const err = ((await p) as {error: QmpCommandError}).error
    expect(err).toBeInstanceOf(QmpCommandError)
    expect(err).toMatchObject({command: 'xen-set-replication', errorClass: 'GenericError', desc: 'Block replication is not running'})
    expect(err.message).toBe('QEMU pid 9: QMP command "xen-set-replication" failed: GenericError: Block replication is not running')
    const qr = await q
    expect(qr.ok).toBe(false)
    if (!qr.ok) expect(qr.error.errorClass).toBe('CommandNotFound')
    expect(await r).toEqual({ok: true, value: 5})
  })

  it('times a command out with an error naming it, and recognises its late reply', async () => {
    const {s, feed, anomalies} = session({timeoutMs: 20})
    const t0 = Date.now()
    const err = await s.execute('query-block').catch((e: unknown) => e)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(15)
    expect(err).toBeInstanceOf(QmpTimeoutError)
    expect(err).toMatchObject({kind: 'command', command: 'query-block', timeoutMs: 20})
    expect((err as Error).message).toBe('QEMU pid 9: QMP command "query-block" got no reply within 20 ms')
    const fast = s.execute('query-status', undefined, {timeoutMs: 1000})
    feed({return: [], id: 1}, {return: {}, id: 2})
    expect(await fast).toEqual({})
    expect(anomalies.map((a) => a.kind)).toEqual(['late-reply'])
    expect(anomalies[0]!.message).toMatch(/reply to "query-block" \(id 1\) came after it timed out/)
    expect(s.isOpen).toBe(true)
  })

  it('waits for events: by name, with a filter, from a mark taken before, with a timeout', async () => {
    const {s, feed} = session()
    const mark = s.eventSeq
    feed({event: 'STOP'}, {event: 'BLOCK_JOB_COMPLETED', data: {device: 'a'}})
    // The event came before the wait (as STOP comes before the reply to stop): `since` finds it.
    expect((await s.waitEvent('STOP', {since: mark})).seq).toBe(1)
    const wanted = s.waitEvent('BLOCK_JOB_COMPLETED', {filter: (e) => e.data?.device === 'b', timeoutMs: 1000})
    feed({event: 'BLOCK_JOB_COMPLETED', data: {device: 'c'}}, {event: 'BLOCK_JOB_COMPLETED', data: {device: 'b'}})
    expect((await wanted).data).toEqual({device: 'b'})
    const err = await s.waitEvent('RESUME', {timeoutMs: 10}).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(QmpTimeoutError)
    expect((err as Error).message).toBe('QEMU pid 9: no QMP event "RESUME" within 10 ms')
    const thrown = s.waitEvent('X', {filter: () => {
      throw new Error('bad filter')
    }})
    feed({event: 'X'})
    await expect(thrown).rejects.toThrow('bad filter')
  })

  it('reports a listener that throws and goes on delivering', async () => {
    const {s, feed, anomalies} = session()
    const got: string[] = []
    s.onEvent(() => {
      throw new Error('boom')
    })
    const off = s.onEvent((e) => got.push(e.event), 'RESUME')
    feed({event: 'STOP'}, {event: 'RESUME'})
    off()
    feed({event: 'RESUME'})
    expect(got).toEqual(['RESUME'])
    expect(anomalies.map((a) => a.kind)).toEqual(['listener-threw', 'listener-threw', 'listener-threw'])
  })

  it('ends on an overlong line: every pending command and wait rejected, naming it', async () => {
    const {s, feed, fatal} = session({maxLineBytes: 1024})
    const a = settled(s.execute('query-qmp-schema'))
    const w = settled(s.waitEvent('STOP'))
    feed(`{"return": "${'x'.repeat(2000)}", "id": 1}`)
    expect(fatal).toHaveLength(1)
    expect(fatal[0]!.message).toMatch(/QMP protocol error: a line of more than 1024 bytes/)
    const ea = ((await a) as {error: QmpConnectionError}).error
    expect(ea).toBeInstanceOf(QmpConnectionError)
    expect(ea.code).toBe('protocol')
    expect(ea.message).toMatch(/a line of more than 1024 bytes.*; no reply to "query-qmp-schema"$/)
    expect(((await w) as {error: Error}).error.message).toMatch(/; no event "STOP"$/)
    // Nothing after it is read; new commands fail at once.
    feed({return: {}, id: 1})
    await expect(s.execute('query-status')).rejects.toThrow(/QMP connection is closed \(.*a line of more than 1024 bytes.*\); cannot run "query-status"/)
    await expect(s.waitEvent('STOP')).rejects.toThrow(/cannot|no event "STOP"/)
    expect((await s.ended).code).toBe('protocol')
  })

  it('ends on bad JSON and on a malformed error reply', async () => {
    for (const line of ['{"return": {}, "id": 1', '{"id": 1, "error": {"desc": "no class"}}']) {
      const {s, feed, fatal} = session()
      const p = s.execute('query-status')
      feed(line)
      expect(fatal[0]?.code).toBe('protocol')
      await expect(p).rejects.toThrow(/QMP protocol error: .*; no reply to "query-status"/)
    }
  })

  it('takes an unknown kind of message and a second greeting as anomalies', () => {
    const {s, feed, anomalies} = session()
    feed({foo: 1}, GREETING, '', '   ')
    expect(anomalies.map((a) => a.kind)).toEqual(['unknown-message', 'unexpected-greeting'])
    expect(s.isOpen).toBe(true)
  })

  it('end() rejects what waits with the reason and the command', async () => {
    const {s} = session()
    const p = s.execute('cont')
    s.end(new QmpConnectionError('closed', 'QEMU pid 9: QMP connection closed by QEMU', 'ECONNRESET'))
    const err = await p.catch((e: unknown) => e)
    expect(err).toMatchObject({code: 'closed', errno: 'ECONNRESET'})
    expect((err as Error).message).toBe('QEMU pid 9: QMP connection closed by QEMU; no reply to "cont"')
    s.end(new QmpConnectionError('protocol', 'ignored'))
    expect(s.endReason?.code).toBe('closed')
  })

  it('rejects a command it cannot encode, and one whose send throws, without leaving it pending', async () => {
    const s = new QmpSession({
      send: () => {
        throw new Error('socket gone')
      },
    })
    await expect(s.execute('bad name')).rejects.toThrow(TypeError)
    await expect(s.execute('query-status')).rejects.toThrow('socket gone')
    expect(s.pendingCommands).toEqual([])
  })

  it('never throws from receive(), whatever the bytes', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.uint8Array({maxLength: 64}).map((b) => Buffer.from(b)),
            fc.json().map((j) => Buffer.from(`${j}\r\n`)),
            fc.constantFrom(GREETING + '\n', '{"return": {}, "id": 1}\n', '{"event": "STOP"}\n', '\n').map((t) => Buffer.from(t)),
          ),
          {maxLength: 20},
        ),
        (chunks) => {
          const s = new QmpSession({send: () => {}, maxLineBytes: 256})
          s.execute('query-status').catch(() => {})
          s.waitEvent('STOP', {timeoutMs: Infinity}).catch(() => {})
          for (const c of chunks) s.receive(c)
          s.end(new QmpConnectionError('closed', 'done'))
        },
      ),
    )
  })
})
