/**
 * The folders of src/ and which import which: every relative `import ... from`, `export ... from`
 * and `import()` of a TypeScript file, type-only ones included (a type is a dependency too). A
 * folder is src/<name>, src/toolstack/<name>, or hypervisor/sim (a back end of its own); a file
 * directly in src/toolstack/ is a node of its own.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'

export type FolderGraph = Map<string, Set<string>>

const SPECIFIER = /(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|import\('(\.[^']+)'\)/g

/** The node a file under `src` belongs to. */
export function nodeOf(src: string, file: string): string {
  const parts = path.relative(src, file).split(path.sep)
  if (parts[0] !== 'toolstack') return parts.length > 1 ? parts[0]! : parts[0]!.replace(/\.ts$/, '')
  if (parts.length === 2) return `toolstack/${parts[1]!.replace(/\.ts$/, '')}`
  if (parts[1] === 'hypervisor' && parts[2] === 'sim' && parts.length > 3) return 'hypervisor/sim'
  return parts[1]!
}

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, {withFileTypes: true}).flatMap((e) => {
    const p = path.join(dir, e.name)
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : []
  })
}

/** Every edge between two different folders, with one import that makes it. */
export function folderGraph(src: string): {graph: FolderGraph; why: Map<string, string>} {
  const graph: FolderGraph = new Map()
  const why = new Map<string, string>()
  for (const file of tsFiles(src)) {
    const from = nodeOf(src, file)
    if (!graph.has(from)) graph.set(from, new Set())
    for (const m of fs.readFileSync(file, 'utf8').matchAll(SPECIFIER)) {
      const spec = (m[1] ?? m[2])!
      const to = nodeOf(src, path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')))
      if (to === from) continue
      graph.get(from)!.add(to)
      if (!why.has(`${from} -> ${to}`)) why.set(`${from} -> ${to}`, `${path.relative(src, file)}: ${spec}`)
    }
  }
  return {graph, why}
}

/** The groups of nodes that depend on each other in a loop (Tarjan's strongly connected components of two or more). */
export function loops(graph: FolderGraph): string[][] {
  let next = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const out: string[][] = []
  const visit = (v: string): void => {
    index.set(v, next)
    low.set(v, next++)
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) !== index.get(v)) return
    const group: string[] = []
    for (;;) {
      const w = stack.pop()!
      onStack.delete(w)
      group.push(w)
      if (w === v) break
    }
    if (group.length > 1) out.push(group.sort())
  }
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v)
  return out
}
