/**
 * The primary's mode: the COLO cycle with `colo`, else the Remus cycle.
 */
import {ColoPrimary} from './colo-primary.js'
import type {PrimaryMode} from './cycle.js'
import type {RemusPrimaryOptions} from './options.js'
import {RemusPrimary} from './remus-primary.js'

export function primaryMode(opts: Pick<RemusPrimaryOptions, 'colo' | 'intervalMs' | 'blackhole' | 'netbuf' | 'onEvent'>, startedAt: number): PrimaryMode {
  return opts.colo ? new ColoPrimary(opts.colo) : new RemusPrimary({intervalMs: opts.intervalMs, blackhole: opts.blackhole, netbuf: opts.netbuf, onEvent: opts.onEvent, startedAt})
}

