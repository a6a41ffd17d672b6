/**
 * COLO's CHECKPOINT_STATE records as the libxl layers exchange them (XEN-FACTS §2.3, §7): NEW on
 * the main stream (primary -> secondary), SVM_SUSPENDED / SVM_READY / SVM_RESUMED on the back
 * channel (secondary -> primary). Each is one 16-byte libxl record, read with exact lengths: the
 * back channel also carries the helpers' CHECKPOINT_DIRTY_PFN_LIST records, which are the save
 * helper's to read.
 */
import {readExact, writeAll} from '../fd/index.js'
import {CHECKPOINT_STATE_NAMES, LIBXL, encodeLibxlRecord, type CheckpointStateName} from '../stream/index.js'

/** Where these records travel, as errors name it. */
const CHANNEL = 'the back channel'
/** Header (type, length 4) and a body of the u32 id padded to 8 bytes. */
const RECORD_BYTES = 16

export class ColoStateError extends Error {
  override readonly name = 'ColoStateError'
  constructor(
    message: string,
    /** The channel ended (the peer is gone), as opposed to carrying something wrong. */
    readonly ended: boolean,
  ) {
    super(message)
  }
}

/** Reads one CHECKPOINT_STATE record from `fd` and checks it is `expected` (libxl's "invalid section"). */
export async function readCheckpointState(fd: number, expected: CheckpointStateName): Promise<void> {
  let got: Buffer
  try {
    got = await readExact(fd, RECORD_BYTES, {what: `CHECKPOINT_STATE ${expected}`})
  } catch (err) {
    throw new ColoStateError(`reading data fails: ${CHANNEL}: ${(err as Error).message}`, true)
  }
  if (got.length < RECORD_BYTES) throw new ColoStateError(`reading data fails: ${CHANNEL} ended before CHECKPOINT_STATE ${expected}`, true)
  const type = got.readUInt32LE(0)
  const length = got.readUInt32LE(4)
  if (type !== LIBXL.CHECKPOINT_STATE || length !== 4) {
    throw new ColoStateError(`${CHANNEL}: expected a CHECKPOINT_STATE record (${expected}), found type ${type} length ${length}`, false)
  }
  const id = got.readUInt32LE(8)
  const want = CHECKPOINT_STATE_NAMES.indexOf(expected)
  if (id !== want) throw new ColoStateError(`invalid section: ${id}, expected: ${want}`, false)
}

/** Writes one CHECKPOINT_STATE record on `fd`. */
export async function writeCheckpointState(fd: number, state: CheckpointStateName): Promise<void> {
  try {
    await writeAll(fd, encodeLibxlRecord({kind: 'CHECKPOINT_STATE', state}), {what: `CHECKPOINT_STATE ${state}`})
  } catch (err) {
    throw new ColoStateError(`sending data fails: ${CHANNEL}: ${(err as Error).message}`, true)
  }
}
