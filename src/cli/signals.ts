/**
 * The signals an operator stops a long command with (Ctrl-C, kill, a closed terminal). Commands
 * that must finish what they started (migrate before GO, remus at a checkpoint boundary) take them
 * as a request, not as death.
 */
export const OPERATOR_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

/** Calls `handler` on each operator signal until the returned function is called. */
export function onOperatorSignals(handler: (signal: NodeJS.Signals) => void): () => void {
  for (const s of OPERATOR_SIGNALS) process.on(s, handler)
  return () => {
    for (const s of OPERATOR_SIGNALS) process.off(s, handler)
  }
}
