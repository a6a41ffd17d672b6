/** Reading a child's output a line at a time. */

/** Calls `onLine` with each line `stream` gives (without its '\n'), as the lines come. */
export function onLines(stream, onLine) {
  let buf = ''
  stream.on('data', (d) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, i)
      buf = buf.slice(i + 1)
      onLine(text)
    }
  })
}

/** NDJSON: calls `onEvent` with each line parsed, `onNotJson` with each line that is not JSON; blank lines are skipped. */
export function onNdjson(stream, onEvent, onNotJson) {
  onLines(stream, (text) => {
    if (!text.trim()) return
    let e
    try {
      e = JSON.parse(text)
    } catch {
      onNotJson(text)
      return
    }
    onEvent(e)
  })
}
