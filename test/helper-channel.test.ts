/**
 * The helper's callbacks as an awaitable channel (helper/channel.ts): a checkpoint cycle awaits
 * each callback libxc asks for, in libxc's order, and answers it; out of order or after the helper
 * ended, the cycle learns it at once and the helper gets the failure answer (0), never silence.
 */
import {describe, expect, it} from 'vitest'

import {HelperChannel, HelperEndedError, HelperOrderError, type HelperCallbacks} from '../src/toolstack/helper/index.js'

/** What the helper side sees: calling a callback and waiting for its int reply, as the client does. */
function ask(callbacks: HelperCallbacks, name: 'suspend' | 'postcopy' | 'checkpoint' | 'waitCheckpoint'): Promise<number> {
  return Promise.resolve(callbacks[name]!())
}

describe('HelperChannel', () => {
  it('hands out callbacks in turn, whether asked before or after the cycle awaits them, and carries the replies back', async () => {
    const channel = new HelperChannel()
    const cb = channel.callbacks(['suspend', 'checkpoint', 'postcopy', 'wait_checkpoint'])
    // The helper asks before anyone awaits: the request waits in the channel.
    const suspended = ask(cb, 'suspend')
    const owed = await channel.next('suspend')
    owed.reply(1)
    owed.reply(0) // a second reply is ignored
    expect(await suspended).toBe(1)
    // The cycle awaits first; the helper asks after.
    const next = channel.next('checkpoint')
    const checkpointed = ask(cb, 'checkpoint')
    ;(await next).reply(2)
    expect(await checkpointed).toBe(2)
  })

  it('installs only the callbacks it is given (cbflags announce those)', () => {
    expect(Object.keys(new HelperChannel().callbacks(['suspend'])).sort()).toEqual(['suspend'])
    expect(Object.keys(new HelperChannel().callbacks(['suspend', 'postcopy', 'checkpoint', 'wait_checkpoint'])).sort()).toEqual(['checkpoint', 'postcopy', 'suspend', 'waitCheckpoint'])
  })

  it('a callback out of libxc order: the helper is answered 0 and the cycle gets a HelperOrderError naming both', async () => {
    const channel = new HelperChannel()
    const cb = channel.callbacks(['suspend', 'postcopy', 'checkpoint'])
    const answer = ask(cb, 'postcopy')
    const err = await channel.next('checkpoint').catch((e: unknown) => e)
    expect(err).toBeInstanceOf(HelperOrderError)
    expect((err as Error).message).toBe('the helper asked for postcopy where checkpoint was due')
    expect(await answer).toBe(0)
  })

  it('the helper ends: a cycle waiting, and any later one, gets HelperEndedError with why', async () => {
    const channel = new HelperChannel()
    channel.callbacks(['suspend'])
    const waiting = channel.next('suspend').catch((e: unknown) => e)
    channel.end(new Error('helper exited with error status 1'))
    const err = await waiting
    expect(err).toBeInstanceOf(HelperEndedError)
    expect((err as Error).message).toBe('the helper ended before suspend: helper exited with error status 1')
    await expect(channel.next('postcopy')).rejects.toBeInstanceOf(HelperEndedError)
  })
})
