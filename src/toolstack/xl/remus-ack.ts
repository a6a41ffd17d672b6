/**
 * xl-ts's Remus acknowledgement (beyond xl): after a Remus secondary has a checkpoint whole
 * (through CHECKPOINT_END), it writes one libxl CHECKPOINT_END record (8 bytes: type 4, length 0)
 * on the way back, which xl leaves unused in Remus mode. The primary releases the network output of
 * that checkpoint's epoch only then, so no client sees state that a failover would lose (xl
 * releases it once the checkpoint is written to the stream). The main stream is byte for byte xl's.
 */
import {encodeLibxlRecord} from '../stream/index.js'

export const REMUS_ACK: readonly Buffer[] = encodeLibxlRecord({kind: 'CHECKPOINT_END'})
