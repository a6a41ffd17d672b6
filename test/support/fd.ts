/** Small fd helpers the fd-layer tests share. */
import {readExact} from '../../src/toolstack/fd/index.js'

/** Reads `fd` until end of file (raw reads through the fd layer), as a string. */
export async function drain(fd: number): Promise<string> {
  const parts: Buffer[] = []
  for (;;) {
    const b = await readExact(fd, 4096)
    if (b.length === 0) break
    parts.push(Buffer.from(b))
  }
  return Buffer.concat(parts).toString()
}
