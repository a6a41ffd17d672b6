/**
 * The COLO primary's read of the secondary's dirty pfn list from the back channel (libxc's
 * colo_merge_secondary_dirty_bitmap; XEN-FACTS §7.2): one CHECKPOINT_DIRTY_PFN_LIST record, with
 * libxc's checks (type, length a multiple of 8), as the save helper does it between the toolstack's
 * reads of CHECKPOINT_STATE records on the same fd.
 *
 * Xen 4.18+ secondaries write a 16-byte record header (type, length, a NULL pointer) before the
 * list (§12.1). Read with 4.17's 8-byte header, its list starts with a 0 and its last pfn is left
 * in the pipe, already written; a 4.17 secondary (and ours) writes nothing more until SVM_READY,
 * which comes only after our checkpoint. So while the form is not known, a list that starts with
 * 0, or is empty, is checked for 8 more bytes waiting in the pipe: there, the first 8 bytes were
 * the pointer and those are the list's last pfn. A list that starts with 0 waits up to
 * QUIRK_WAIT_MS for them: a long list reaches a pipe in more than one write, and its last bytes can
 * come later. An empty one does not wait: its 16 bytes are one write of less than PIPE_BUF, so they
 * are in the pipe (or in one ssh packet) together, and if the pointer were ever late the next
 * record would be misread loudly (not SVM_READY), never a list taken wrong. An idle guest sends
 * nothing but empty lists, and each of its checkpoints used to wait the whole 50 ms.
 *
 * A secondary keeps its form for the whole session, so the reader learns it once and stops
 * waiting: the 4.18 form when those 8 bytes came, the 4.17 form as soon as a list starts with a
 * pfn other than 0 (the 4.18 form always starts with the NULL pointer). Without that, every
 * checkpoint in which the secondary dirtied pfn 0 waited the whole 50 ms with both guests stopped.
 */
import {SyncFdSource, readAvailableSync} from '../fd/index.js'
import {LIBXC, StreamError, backChannelTypeName, decodeDirtyPfnList, readRecordBody, readRecordHeader} from '../stream/index.js'

/** How long a list that may carry the 16-byte header waits for its last 8 bytes. */
export const QUIRK_WAIT_MS = 50

/** The secondary's record header, as far as the lists seen so far tell. */
export type DirtyListForm = 'unknown' | '4.17' | '4.18'

/** Returns the reader of one list per call; `onQuirk` is called the first time the 16-byte header is seen. */
export function dirtyListReader(fd: number, onQuirk: () => void): DirtyListReader {
  const source = new SyncFdSource(fd, {what: 'the back channel'})
  let index = 0
  let form: DirtyListForm = 'unknown'
  const read = async (): Promise<number[]> => {
    const frame = {format: 'back-channel' as const, index: index++, nameOf: backChannelTypeName}
    const header = (await readRecordHeader(source, frame))!
    let raw = await readRecordBody(source, header, frame)
    // A length that is not whole pfns is refused below whatever the header's form.
    if (raw.type === LIBXC.CHECKPOINT_DIRTY_PFN_LIST && raw.body.length % 8 === 0 && form !== '4.17') {
      const leadingZero = raw.body.length === 0 || raw.body.readBigUInt64LE(0) === 0n
      const record = {type: raw.type, name: backChannelTypeName(raw.type), index: raw.index}
      let more: Buffer | undefined
      if (form === '4.18') {
        if (!leadingZero) throw new StreamError('back-channel', 'bad-value', raw.offset, `the 16-byte record header's pointer is not NULL (0x${raw.body.readBigUInt64LE(0).toString(16)})`, record)
        more = source.readSync(8)
      } else if (leadingZero) {
        const got = readAvailableSync(fd, 8, raw.body.length === 0 ? 0 : QUIRK_WAIT_MS).bytes
        // Some of the 8 bytes came: the rest is on its way (a 4.17 secondary sends nothing here).
        if (got.length > 0) more = got.length === 8 ? got : Buffer.concat([got, source.readSync(8 - got.length)])
      } else form = '4.17'
      if (more) {
        if (more.length < 8) throw new StreamError('back-channel', 'truncated', raw.offset, `the channel ended inside the list's last pfn (16-byte record header)`, record)
        if (form === 'unknown') onQuirk()
        form = '4.18'
        // The pointer's 8 bytes go; the list is what followed them (an empty list had only those).
        raw = {...raw, body: raw.body.length === 0 ? raw.body : Buffer.concat([raw.body.subarray(8), more])}
      }
    }
    return decodeDirtyPfnList(raw)
  }
  return Object.assign(read, {form: () => form})
}

/** Reads one list per call; `form()` says which record header the secondary has been seen to use. */
export type DirtyListReader = (() => Promise<number[]>) & {readonly form: () => DirtyListForm}
