/**
 * The folders of src/ depend on each other in layers, never in a loop (README, Layout): commands
 * and cli on top, then xl (what xl does), replication (the checkpoint cycles), libxl (the stream
 * around the helper), helper and the engines, and the Hypervisor port at the bottom; a back end
 * knows the port, the port knows no back end.
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import {describe, expect, it} from 'vitest'

import {folderGraph, loops} from './support/folder-graph.js'

const SRC = path.resolve(import.meta.dirname, '..', 'src')

describe('layers', () => {
  it('no two folders of src/ import each other, directly or round a loop', () => {
    const {graph, why} = folderGraph(SRC)
    const found = loops(graph)
    // Each loop with the imports that close it, so a failure says where to look.
    const explain = found.map((group) => [...why].filter(([edge]) => group.some((a) => group.some((b) => edge === `${a} -> ${b}`))).map(([e, w]) => `${e} (${w})`))
    expect(found, JSON.stringify(explain, null, 2)).toEqual([])
  })

  it('the port knows no back end; only backends/ names the sim, and only the programs build a back end', () => {
    const {graph} = folderGraph(SRC)
    expect([...graph.get('hypervisor') ?? []]).toEqual([])
    const reachSim = [...graph].filter(([from, to]) => to.has('hypervisor/sim') && from !== 'backends').map(([from]) => from)
    // Tests and `xl-ts sim` reach what only the sim has through the port's extras interface.
    expect(reachSim).toEqual([])
    const reachBackends = [...graph].filter(([, to]) => to.has('backends')).map(([from]) => from).sort()
    expect(reachBackends).toEqual(['cli', 'commands', 'save-helper', 'xl'])
    // The sim emulates Xen and nothing more: it uses the port and plumbing, none of the toolstack's layers.
    expect([...(graph.get('hypervisor/sim') ?? [])].sort()).toEqual(['fd', 'hypervisor', 'process', 'qmp', 'stream', 'toolstack/entry-points'])
  })

  it('the check finds a loop where there is one (negative control)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlts-layers-'))
    try {
      for (const [file, text] of Object.entries({
        'toolstack/a/index.ts': "import {b} from '../b/index.js'\nexport const a = b\n",
        'toolstack/b/index.ts': "import type {C} from '../c/x.js'\nexport const b = 1\nexport type B = C\n",
        'toolstack/c/x.ts': "export type C = typeof import('../a/index.js')\n",
        'toolstack/d/index.ts': "export {a} from '../a/index.js'\n",
      })) {
        fs.mkdirSync(path.dirname(path.join(dir, file)), {recursive: true})
        fs.writeFileSync(path.join(dir, file), text)
      }
      expect(loops(folderGraph(dir).graph)).toEqual([['a', 'b', 'c']])
    } finally {
      fs.rmSync(dir, {recursive: true, force: true})
    }
  })
})
