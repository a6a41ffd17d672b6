/**
 * The pure parts of migration: the rune (xl's format, and quoting that keeps names inert), the
 * handshake's exact bytes, the status byte, the precopy tracker and the progress renderings.
 */
import {execa} from 'execa'
import {describe, expect, it} from 'vitest'

import {MigrationProgress, barText, iterationLine, migrationJson, resultLine} from '../src/render/index.js'
import {
  MIGRATE_PERMISSION_TO_GO,
  MIGRATE_RECEIVER_BANNER,
  MIGRATE_RECEIVER_READY,
  MIGRATE_REPORT,
  decodeStatus,
  encodeStatus,
} from '../src/toolstack/xl/handshake.js'
import {PrecopyTracker, pageRecordBytes, type MigrationEvent, type MigrationResult} from '../src/toolstack/xl/migration-events.js'
import {RuneError, buildMigrateRune, receiverWords, shellQuote} from '../src/toolstack/xl/rune.js'

const base = {sshCommand: 'ssh', host: 'host2', progressCr: false, timestamps: false, verbosity: 0, noDaemonize: false, debug: false, paused: false}

describe('the rune', () => {
  it("is xl's: exec <ssh> <host> xl-ts[ -t][ -T][ -v...] migrate-receive[ -e][ -d][ -p]", () => {
    expect(buildMigrateRune(base)).toBe('exec ssh host2 xl-ts migrate-receive')
    expect(buildMigrateRune({...base, progressCr: true, timestamps: true, verbosity: 2, noDaemonize: true, debug: true, paused: true})).toBe(
      'exec ssh host2 xl-ts -t -T -vv migrate-receive -e -d -p',
    )
    // minmsglevel cannot go below XTL_NONE: at most four v.
    expect(receiverWords({...base, verbosity: 9})).toEqual(['xl-ts', '-vvvv', 'migrate-receive'])
    expect(buildMigrateRune({...base, sshCommand: 'ssh -p 2222 -i /root/k'})).toBe('exec ssh -p 2222 -i /root/k host2 xl-ts migrate-receive')
  })

  it('with -s "" is the host string itself', () => {
    expect(buildMigrateRune({...base, sshCommand: '', host: 'XL_TS_ROOT=/b xl-ts migrate-receive'})).toBe('XL_TS_ROOT=/b xl-ts migrate-receive')
    expect(() => buildMigrateRune({...base, sshCommand: '', host: '  '})).toThrow(RuneError)
  })

  it('quotes the host so that it can never become shell', async () => {
    const evil = ["host$(touch /tmp/x)", 'a;b', "it's", 'a b', '`id`', 'x\ny', '*', '']
    for (const host of evil.filter(Boolean)) {
      const rune = buildMigrateRune({...base, sshCommand: 'printf "%s\\n"', host})
      // sh -c sees exactly the host as one word.
      const r = await execa('sh', ['-c', rune.replace(/^exec /, '')])
      expect(r.stdout.split('\n').slice(0, -2).join('\n')).toBe(host)
    }
    expect(shellQuote('')).toBe("''")
    expect(shellQuote('plain-host.example:22')).toBe('plain-host.example:22')
    expect(() => buildMigrateRune({...base, host: '-oProxyCommand=touch /tmp/x'})).toThrow(/starts with "-"/)
    expect(() => buildMigrateRune({...base, host: ''})).toThrow(RuneError)
  })
})

describe('the handshake bytes (xl.h)', () => {
  it('have xl\'s exact lengths', () => {
    expect(MIGRATE_RECEIVER_BANNER.length).toBe(54)
    expect(MIGRATE_RECEIVER_BANNER.toString('latin1')).toBe('xl migration receiver ready, send binary domain data.\n')
    expect(MIGRATE_RECEIVER_READY.length).toBe(34)
    expect(MIGRATE_PERMISSION_TO_GO.length).toBe(44)
    expect(MIGRATE_REPORT.length).toBe(39)
    for (const m of [MIGRATE_RECEIVER_READY, MIGRATE_PERMISSION_TO_GO, MIGRATE_REPORT]) expect(m[m.length - 1]).toBe(0)
  })

  it('send the status as -rc in one signed byte', () => {
    expect([...encodeStatus(0)]).toEqual([0])
    expect([...encodeStatus(-3)]).toEqual([3])
    expect([...encodeStatus(1)]).toEqual([0xff])
    expect(decodeStatus(Buffer.from([0xff]))).toBe(-1)
    expect(decodeStatus(Buffer.from([3]))).toBe(3)
  })
})

describe('the precopy tracker', () => {
  it('turns the helper\'s progress and round logs into rounds and totals', () => {
    const events: MigrationEvent[] = []
    const t = new PrecopyTracker((e) => events.push(e))
    const progress = (doingWhat: string, done: number, total: number) => t.progress({context: 'xc', doingWhat, done, total})
    const log = (message: string) => t.log({level: 3, levelName: 'detail', errnoval: 0, context: 'xl-ts-save-helper', message})
    progress('Frames iteration 1: ', 0, 2048)
    progress('Frames iteration 1: ', 1024, 2048)
    progress('Frames iteration 1: ', 2048, 2048)
    log('precopy round 1: 2048 pages sent in 20 ms, 100 dirty')
    progress('Frames iteration 2: ', 0, 100)
    progress('Frames iteration 2: ', 100, 100)
    progress('Domain now suspended', 0, 0)
    progress('Frames final: ', 0, 7)
    progress('Frames final: ', 7, 7)
    t.finish()
    const rounds = events.filter((e) => e.kind === 'iteration')
    expect(rounds.map((r) => [r.iteration, r.pages, r.dirty])).toEqual([
      [1, 2048, 100],
      [2, 100, null],
    ])
    expect(rounds[0]!.bandwidthMiBps).toBeCloseTo(400, 5)
    expect(rounds[0]!.dirtyRatePps).toBeCloseTo(5000, 5)
    expect(rounds[0]!.predictedDowntimeMs).toBeCloseTo((100 * 20) / 2048, 5)
    expect(t.iterations).toBe(2)
    expect(t.pagesSent).toBe(2048 + 100 + 7)
    expect(t.pausedPages).toBe(7)
    expect(t.recordBytes).toBe(pageRecordBytes(2048) + pageRecordBytes(100) + pageRecordBytes(7))
    expect(pageRecordBytes(1024)).toBe(16 + 1024 * 4104)
  })
})

describe('the progress renderings', () => {
  const result: MigrationResult = {
    ok: true,
    domain: 'vm1',
    domid: 7,
    outcome: 'migrated',
    exitCode: 0,
    totalMs: 1250.66,
    downtimeMs: 41.24,
    iterations: 3,
    pagesSent: 66000,
    pausedPages: 120,
    bytes: 270532608,
    bandwidthMiBps: 206.29,
  }

  it('NDJSON: versioned objects for phases, rounds and the result', () => {
    expect(migrationJson({kind: 'phase', phase: 'precopy', atMs: 12.34}, 0)).toEqual({v: 1, event: 'phase', phase: 'precopy', tMs: 12.3})
    const it = migrationJson(
      {kind: 'iteration', iteration: 1, pages: 65536, dirty: null, ms: 310.25, bandwidthMiBps: 825.12, dirtyRatePps: null, predictedDowntimeMs: null},
      330.11,
    )
    expect(it).toEqual({v: 1, event: 'iteration', iteration: 1, pages: 65536, dirty: null, ms: 310.3, bandwidthMiBps: 825.1, dirtyRatePps: null, predictedDowntimeMs: null, tMs: 330.1})
    expect(migrationJson({kind: 'result', ...result}, 0)).toEqual({
      v: 1,
      event: 'result',
      ok: true,
      domain: 'vm1',
      domid: 7,
      outcome: 'migrated',
      exitCode: 0,
      downtimeMs: 41.2,
      totalMs: 1250.7,
      bytes: 270532608,
      iterations: 3,
      pagesSent: 66000,
      pausedPages: 120,
      bandwidthMiBps: 206.3,
    })
    expect(migrationJson({kind: 'line', text: 'x'}, 0)).toBeUndefined()
    expect(migrationJson({kind: 'pages', pass: 'iteration 1', iteration: 1, done: 1, total: 2, bandwidthMiBps: 1, etaMs: 1, dirtyRatePps: null}, 0)).toBeUndefined()
  })

  it('plain: a line per round and the result; tty: a bar redrawn with CR', () => {
    expect(iterationLine({iteration: 2, pages: 5120, dirty: 310, ms: 41, bandwidthMiBps: 487.8, dirtyRatePps: 7561, predictedDowntimeMs: 2.5})).toBe(
      'precopy iteration 2: 5120 pages in 41 ms (487.8 MiB/s), 310 dirty (7561 pages/s)',
    )
    expect(resultLine(result)).toBe('migrated in 1.25 s: downtime 41 ms, 120 pages while paused, 3 iterations, 258.0 MiB (206.3 MiB/s)')
    const bar = barText({pass: 'iteration 2', iteration: 2, done: 2488, total: 5120, bandwidthMiBps: 410.2, etaMs: 32, dirtyRatePps: 7561}, 120)
    expect(bar).toMatch(/^iteration 2 \[#+\.+\]  48%  2488\/5120 pages  410\.2 MiB\/s  dirty 7561 p\/s  ETA 32 ms$/)

    let err = ''
    let out = ''
    const tty = new MigrationProgress({mode: 'tty', err: (t) => (err += t), out: (t) => (out += t), redrawMs: 0})
    tty.handle({kind: 'pages', pass: 'iteration 1', iteration: 1, done: 0, total: 10, bandwidthMiBps: 0, etaMs: null, dirtyRatePps: null})
    tty.handle({kind: 'pages', pass: 'iteration 1', iteration: 1, done: 5, total: 10, bandwidthMiBps: 100, etaMs: 5, dirtyRatePps: null})
    tty.beforeLine()
    tty.handle({kind: 'result', ...result})
    expect(err).toContain('\riteration 1 [')
    expect(err).toContain('\r\x1b[K')
    expect(err).toContain('migration sender: migrated in 1.25 s')
    expect(out).toBe('')

    err = ''
    const plain = new MigrationProgress({mode: 'plain', err: (t) => (err += t), out: (t) => (out += t)})
    plain.handle({kind: 'pages', pass: 'iteration 1', iteration: 1, done: 5, total: 10, bandwidthMiBps: 100, etaMs: 5, dirtyRatePps: null})
    expect(err).toBe('')
    plain.handle({kind: 'result', ...result, ok: false, outcome: 'untouched', exitCode: 1, pagesSent: 0})
    expect(err).toBe('')

    const json = new MigrationProgress({mode: 'json', err: (t) => (err += t), out: (t) => (out += t)})
    json.handle({kind: 'phase', phase: 'banner', atMs: 1})
    json.handle({kind: 'result', ...result})
    expect(out.trim().split('\n').map((l) => JSON.parse(l).event)).toEqual(['phase', 'result'])
  })
})
