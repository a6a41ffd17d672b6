/**
 * Our client driving Xen's REAL libxl-save-helper (Debian's xen-utils-4.17, with its shared
 * libraries unpacked next to it by scripts/fetch-xen-utils; nothing installed). There is no Xen
 * here, so the helper gets as far as xc_interface_open, logs why it failed through the callback
 * protocol, and exits 255 (its fail() is exit(-1)): that proves our framing, our argv and our fd map
 * against the real binary, in both modes. A bad mode argument makes it assert: SIGABRT. If the
 * binary or its libraries cannot be had, these tests fail with the reason (they never skip).
 */
import {describe, expect, it} from 'vitest'

import {openFdPair} from '../src/toolstack/fd/index.js'
import {HelperError, STREAM_TYPE, XCFLAGS, XTL, formatLog, startHelper, type HelperLogEvent, type HelperParams} from '../src/toolstack/helper/index.js'
import {locateXenSaveHelper} from './support/xen-utils.js'

async function runReal(params: HelperParams, extraArgs: string[] = []): Promise<{error: HelperError; logs: HelperLogEvent[]; argv: readonly string[]}> {
  const xen = await locateXenSaveHelper()
  const logs: HelperLogEvent[] = []
  const f = (): number => 1
  const run = startHelper({
    params,
    callbacks:
      params.mode === 'save'
        ? {onLog: (e) => logs.push(e), suspend: f, switchQemuLogdirty: f}
        : {onLog: (e) => logs.push(e), staticDataDone: () => 0},
    command: {file: xen.path, args: extraArgs},
    env: xen.env,
    stderr: 'pipe',
  })
  const error = await run.done.then(
    (o) => {
      throw new Error(`Xen's helper succeeded without Xen?! ${JSON.stringify(o)}`)
    },
    (e: unknown) => e as HelperError,
  )
  expect(error).toBeInstanceOf(HelperError)
  console.log(
    [`${params.mode}: ${run.argv.join(' ')}`, ...logs.map((l) => `  [${l.levelName}] ${formatLog(l)}`), `  => ${error.code}: ${error.message}`].join('\n'),
  )
  return {error, logs, argv: run.argv}
}

describe("Xen's libxl-save-helper through our client", () => {
  it('--save-domain: logs decoded, exit status 255 reported as exited without signaling completion', async () => {
    const pair = await openFdPair()
    try {
      const {error, logs, argv} = await runReal({mode: 'save', ioFd: pair.sendFd, domid: 5, xcflags: XCFLAGS.LIVE, streamType: STREAM_TYPE.PLAIN})
      expect(argv.slice(1)).toEqual(['--save-domain', '3', '-1', '5', '1', '136', '0'])
      expect(logs[0]).toEqual({level: XTL.DEBUG, levelName: 'debug', errnoval: 0, context: 'libxl-save-helper', message: 'starting save'})
      const last = logs[logs.length - 1]!
      expect(last).toMatchObject({level: XTL.ERROR, levelName: 'error', context: 'libxl-save-helper', message: 'xc_interface_open failed'})
      expect(last.errnoval).toBeGreaterThan(0)
      expect(error.code).toBe('no-completion')
      expect(error.exit).toMatchObject({code: 255, signal: null})
      expect(error.message).toMatch(
        /^domain 5 save\/restore helper exited without signaling completion \(\[\d+\] exited with error status 255\); last error: libxl-save-helper: xc_interface_open failed \(E[A-Z]+\)$/,
      )
      expect(error.info.stderr ?? '').toBe('')
    } finally {
      pair.close()
    }
  })

  it('--restore-domain with a back channel: the same, in restore mode', async () => {
    const pair = await openFdPair()
    try {
      const {error, logs, argv} = await runReal({
        mode: 'restore',
        ioFd: pair.childStdin,
        sendBackFd: pair.childStdout,
        domid: 6,
        storeEvtchn: 1,
        storeDomid: 0,
        consoleEvtchn: 2,
        consoleDomid: 0,
        streamType: STREAM_TYPE.COLO,
      })
      expect(argv.slice(1)).toEqual(['--restore-domain', '3', '4', '6', '1', '0', '2', '0', '768', '2'])
      expect(logs[0]).toMatchObject({level: XTL.DEBUG, context: 'libxl-save-helper', message: 'starting restore'})
      expect(logs.some((l) => l.level === XTL.ERROR && l.message === 'xc_interface_open failed')).toBe(true)
      expect(error.code).toBe('no-completion')
      expect(error.exit).toMatchObject({code: 255})
      expect(error.info.restoreResults).toBeUndefined()
      expect(error.message).toMatch(/^domain 6 save\/restore helper exited without signaling completion \(\[\d+\] exited with error status 255\)/)
    } finally {
      pair.close()
    }
  })

  it('a mode it does not know: it asserts, and the client reports SIGABRT', async () => {
    const pair = await openFdPair()
    try {
      const {error, logs} = await runReal({mode: 'save', ioFd: pair.sendFd, domid: 5, xcflags: 0, streamType: STREAM_TYPE.PLAIN}, ['--no-such-mode'])
      expect(logs).toEqual([])
      expect(error.code).toBe('no-completion')
      expect(error.exit).toMatchObject({code: null, signal: 'SIGABRT'})
      expect(error.message).toMatch(/died due to fatal signal Aborted \(SIGABRT\)/)
      expect(error.info.stderr).toMatch(/Assertion .*unexpected mode argument/)
    } finally {
      pair.close()
    }
  })
})
