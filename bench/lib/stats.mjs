/** Small statistics and number formatting for the benchmarks' tables. */

/** The median of `xs` (NaN for none). */
export const median = (xs) => {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** The `p`th percentile of `xs` (nearest rank; NaN for none). */
export const percentile = (xs, p) => {
  if (!xs.length) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]
}

/** Least squares y = fixed + perPage x through the points [x, y]. */
export function leastSquares(pts) {
  const n = pts.length
  const mx = pts.reduce((s, p) => s + p[0], 0) / n
  const my = pts.reduce((s, p) => s + p[1], 0) / n
  const sxy = pts.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0)
  const sxx = pts.reduce((s, p) => s + (p[0] - mx) ** 2, 0)
  const b = sxy / sxx
  return {fixed: my - b * mx, perPage: b}
}

/** `n` with `d` decimals, or as it is when it is not a finite number. */
export const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : String(n))
