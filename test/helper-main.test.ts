/**
 * Our save/restore helper (dist/toolstack/save-helper/main.js) driven through the helper client exactly
 * as libxl drives libxl-save-helper: argv, fd map, callbacks. A live save of a running sim guest
 * into a file, restored by a second helper into an empty domain on another host, equals the source
 * at suspend; a live save into a pipe restored from it at the same time does too; a truncated
 * stream makes the restore helper report failure through `complete`. All of it twice: with page data
 * moved fd to fd by the kernel copy, and copied through the helper's buffers (XL_TS_KERNEL_COPY=0).
 * Prestarted helpers take their argv and environment on stdin and run as any helper; one that died
 * or does not fit is replaced by a new one, one not needed exits quietly.
 */
import type {ChildProcess} from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import {afterEach, beforeAll, describe, expect, test} from 'vitest'

import {openFdPair} from '../src/toolstack/fd/index.js'
import {
  HELPER_ENV,
  PRESTART_ENV,
  prestartHelper,
  runHelper,
  startHelper,
  XCFLAGS,
  STREAM_TYPE,
  HelperError,
  type HelperLogEvent,
  type HelperParams,
  type HelperProgressEvent,
  type StartHelperOptions,
} from '../src/toolstack/helper/index.js'
import {SimHypervisor} from '../src/toolstack/backends/index.js'
import {BufferSource, readMigrationStream} from '../src/toolstack/stream/index.js'
import {ensureBuilt, tempRoot, wipeRoot} from './support/sim-host.js'
import {createDomainBuilt, type LibxlDomainSpec} from '../src/toolstack/libxl/index.js'

const roots: string[] = []
const files: string[] = []
beforeAll(ensureBuilt, 120_000)
afterEach(async () => {
  // Hosts first: a failing file removal must never leave domain processes behind.
  try {
    for (const r of roots.splice(0)) await wipeRoot(r)
  } finally {
    for (const f of files.splice(0)) fs.rmSync(f, {force: true, recursive: true})
  }
})

const PAGE_COPY = {
  kernel: {env: {}, log: 'page data moved fd to fd in the kernel'},
  user: {env: {XL_TS_KERNEL_COPY: '0'}, log: 'page data copied in user space: XL_TS_KERNEL_COPY=0'},
} as const

/** A plain restore from `ioFd` into `domid`, with the event channels libxl would allocate. */
function restoreParams(ioFd: number, domid: number): HelperParams {
  return {mode: 'restore', ioFd, domid, storeEvtchn: 1, storeDomid: 0, consoleEvtchn: 2, consoleDomid: 0, streamType: STREAM_TYPE.PLAIN}
}

/** A simulated host in a temporary folder, and the environment that names it (plus `extra`). */
function host(extra: NodeJS.ProcessEnv = {}): {hv: SimHypervisor; env: NodeJS.ProcessEnv} {
  const root = tempRoot('hm')
  roots.push(root)
  return {hv: new SimHypervisor(root), env: {...process.env, ...extra, XL_TS_ROOT: root, XL_TS_BACKEND: 'sim'}}
}

const spec = (name: string): LibxlDomainSpec => ({
  name,
  type: 'hvm',
  maxMemKb: 64 * 1024,
  vcpus: 1,
  config: {c_info: {name, type: 'hvm'}},
  workload: {dirtyRate: 8000, workingSetMiB: 32, seed: 9, nondeterminism: 0, packetRate: 50},
})

function tempFile(): string {
  const f = path.join(fs.mkdtempSync('/tmp/xlts-hm-f-'), 'stream')
  files.push(f, path.dirname(f))
  return f
}

for (const [pageCopy, how] of Object.entries(PAGE_COPY)) {

  /** A live save of `src` into `ioFd` by our helper; `atSuspend` gets the checksum the guest had when suspended. */
  function liveSave(a: ReturnType<typeof host>, src: number, ioFd: number, atSuspend: (sum: string) => void): StartHelperOptions {
    return {
      params: {mode: 'save', ioFd, domid: src, xcflags: XCFLAGS.LIVE, streamType: STREAM_TYPE.PLAIN},
      env: a.env,
      callbacks: {
        suspend: async () => {
          await a.hv.suspend(src)
          atSuspend(await a.hv.checksum(src))
          return 1
        },
        switchQemuLogdirty: () => 1,
      },
    }
  }

  describe(`our helper under the client, page data ${pageCopy === 'kernel' ? 'moved by the kernel' : 'copied in user space'}`, () => {
    test('live save to a file, restore on another host: same memory and vCPU state', async () => {
      const a = host(how.env)
      const b = host(how.env)
      const src = await createDomainBuilt(a.hv, spec('vm'), {paused: false})
      await new Promise((r) => setTimeout(r, 200))
      const file = tempFile()
      const out = fs.openSync(file, 'w')
      const logs: HelperLogEvent[] = []
      const progress: HelperProgressEvent[] = []
      let atSuspend = ''
      try {
        const save = liveSave(a, src, out, (sum) => (atSuspend = sum))
        const outcome = await runHelper({
          ...save,
          callbacks: {...save.callbacks, onLog: (e) => logs.push(e), onProgress: (e) => progress.push(e)},
        })
        expect(outcome.retval).toBe(0)
      } finally {
        fs.closeSync(out)
      }
      expect(logs.map((l) => l.message)).toContain(how.log)
      expect(progress.some((p) => p.doingWhat === 'Domain now suspended')).toBe(true)
      // Round 1's progress: its start and end, and at most one per 50 ms between (not one per record).
      const round1 = progress.filter((p) => p.doingWhat.startsWith('Frames iteration 1'))
      expect(round1[0]).toMatchObject({done: 0})
      expect(round1.at(-1)!.done).toBe(round1.at(-1)!.total)
      expect(round1.length).toBeLessThan(round1.at(-1)!.total / 1024 + 1)

      const bytes = fs.readFileSync(file)
      let end = false
      for await (const ev of readMigrationStream(new BufferSource(bytes), {format: 'libxc', streamType: 'plain'})) {
        if (ev.layer === 'libxc' && ev.record.kind === 'END') end = true
      }
      expect(end).toBe(true)

      const dst = await createDomainBuilt(b.hv, spec('vm'), {paused: true, forRestore: true})
      const inFd = fs.openSync(file, 'r')
      let results: [bigint, bigint] | undefined
      try {
        const outcome = await runHelper({
          params: restoreParams(inFd, dst),
          env: b.env,
          callbacks: {staticDataDone: () => 0, restoreResults: (s, c) => void (results = [s, c])},
        })
        expect(outcome.retval).toBe(0)
      } finally {
        fs.closeSync(inFd)
      }
      expect(results).toBeDefined()
      expect(await b.hv.checksum(dst)).toBe(atSuspend)
      expect(await b.hv.getVcpuContext(dst)).toEqual(await a.hv.getVcpuContext(src))
    })

    test('live save into a pipe, restored from it at the same time: same memory and vCPU state', async () => {
      const a = host(how.env)
      const b = host(how.env)
      const src = await createDomainBuilt(a.hv, spec('vm'), {paused: false})
      await new Promise((r) => setTimeout(r, 200))
      const dst = await createDomainBuilt(b.hv, spec('vm'), {paused: true, forRestore: true})
      const pair = await openFdPair()
      let atSuspend = ''
      const restoreLogs: HelperLogEvent[] = []
      try {
        const restored = runHelper({
          params: restoreParams(pair.childStdin, dst),
          env: b.env,
          callbacks: {staticDataDone: () => 0, onLog: (e) => restoreLogs.push(e)},
        })
        const saved = runHelper(liveSave(a, src, pair.sendFd, (sum) => (atSuspend = sum)))
        expect((await saved).retval).toBe(0)
        expect((await restored).retval).toBe(0)
      } finally {
        pair.close()
      }
      expect(restoreLogs.map((l) => l.message)).toContain(how.log)
      expect(await b.hv.checksum(dst)).toBe(atSuspend)
      expect(await b.hv.getVcpuContext(dst)).toEqual(await a.hv.getVcpuContext(src))
    })

    test('a truncated stream: the restore helper completes with a failure naming the record', async () => {
      const a = host(how.env)
      const b = host(how.env)
      const src = await createDomainBuilt(a.hv, spec('vm'), {paused: false})
      const file = tempFile()
      const out = fs.openSync(file, 'w')
      await runHelper({
        params: {mode: 'save', ioFd: out, domid: src, xcflags: 0, streamType: STREAM_TYPE.PLAIN},
        env: a.env,
        callbacks: {suspend: async () => (await a.hv.suspend(src), 1)},
      })
      fs.closeSync(out)
      fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2))
      const dst = await createDomainBuilt(b.hv, spec('vm'), {paused: true, forRestore: true})
      const inFd = fs.openSync(file, 'r')
      const err = await runHelper({
        params: restoreParams(inFd, dst),
        env: b.env,
      }).catch((e: unknown) => e)
      fs.closeSync(inFd)
      expect(err).toBeInstanceOf(HelperError)
      expect((err as HelperError).code).toBe('failed')
      expect((err as HelperError).lastError?.message).toMatch(/Restore failed: libxc PAGE_DATA record #\d+ at offset \d+/)
    })
  })
}

describe('prestarted helpers (helper/prestart.ts): started before their argv is known', () => {
  const cmdline = (pid: number | undefined): string[] => fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')
  const exited = (child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> =>
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve([child.exitCode, child.signalCode]) : new Promise((r) => child.once('exit', (c, s) => r([c, s])))

  test('take their argv and environment on stdin, then save and restore through a pipe as any helper', async () => {
    const a = host()
    const b = host()
    const src = await createDomainBuilt(a.hv, spec('vm'), {paused: false})
    const dst = await createDomainBuilt(b.hv, spec('vm'), {paused: true, forRestore: true})
    const pair = await openFdPair()
    let atSuspend = ''
    try {
      // Started with an environment that names no host: what they run with comes with the argv.
      const nowhere = {...process.env, XL_TS_BACKEND: 'sim', XL_TS_ROOT: '/nonexistent/xl-ts-root'}
      const restorePre = prestartHelper({mode: 'restore', ioFd: pair.childStdin, env: nowhere})!
      const savePre = prestartHelper({mode: 'save', ioFd: pair.sendFd, env: nowhere})!
      expect(restorePre.waiting && savePre.waiting).toBe(true)
      expect(cmdline(savePre.pid)).toEqual(expect.arrayContaining(['--await-argv', '--save-domain']))
      await new Promise((r) => setTimeout(r, 300))
      expect(restorePre.waiting && savePre.waiting).toBe(true)

      const restore = startHelper({params: restoreParams(pair.childStdin, dst), env: b.env, callbacks: {staticDataDone: () => 0}, prestarted: restorePre})
      const save = startHelper({
        params: {mode: 'save', ioFd: pair.sendFd, domid: src, xcflags: XCFLAGS.LIVE, streamType: STREAM_TYPE.PLAIN},
        env: a.env,
        callbacks: {
          suspend: async () => {
            await a.hv.suspend(src)
            atSuspend = await a.hv.checksum(src)
            return 1
          },
          switchQemuLogdirty: () => 1,
        },
        prestarted: savePre,
      })
      expect([save.prestarted, save.pid, restore.prestarted, restore.pid]).toEqual([true, savePre.pid, true, restorePre.pid])
      expect(save.argv.slice(-7)).toEqual(['--save-domain', String(save.args.ioFd), '-1', String(src), String(XCFLAGS.LIVE), String(save.cbflags), '0'])
      expect((await save.done).retval).toBe(0)
      expect((await restore.done).retval).toBe(0)
      expect(savePre.waiting || restorePre.waiting).toBe(false)
    } finally {
      pair.close()
    }
    expect(await b.hv.checksum(dst)).toBe(atSuspend)
    expect(await b.hv.getVcpuContext(dst)).toEqual(await a.hv.getVcpuContext(src))
  })

  test('one that died while it waited is not used: a new helper runs instead', async () => {
    const a = host()
    const src = await createDomainBuilt(a.hv, spec('vm'), {paused: true})
    const file = tempFile()
    const out = fs.openSync(file, 'w')
    try {
      const pre = prestartHelper({mode: 'save', ioFd: out, env: a.env})!
      process.kill(pre.pid!, 'SIGKILL')
      await exited(pre.spawned.child)
      expect(pre.waiting).toBe(false)
      const run = startHelper({
        params: {mode: 'save', ioFd: out, domid: src, xcflags: 0, streamType: STREAM_TYPE.PLAIN},
        env: a.env,
        callbacks: {suspend: async () => (await a.hv.suspend(src), 1)},
        prestarted: pre,
      })
      expect(run.prestarted).toBe(false)
      expect(run.pid).not.toBe(pre.pid)
      expect((await run.done).retval).toBe(0)
    } finally {
      fs.closeSync(out)
    }
    expect(fs.statSync(file).size).toBeGreaterThan(64 * 1024 * 1024)
  })

  test('one for other fds is not used; one not needed exits 0 without a word when disposed of', async () => {
    const a = host()
    const pair = await openFdPair()
    try {
      const pre = prestartHelper({mode: 'restore', ioFd: pair.childStdin, env: a.env})!
      let said = ''
      pre.spawned.child.stdout!.on('data', (d: Buffer) => (said += d.toString('latin1')))
      // A start for the other end of the pair: it does not fit, so it is disposed of.
      expect(pre.take({mode: 'restore', ioFd: pair.sendFd, file: process.execPath, args: [pre.opts.script]}, () => [])).toBeUndefined()
      expect(await exited(pre.spawned.child)).toEqual([0, null])
      expect(said).toBe('')

      const idle = prestartHelper({mode: 'save', ioFd: pair.sendFd, env: a.env})!
      idle.dispose()
      expect(await exited(idle.spawned.child)).toEqual([0, null])
    } finally {
      pair.close()
    }
  })

  test(`only our own helper is prestarted: not one named by ${HELPER_ENV}, nor with ${PRESTART_ENV}=0`, () => {
    expect(prestartHelper({mode: 'save', ioFd: 1, env: {...process.env, [HELPER_ENV]: '/usr/lib/xen/bin/libxl-save-helper'}})).toBeUndefined()
    expect(prestartHelper({mode: 'save', ioFd: 1, env: {...process.env, [PRESTART_ENV]: '0'}})).toBeUndefined()
  })
})
