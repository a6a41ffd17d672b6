/**
 * The pieces of save/restore that need no process: the xl savefile header as xl writes and reads it
 * (its layout, the events in xl's order, xl's messages), the lines the commands print for the
 * helper's progress (xl's logger rule), and the domain config taken back from a savefile's JSON.
 */
import {describe, expect, it} from 'vitest'

import {ConfigError, domainConfigFromJson, domainSpec} from '../src/toolstack/config/index.js'
import {
  EventLines,
  MigrateError,
  encodeSavefileHeader,
  readSavefileHeader,
  type MigrateEvent,
} from '../src/toolstack/xl/index.js'
import {BufferSource, XL_MAGIC} from '../src/toolstack/stream/index.js'

describe('the xl savefile header', () => {
  it('is laid out as save_domain_core_writeconfig writes it', () => {
    const json = '{"c_info": {"name": "vm"}}\n'
    const b = encodeSavefileHeader(json)
    expect(b.subarray(0, 32).equals(XL_MAGIC)).toBe(true)
    expect(b.readUInt32LE(32)).toBe(0x01020304)
    expect(b.readUInt32LE(36)).toBe(0x3) // JSON | STREAMv2
    expect(b.readUInt32LE(40)).toBe(0)
    expect(b.readUInt32LE(44)).toBe(4 + json.length + 1) // u32 config_len + config + NUL
    expect(b.readUInt32LE(48)).toBe(json.length + 1)
    expect(b.subarray(52, 52 + json.length).toString()).toBe(json)
    expect(b[b.length - 1]).toBe(0)
    // Without a config: still the u32 config_len (0), and no JSON flag.
    const none = encodeSavefileHeader()
    expect(none.length).toBe(52)
    expect(none.readUInt32LE(36)).toBe(0x2)
    expect(none.readUInt32LE(44)).toBe(4)
  })

  it('is read back with xl\'s events, in xl\'s order', async () => {
    const events: MigrateEvent[] = []
    const b = Buffer.concat([encodeSavefileHeader('{"x": 1}'), Buffer.from('rest')])
    const source = new BufferSource(b)
    const h = await readSavefileHeader(source, {source: 'f.save', onEvent: e => events.push(e)})
    expect(h).toMatchObject({config: '{"x": 1}', json: true, streamVersion: 2, length: b.length - 4})
    expect(source.offset).toBe(b.length - 4) // nothing past the header was read
    expect(events).toEqual([
      {kind: 'savefile-loading', source: 'f.save', info: {mandatoryFlags: 3, optionalFlags: 0, optionalDataLength: 4 + 9}},
      {kind: 'savefile-config', json: true},
    ])
  })

  it('fails with xl\'s messages: magic and byte order before "Loading", mandatory flags after', async () => {
    const bad = encodeSavefileHeader('{}')
    bad.writeUInt8(bad.readUInt8(5) ^ 1, 5)
    let events: MigrateEvent[] = []
    const err1 = await readSavefileHeader(new BufferSource(bad), {source: 'f', onEvent: e => events.push(e)}).catch(e => e)
    expect(err1).toBeInstanceOf(MigrateError)
    expect(err1).toMatchObject({code: 'stream', step: 'savefile header', format: 'xl', offset: 0})
    expect((err1 as MigrateError).message).toContain('File has wrong magic number - corrupt or for a different tool?')
    expect(events).toEqual([])

    const order = encodeSavefileHeader('{}')
    order.writeUInt32LE(0x04030201, 32)
    expect(((await readSavefileHeader(new BufferSource(order), {source: 'f'}).catch(e => e)) as Error).message).toContain('File has wrong byte order')

    const flags = encodeSavefileHeader('{}')
    flags.writeUInt32LE(0x7, 36)
    events = []
    const err3 = (await readSavefileHeader(new BufferSource(flags), {source: 'f', onEvent: e => events.push(e)}).catch(e => e)) as Error
    expect(err3.message).toContain('Savefile has mandatory flag(s) 0x4 which are not supported; need newer xl')
    expect(events.map(e => e.kind)).toEqual(['savefile-loading'])
  })
})

describe('the lines printed for the helper', () => {
  const progress = (done: number, total: number): MigrateEvent => ({
    kind: 'helper-progress',
    progress: {context: 'xc', doingWhat: 'Frames', done, total},
  })

  it('follow xl\'s logger: a line per 5% at progress level, the steps between at detail', () => {
    const shown = new EventLines({enabled: l => l !== 'debug' && l !== 'verbose' && l !== 'detail'})
    const out = [0, 10, 30, 50, 60, 100].flatMap(d => shown.lines(progress(d, 100)))
    expect(out).toEqual([
      {level: 'progress', text: 'xc: progress: Frames: 10/100   10%'},
      {level: 'progress', text: 'xc: progress: Frames: 30/100   30%'},
      {level: 'progress', text: 'xc: progress: Frames: 50/100   50%'},
      {level: 'progress', text: 'xc: progress: Frames: 60/100   60%'},
      {level: 'progress', text: 'xc: progress: Frames: 100/100  100%'},
    ])
    // 1% steps: only every 5th is worth a progress line; -v shows the rest at detail.
    const quiet = new EventLines({enabled: l => l === 'progress'})
    expect([1, 2, 3, 4, 5, 6].flatMap(d => quiet.lines(progress(d, 100))).map(l => l.text)).toEqual(['xc: progress: Frames: 5/100    5%'])
    const verbose = new EventLines()
    expect([1, 2].flatMap(d => verbose.lines(progress(d, 100))).map(l => l.level)).toEqual(['detail', 'detail'])
    // A new phase starts at 0%: shown again.
    expect(quiet.lines({kind: 'helper-progress', progress: {context: 'xc', doingWhat: 'End of stream', done: 0, total: 0}})).toEqual([
      {level: 'progress', text: 'xc: progress: End of stream: 0/0    0%'},
    ])
  })

  it('fold the helper\'s errors into the failure (shown with -v), keep xl\'s own lines plain', () => {
    const lines = new EventLines()
    const log = (levelName: 'error' | 'info', level: number): MigrateEvent => ({
      kind: 'helper-log',
      log: {level, levelName, errnoval: 0, context: 'xl-ts-save-helper', message: 'Restore failed: x'},
    })
    expect(lines.lines(log('error', 8))).toEqual([{level: 'detail', text: 'xl-ts-save-helper: error: Restore failed: x'}])
    expect(lines.lines(log('info', 5))).toEqual([{level: 'info', text: 'xl-ts-save-helper: info: Restore failed: x'}])
    expect(lines.lines({kind: 'savefile-written', source: 'f', info: {mandatoryFlags: 3, optionalFlags: 0, optionalDataLength: 620}})).toEqual([
      {level: 'plain', text: 'Saving to f new xl format (info 0x3/0x0/620)'},
    ])
    expect(lines.lines({kind: 'savefile-loading', source: 'f', info: {mandatoryFlags: 3, optionalFlags: 0, optionalDataLength: 620}})).toEqual([
      {level: 'plain', text: 'Loading new save file f (new xl fmt info 0x3/0x0/620)'},
    ])
    expect(lines.lines({kind: 'savefile-config', json: true})).toEqual([{level: 'plain', text: ' Savefile contains xl domain config in JSON format'}])
  })
})

describe('the domain config from a savefile', () => {
  const saved = {
    c_info: {type: 'hvm', name: 'vm1', uuid: '5f4d2e1c-1111-2222-3333-444455556666'},
    b_info: {max_vcpus: 2, avail_vcpus: [0, 1], max_memkb: 262144, target_memkb: 262144, 'type.hvm': {}},
    disks: [],
    nics: [],
    on_poweroff: 'destroy',
    sim: {sim_dirty_rate: 100, sim_seed: 3},
  }

  it('gives the spec the domain is built from, workload included', () => {
    const config = domainConfigFromJson(saved)
    expect(domainSpec(config, 'sim')).toEqual({
      name: 'vm1',
      uuid: '5f4d2e1c-1111-2222-3333-444455556666',
      type: 'hvm',
      maxMemKb: 262144,
      vcpus: 2,
      config,
      workload: {dirtyRate: 100, workingSetMiB: 256, seed: 3, nondeterminism: 0, packetRate: 0},
    })
    expect(domainSpec(config, 'xen').workload).toBeUndefined()
  })

  it('refuses a config without what a domain needs', () => {
    expect(() => domainConfigFromJson({...saved, c_info: {type: 'hvm'}})).toThrow(ConfigError)
    expect(() => domainConfigFromJson({...saved, c_info: {name: 'x', type: 'hvx'}})).toThrow(/hvm, pv or pvh/)
    expect(() => domainConfigFromJson({...saved, b_info: {max_memkb: -1}})).toThrow(/max_memkb/)
    expect(() => domainConfigFromJson([])).toThrow(ConfigError)
  })
})
