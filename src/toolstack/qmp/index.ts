/** QMP, QEMU's control protocol: framing and messages (pure), a session (pure), a unix-socket client. */
export {MAX_LINE_BYTES, LineFramer, type FramedLine} from './framing.js'
export {
  QmpCommandError,
  QmpConnectionError,
  QmpError,
  QmpTimeoutError,
  type QmpConnectionErrorCode,
  type QmpResult,
  type QmpTimeoutKind,
} from './errors.js'
export {
  encodeQmpCommand,
  formatQmpVersion,
  parseQmpMessage,
  type QmpEvent,
  type QmpGreeting,
  type QmpMessage,
  type QmpReplyId,
  type QmpVersion,
} from './protocol.js'
export {
  DEFAULT_COMMAND_TIMEOUT_MS,
  EVENT_HISTORY,
  QmpSession,
  type ExecuteOptions,
  type QmpAnomaly,
  type QmpAnomalyKind,
  type QmpEventRecord,
  type QmpSessionOptions,
  type WaitEventOptions,
} from './session.js'
export {DEFAULT_CONNECT_TIMEOUT_MS, QmpClient, type QmpConnectOptions} from './client.js'
export {connectUnix} from './client.js'
export {QemuIo, QemuIoError} from './qemu-io.js'
