/** Prints a table: the first column left-aligned, the others right-aligned, a dashed rule under the head. */
export function printTable(head, rows, print = (s) => console.log(s)) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const fmtRow = (r) => r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ').trimEnd()
  print(fmtRow(head))
  print(widths.map((w) => '-'.repeat(w)).join('  '))
  for (const r of rows) print(fmtRow(r))
}
