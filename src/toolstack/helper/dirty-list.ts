/**
 * The COLO primary's read of the secondary's dirty pfn list from the back channel (libxc's
 * colo_merge_secondary_dirty_bitmap; XEN-FACTS §7.2): one CHECKPOINT_DIRTY_PFN_LIST record, with
 * libxc's checks (type, length a multiple of 8), as the save helper does it between the toolstack's
 * reads of CHECKPOINT_STATE records on the same fd.
 *
 * Xen 4.18+ secondaries write a 16-byte record header (type, length, a NULL pointer) before the
 * list (§12.1). Read with 4.17's 8-byte header, its list starts with a 0 and its last pfn is left
 * in the pipe, already written; a 4.17 secondary (and ours) writes nothing more until SVM_READY,
 * which comes only after our checkpoint. So a list that starts with 0, or is empty, is checked for
 * 8 more bytes waiting in the pipe: there, the first 8 bytes were the pointer and those are the
 * list's last pfn. Every other list is read as it is, with no wait.
 */
import {SyncFdSource, readAvailableSync} from '../fd/index.js'
import {LIBXC, backChannelTypeName, decodeDirtyPfnList, readRecordBody, readRecordHeader} from '../stream/index.js'

/** How long a list that may carry the 16-byte header waits for its last 8 bytes. */
export const QUIRK_WAIT_MS = 50

/** Returns the reader of one list per call; `onQuirk` is called the first time the 16-byte header is seen. */
export function dirtyListReader(fd: number, onQuirk: () => void): () => Promise<number[]> {
  const source = new SyncFdSource(fd, {what: 'the back channel'})
  let index = 0
  let quirkSeen = false
  return async () => {
    const frame = {format: 'back-channel' as const, index: index++, nameOf: backChannelTypeName}
    const header = (await readRecordHeader(source, frame))!
    let raw = await readRecordBody(source, header, frame)
    if (raw.type === LIBXC.CHECKPOINT_DIRTY_PFN_LIST && (raw.body.length === 0 || raw.body.readBigUInt64LE(0) === 0n)) {
      const more = readAvailableSync(fd, 8, QUIRK_WAIT_MS)
      if (more.bytes.length === 8) {
        if (!quirkSeen) onQuirk()
        quirkSeen = true
        // The pointer's 8 bytes go; the list is what followed them (an empty list had only those).
        raw = {...raw, body: raw.body.length === 0 ? raw.body : Buffer.concat([raw.body.subarray(8), more.bytes])}
      }
    }
    return decodeDirtyPfnList(raw)
  }
}
