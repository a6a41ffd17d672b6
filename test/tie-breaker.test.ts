/**
 * The tie-breaker before a side goes live alone: one witness claim per replication session, won by
 * the first side to claim (also across processes racing for it), kept by that side, lost by the
 * other; a fence command that must exit 0 in time; and what happens when neither can be asked.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {execa} from 'execa'
import tmp from 'tmp'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {
  checkTieBreaker,
  claimFile,
  claimLive,
  newSession,
  readClaim,
  type ClaimRequest,
  type TieBreakerSpec,
} from '../src/toolstack/xl/tie-breaker.js'
import {ensureBuilt} from './support/build.js'

let dir: tmp.DirResult
const DIST = path.resolve(import.meta.dirname, '..', 'dist', 'toolstack', 'xl', 'tie-breaker.js')
const req = (side: 'primary' | 'secondary'): ClaimRequest => ({side, domain: 'vm', checkpoint: 7})

beforeAll(async () => {
  await ensureBuilt()
  dir = tmp.dirSync({prefix: 'xlts-witness-', unsafeCleanup: true})
})
afterAll(() => dir?.removeCallback())

describe('witness', () => {
  it('processes of both sides racing for one session: one side wins, every process of it, the other side none', async () => {
    const spec: TieBreakerSpec = {session: newSession(), witness: dir.name}
    const script = (side: string) => `
      const {claimLive} = await import(${JSON.stringify(DIST)})
      const v = await claimLive(${JSON.stringify(spec)}, {side: ${JSON.stringify(side)}, domain: 'vm', checkpoint: 3})
      console.log(JSON.stringify({side: ${JSON.stringify(side)}, live: v.live}))`
    const sides = ['primary', 'secondary', 'primary', 'secondary', 'primary', 'secondary']
    const runs = await Promise.all(sides.map((s) => execa(process.execPath, ['--input-type=module', '-e', script(s)])))
    const verdicts = runs.map((r) => JSON.parse(r.stdout) as {side: string; live: boolean})
    const winners = new Set(verdicts.filter((v) => v.live).map((v) => v.side))
    expect(winners.size).toBe(1)
    const [winner] = [...winners]
    for (const v of verdicts) expect(v.live, JSON.stringify(verdicts)).toBe(v.side === winner)
    const holder = readClaim(claimFile(spec)!)
    expect(holder).toMatchObject({side: winner, domain: 'vm', checkpoint: 3})
    // No temporary file is left beside the claim.
    expect(fs.readdirSync(dir.name).filter((f) => f.includes(spec.session))).toEqual([path.basename(claimFile(spec)!)])
  })

  it('the side that claimed keeps winning; the other side loses and is told who holds it', async () => {
    const spec: TieBreakerSpec = {session: newSession(), witness: dir.name}
    expect(await claimLive(spec, req('secondary'))).toMatchObject({live: true})
    expect(await claimLive(spec, req('secondary'))).toMatchObject({live: true})
    const lost = await claimLive(spec, req('primary'))
    expect(lost.live).toBe(false)
    expect(lost.live ? '' : lost.why).toMatch(/^the secondary on .* claimed the witness first/)
    // Another session is another tie.
    expect(await claimLive({...spec, session: newSession()}, req('primary'))).toMatchObject({live: true})
  })

  it('a witness that cannot be written keeps the side from going live', async () => {
    const gone = tmp.dirSync({prefix: 'xlts-witness-gone-'})
    const spec: TieBreakerSpec = {session: newSession(), witness: gone.name}
    gone.removeCallback()
    const v = await claimLive(spec, req('primary'))
    expect(v.live).toBe(false)
    expect(v.live ? '' : v.why).toMatch(/^cannot claim the witness .*ENOENT/)
  })

  it('refuses a spec it cannot trust', () => {
    expect(() => checkTieBreaker({session: 'x'})).toThrow(/not 32 hex digits/)
    expect(() => checkTieBreaker({session: newSession(), witness: 'relative'})).toThrow(/not an absolute path/)
    expect(() => checkTieBreaker({session: newSession(), witness: path.join(dir.name, 'nope')})).toThrow(/ENOENT/)
    expect(() => checkTieBreaker({session: newSession(), fence: ' '})).toThrow(/empty/)
    expect(() => checkTieBreaker({session: newSession(), fence: 'true', fenceTimeoutMs: 0})).toThrow(/not in 1\.\.3600000/)
  })
})

describe('fence', () => {
  const session = newSession()
  it('goes live only when the command exits 0; says why otherwise', async () => {
    expect(await claimLive({session, fence: 'test "$XL_TS_FENCE_SIDE" = secondary && test "$XL_TS_FENCE_CHECKPOINT" = 7'}, req('secondary'))).toMatchObject({live: true})
    const failed = await claimLive({session, fence: 'echo "peer still powered" >&2; exit 4'}, req('secondary'))
    expect(failed).toEqual({live: false, why: 'the fence command failed (exit 4): peer still powered'})
  })

  it('a command that hangs is timed out and killed, and the side does not go live', async () => {
    const t0 = performance.now()
    const v = await claimLive({session, fence: 'sleep 30', fenceTimeoutMs: 300}, req('primary'))
    expect(v).toEqual({live: false, why: 'the fence command did not finish within 300 ms'})
    expect(performance.now() - t0).toBeLessThan(5000)
  })

  it('with a witness, only the side that won the claim runs the fence', async () => {
    const marker = path.join(dir.name, `fenced-${newSession()}`)
    const spec: TieBreakerSpec = {session: newSession(), witness: dir.name, fence: `echo "$XL_TS_FENCE_SIDE" >> ${marker}`}
    expect((await claimLive(spec, req('primary'))).live).toBe(true)
    expect((await claimLive(spec, req('secondary'))).live).toBe(false)
    expect(fs.readFileSync(marker, 'utf8')).toBe('primary\n')
  })
})

describe('neither', () => {
  it("is xl's behaviour: the side goes live", async () => {
    expect(await claimLive(undefined, req('primary'))).toEqual({live: true, how: 'no tie-breaker (xl behaviour)'})
    expect(await claimLive({session: newSession()}, req('secondary'))).toMatchObject({live: true})
  })
})
