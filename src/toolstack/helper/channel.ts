/**
 * The helper's callbacks as an awaitable channel, so that a checkpoint cycle reads top to bottom:
 *
 *     const suspend = await channel.next('suspend')
 *     ... suspend the guest ...
 *     suspend.reply(1)
 *
 * libxc calls the callbacks of a cycle in a fixed order (XEN-FACTS §7.2, §7.3, §10.2) and blocks
 * on each reply, so at most one is ever owed. The channel hands each callback the helper asks for
 * to whoever awaits `next`; a callback asked for before anyone awaits it waits in the channel.
 *
 * `next(name)` names the callback the cycle expects there: the helper asking for another one breaks
 * libxc's order, which the channel answers 0 (the failure reply of every callback) and reports as a
 * HelperOrderError. When the helper ends (`end`), `next` rejects with why.
 */
import type {CallbackReply, HelperCallbacks} from './client.js'
import {helperMessageSpec} from './protocol.js'

/** The callbacks a cycle answers in turn (the others have standing answers). */
export type CycleCallback = 'suspend' | 'postcopy' | 'checkpoint' | 'wait_checkpoint'

/** A callback the helper is blocked on until `reply`. */
export interface OwedCallback<N extends CycleCallback = CycleCallback> {
  readonly name: N
  /** Answers the helper (once; later calls are ignored). */
  reply(value: number): void
}

/** The helper asked for a callback out of libxc's order. */
export class HelperOrderError extends Error {
  override readonly name = 'HelperOrderError'
  constructor(
    readonly expected: CycleCallback,
    readonly got: CycleCallback,
  ) {
    super(`the helper asked for ${got} where ${expected} was due`)
  }
}

/** The helper ended while a cycle waited for a callback. */
export class HelperEndedError extends Error {
  override readonly name = 'HelperEndedError'
  constructor(
    readonly expected: CycleCallback,
    override readonly cause: unknown,
  ) {
    super(`the helper ended before ${expected}${cause instanceof Error ? `: ${cause.message}` : ''}`)
  }
}

interface Asked {
  readonly name: CycleCallback
  readonly answer: (value: number) => void
}

export class HelperChannel {
  readonly #asked: Asked[] = []
  #waiter: ((a: Asked) => void) | undefined
  #ended: {why: unknown} | undefined
  #onEnd: ((why: unknown) => void) | undefined

  /**
   * The helper's callbacks for `names` (they are announced in cbflags); each resolves with the
   * reply the cycle gives.
   */
  callbacks(names: readonly CycleCallback[]): HelperCallbacks {
    // Each under its name in code, as the message table derives it (`wait_checkpoint` -> `waitCheckpoint`).
    return Object.fromEntries(names.map((name) => [helperMessageSpec(name).callbackName, (): CallbackReply => this.#ask(name)])) as HelperCallbacks
  }

  /** Resolves when the helper asks for `name`; rejects when it asks for another or has ended. */
  next<N extends CycleCallback>(name: N): Promise<OwedCallback<N>> {
    return new Promise<OwedCallback<N>>((resolve, reject) => {
      const take = (a: Asked): void => {
        this.#waiter = undefined
        this.#onEnd = undefined
        if (a.name !== name) {
          a.answer(0)
          reject(new HelperOrderError(name, a.name))
          return
        }
        let replied = false
        resolve({
          name,
          reply: (value) => {
            if (replied) return
            replied = true
            a.answer(value)
          },
        })
      }
      const queued = this.#asked.shift()
      if (queued) return take(queued)
      if (this.#ended) return reject(new HelperEndedError(name, this.#ended.why))
      this.#waiter = take
      this.#onEnd = (why) => reject(new HelperEndedError(name, why))
    })
  }

  /** The helper is gone (`why`: its failure, or undefined when it completed): `next` rejects from now on. */
  end(why?: unknown): void {
    if (this.#ended) return
    this.#ended = {why}
    this.#waiter = undefined
    const onEnd = this.#onEnd
    this.#onEnd = undefined
    onEnd?.(why)
  }

  #ask(name: CycleCallback): Promise<number> {
    return new Promise<number>((answer) => {
      const asked = {name, answer}
      if (this.#waiter) this.#waiter(asked)
      else this.#asked.push(asked)
    })
  }
}
