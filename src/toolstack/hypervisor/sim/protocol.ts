/**
 * The control socket protocol between the toolstack and a domain process (unix stream socket).
 *
 * Framing: every message is a u32 big-endian byte count followed by that many bytes of UTF-8 JSON.
 * Requests `{id, op, ...args}`; answers `{id, ok: true, ...result}` or
 * `{id, ok: false, code, message}` (code = a HypervisorErrorCode). The guest's frames do not travel
 * here: they leave by its vif (netback.ts). Binary data (bitmaps, contexts) travels as base64 strings, 64-bit values as decimal strings.
 * Page contents never travel here: they move by pread/pwrite on the memory file.
 */
import type {GuestDiskStats} from './guest-disk.js'
import type {HypervisorErrorCode, WorkloadSpec} from '../index.js'

export const PROTOCOL_VERSION = 1
export const MAX_MESSAGE_BYTES = 64 << 20

export interface RuntimeInfo {
  pid: number
  /** Controller pause (xl pause). */
  paused: boolean
  /** Shut down for suspend (reason 2). */
  suspended: boolean
  /** A shutdown was asked for; the guest acts on it when it next runs. */
  shutdownPending: boolean
  dying: boolean
  /** The guest has a vCPU context (always, except a domain built for restore before its context is set). */
  hasContext: boolean
  /** The guest's workload does something (a non-zero rate); an idle guest shows as blocked. */
  busy: boolean
  /** The guest is executing steps now. */
  running: boolean
  cpuTimeNs: number
  step: number
  writes: number
  frames: number
  perturbations: number
  /** Steps the guest could not keep up with (more than a second behind): should stay 0. */
  droppedSteps: number
  stepRate: number
  logDirty: boolean
  writeLog: boolean
  stopAt: number | null
  /** Connections holding the guest still for a snapshot. */
  holds: number
  /** Frames dropped because a capture of the guest's vif did not keep up (netback.ts). */
  framesDropped: number
  /** The guest's disk requests to its device model (a guest with a device-model disk only). */
  disk?: GuestDiskStats
}

export interface WireHvmParam {
  index: number
  value: string
}

export interface WireTsc {
  mode: number
  khz: number
  nsec: string
  incarnation: number
}

export interface WireCpuPolicy {
  cpuid: {leaf: number; subleaf: number; a: number; b: number; c: number; d: number}[]
  msrs: {index: number; value: string}[]
}

export interface LogDirtyResult {
  bitmap: string
  pages: number
  /** The epoch the bitmap covers (epochs start at log-dirty enable and at each clean). */
  epoch: number
  /** Page writes the guest made in that epoch up to this answer. */
  writes: number
}

/** Every op: its arguments and its result. */
export interface Ops {
  hello: {args: {}; result: {protocol: number; domid: number; pid: number}}
  /** Checks the guest's disk as its device model shows it: block i holds byte patterns[i] all over (256: not checked). */
  'disk-verify': {args: {patterns: number[]}; result: {blocks: number; mismatches: number[]}}
  info: {args: {}; result: RuntimeInfo}
  pause: {args: {}; result: {}}
  unpause: {args: {}; result: {}}
  suspend: {args: {}; result: {}}
  resume: {args: {cancel: boolean}; result: {}}
  shutdown: {args: {}; result: {gone: boolean}}
  destroy: {args: {}; result: {}}
  'load-workload': {args: {workload: WorkloadSpec}; result: {}}
  'log-dirty': {args: {action: 'enable' | 'disable' | 'peek' | 'clean'}; result: Partial<LogDirtyResult>}
  'get-context': {args: {}; result: {data: string}}
  'set-context': {args: {data: string}; result: {}}
  'get-hvm-params': {args: {}; result: {params: WireHvmParam[]}}
  'set-hvm-params': {args: {params: WireHvmParam[]}; result: {}}
  'get-tsc': {args: {}; result: WireTsc}
  'set-tsc': {args: WireTsc; result: {}}
  'get-cpu-policy': {args: {}; result: WireCpuPolicy}
  'set-cpu-policy': {args: WireCpuPolicy; result: {}}
  /** Stops the guest while this connection holds it (a consistent snapshot), without touching the controller pause. */
  hold: {args: {on: boolean}; result: {}}
  // Test and measurement hooks of the sim.
  'run-steps': {args: {n: number}; result: {step: number}}
  'stop-at': {args: {step: number | null}; result: {step: number}}
  'write-log': {args: {enable: boolean}; result: {}}
  'write-log-read': {args: {}; result: {epochs: {epoch: number; pfns: string}[]}}
}

export type OpName = keyof Ops
export type Request = {[K in OpName]: {id: number; op: K} & Ops[K]['args']}[OpName]
export type OkAnswer = {id: number; ok: true} & Record<string, unknown>
export type ErrAnswer = {id: number; ok: false; code: HypervisorErrorCode; message: string}
export type Answer = OkAnswer | ErrAnswer

export function encodeMessage(msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8')
  const out = Buffer.allocUnsafe(4 + body.length)
  out.writeUInt32BE(body.length, 0)
  body.copy(out, 4)
  return out
}

/** Splits a byte stream into messages. */
export class MessageDecoder {
  private chunks: Buffer[] = []
  private buffered = 0

  push(chunk: Buffer): unknown[] {
    this.chunks.push(chunk)
    this.buffered += chunk.length
    const out: unknown[] = []
    for (;;) {
      if (this.buffered < 4) break
      let head = this.chunks[0]!
      if (head.length < 4) {
        head = Buffer.concat(this.chunks)
        this.chunks = [head]
      }
      const len = head.readUInt32BE(0)
      if (len > MAX_MESSAGE_BYTES) throw new Error(`control message of ${len} bytes is too long`)
      if (this.buffered < 4 + len) break
      if (head.length < 4 + len) {
        head = Buffer.concat(this.chunks)
        this.chunks = [head]
      }
      out.push(JSON.parse(head.toString('utf8', 4, 4 + len)))
      const rest = head.subarray(4 + len)
      this.chunks[0] = rest
      this.buffered -= 4 + len
      if (rest.length === 0) this.chunks.shift()
    }
    return out
  }
}
