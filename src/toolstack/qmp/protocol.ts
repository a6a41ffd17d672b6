/**
 * QMP messages (docs/interop/qmp-spec in QEMU): what one line from QEMU means, and the bytes of a
 * command. Pure, no I/O.
 *
 * From QEMU, one JSON object per line (`\r\n`):
 *   greeting  {"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"}, "capabilities": [...]}}
 *   success   {"return": <any>, "id": <ours>}
 *   error     {"error": {"class": "<ErrorClass>", "desc": "<text>"}, "id": <ours>}
 *   event     {"event": "<NAME>", "data"?: {...}, "timestamp": {"seconds", "microseconds"}}
 * A reply carries the `id` of its command when the command had one (QEMU echoes any JSON value);
 * replies to input QEMU could not parse carry none. Everything is checked: a line that is not JSON, not
 * an object, or a reply/greeting/event of the wrong shape is a `protocol` QmpConnectionError; an object
 * with none of those keys is returned as `unknown` (the spec lets servers add message kinds).
 */
import {QmpConnectionError} from './errors.js'

export interface QmpVersion {
  readonly major: number
  readonly minor: number
  readonly micro: number
  /** The distribution's package string (`Debian 1:7.2+dfsg-7+deb12u18+b3`), may be empty. */
  readonly package: string
}

export interface QmpGreeting {
  readonly version: QmpVersion
  /** Capabilities the server offers (`oob` on 7.2); we enable none. */
  readonly capabilities: readonly string[]
}

export interface QmpEvent {
  readonly event: string
  readonly data?: Record<string, unknown>
  /** QEMU's timestamp (seconds + microseconds since the epoch), when it sent one. */
  readonly timestamp?: {readonly seconds: number; readonly microseconds: number}
}

/** The `id` of a reply: absent (QEMU had none to echo) or the JSON value QEMU sent back. */
export type QmpReplyId = {readonly hasId: false} | {readonly hasId: true; readonly id: unknown}

export type QmpMessage =
  | {readonly kind: 'greeting'; readonly greeting: QmpGreeting}
  | ({readonly kind: 'return'; readonly value: unknown} & QmpReplyId)
  | ({readonly kind: 'error'; readonly errorClass: string; readonly desc: string} & QmpReplyId)
  | {readonly kind: 'event'; readonly event: QmpEvent}
  | {readonly kind: 'unknown'; readonly value: Record<string, unknown>}

/** `7.2.22` */
export function formatQmpVersion(v: QmpVersion): string {
  return `${v.major}.${v.minor}.${v.micro}`
}

function protocolError(label: string, detail: string): QmpConnectionError {
  return new QmpConnectionError('protocol', `${label}: QMP protocol error: ${detail}`)
}

/** The first `max` characters of untrusted text, for an error message. */
export function excerpt(text: string, max = 120): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}...` : text)
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

const has = (o: object, key: string): boolean => Object.hasOwn(o, key)

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}

function replyId(o: Record<string, unknown>): QmpReplyId {
  return has(o, 'id') ? {hasId: true, id: o.id} : {hasId: false}
}

function parseGreeting(body: unknown, label: string): QmpGreeting {
  const version = isObject(body) ? body.version : undefined
  const qemu = isObject(version) ? version.qemu : undefined
  const caps = isObject(body) ? body.capabilities : undefined
  if (!isObject(qemu) || !isCount(qemu.major) || !isCount(qemu.minor) || !isCount(qemu.micro)) {
    throw protocolError(label, `greeting without a QEMU version: ${excerpt(JSON.stringify(body) ?? '')}`)
  }
  if (!Array.isArray(caps) || !caps.every((c) => typeof c === 'string')) {
    throw protocolError(label, 'greeting without a capabilities list')
  }
  const pkg = isObject(version) && typeof version.package === 'string' ? version.package : ''
  return {version: {major: qemu.major, minor: qemu.minor, micro: qemu.micro, package: pkg}, capabilities: caps}
}

function parseEvent(o: Record<string, unknown>, label: string): QmpEvent {
  const name = o.event
  if (typeof name !== 'string' || name === '') throw protocolError(label, `event without a name: ${excerpt(JSON.stringify(o))}`)
  if (o.data !== undefined && !isObject(o.data)) throw protocolError(label, `event ${name} with data that is not an object`)
  const ts = o.timestamp
  const timestamp =
    isObject(ts) && typeof ts.seconds === 'number' && typeof ts.microseconds === 'number'
      ? {seconds: ts.seconds, microseconds: ts.microseconds}
      : undefined
  return {event: name, ...(o.data === undefined ? {} : {data: o.data}), ...(timestamp ? {timestamp} : {})}
}

/**
 * One line from QEMU as a QMP message. Throws a `protocol` QmpConnectionError for anything that is
 * not QMP. `label` names the connection in the error.
 */
export function parseQmpMessage(line: string, label = 'QMP'): QmpMessage {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch (err) {
    throw protocolError(label, `not JSON (${(err as Error).message}): ${excerpt(line)}`)
  }
  if (!isObject(value)) throw protocolError(label, `not a JSON object: ${excerpt(line)}`)
  if (has(value, 'QMP')) return {kind: 'greeting', greeting: parseGreeting(value.QMP, label)}
  if (has(value, 'return')) return {kind: 'return', value: value.return, ...replyId(value)}
  if (has(value, 'error')) {
    const e = value.error
    if (!isObject(e) || typeof e.class !== 'string' || typeof e.desc !== 'string') {
      throw protocolError(label, `error reply without class and desc: ${excerpt(line)}`)
    }
    return {kind: 'error', errorClass: e.class, desc: e.desc, ...replyId(value)}
  }
  if (has(value, 'event')) return {kind: 'event', event: parseEvent(value, label)}
  return {kind: 'unknown', value}
}

/**
 * The line that runs `command` with `id`. Throws a TypeError for a command that is not a QMP name or
 * arguments that are not a plain JSON object (or cannot be serialised, e.g. a bigint).
 */
export function encodeQmpCommand(command: string, args: Record<string, unknown> | undefined, id: number): string {
  if (typeof command !== 'string' || !/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(command)) {
    throw new TypeError(`not a QMP command name: ${JSON.stringify(command)}`)
  }
  if (args !== undefined && !isObject(args)) throw new TypeError(`QMP arguments of "${command}" must be an object`)
  const msg: Record<string, unknown> = {execute: command}
  if (args !== undefined) msg.arguments = args
  msg.id = id
  return `${JSON.stringify(msg)}\n`
}
