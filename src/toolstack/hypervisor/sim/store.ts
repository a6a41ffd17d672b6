/**
 * The simulated host's xenstore: one file, `<root>/store.json` (path → value), replaced whole by
 * rename so a reader always sees one complete state. Writers take the store's lock (`store.lock/`,
 * as the host lock) for the time of one read-change-write, so a transaction never has to run twice
 * here; Xen's xenstored may make it (EAGAIN), which is why the port says it might. Watches follow
 * the file with inotify (fs.watch on the folder).
 *
 * xenstore's rules are kept so that nothing works here that would not on Xen: absolute paths of
 * [A-Za-z0-9/_@.-] characters, at most STORE_PATH_MAX bytes, values of at most STORE_VALUE_MAX
 * bytes, missing parents made with empty values on write.
 */
import * as crypto from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import {HypervisorError, STORE_PATH_MAX, STORE_VALUE_MAX, type Store, type StoreAccess, type Subscription} from '../index.js'
import {withLock} from './lock.js'

type Tree = Map<string, string>

const PATH_CHARS = /^\/(?:[A-Za-z0-9_@.-]+(?:\/[A-Za-z0-9_@.-]+)*)?$/

function checkPath(p: string): void {
  if (typeof p !== 'string' || !PATH_CHARS.test(p) || Buffer.byteLength(p) > STORE_PATH_MAX) {
    throw new HypervisorError('bad-request', `xenstore: ${JSON.stringify(p)} is not a valid absolute path`)
  }
}

function parentsOf(p: string): string[] {
  const out: string[] = []
  for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) out.push(p.slice(0, i))
  return out
}

function under(p: string, node: string): boolean {
  return node === '/' || p === node || p.startsWith(`${node}/`)
}

/** The operations on one state of the tree; `dirty` once a write or remove changed it. */
class TreeAccess implements StoreAccess {
  dirty = false
  constructor(readonly tree: Tree) {}

  async read(p: string): Promise<string | undefined> {
    checkPath(p)
    return this.tree.get(p)
  }

  async directory(p: string): Promise<string[]> {
    checkPath(p)
    const prefix = p === '/' ? '/' : `${p}/`
    const names = new Set<string>()
    for (const key of this.tree.keys()) {
      if (key.startsWith(prefix) && key.length > prefix.length) names.add(key.slice(prefix.length).split('/')[0]!)
    }
    return [...names].sort()
  }

  async write(p: string, value: string): Promise<void> {
    checkPath(p)
    if (p === '/') throw new HypervisorError('bad-request', 'xenstore: the root has no value')
    if (typeof value !== 'string' || Buffer.byteLength(value) > STORE_VALUE_MAX) {
      throw new HypervisorError('bad-request', `xenstore: the value for ${p} is not a string of at most ${STORE_VALUE_MAX} bytes`)
    }
    for (const parent of parentsOf(p)) if (!this.tree.has(parent)) this.tree.set(parent, '')
    if (this.tree.get(p) !== value) {
      this.tree.set(p, value)
      this.dirty = true
    }
  }

  async remove(p: string): Promise<void> {
    checkPath(p)
    for (const key of [...this.tree.keys()]) {
      if (under(key, p)) {
        this.tree.delete(key)
        this.dirty = true
      }
    }
  }
}

export class SimStore implements Store {
  readonly #file: string
  readonly #lock: string

  constructor(root: string) {
    this.#file = path.join(root, 'store.json')
    this.#lock = path.join(root, 'store.lock')
  }

  /** Writes the tree a fresh host starts with, unless the store exists (as Xen's start-up writes dom0's entries). */
  seed(entries: Record<string, string>): void {
    if (fs.existsSync(this.#file)) return
    const tmp = `${this.#file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`
    fs.writeFileSync(tmp, JSON.stringify(entries), {mode: 0o600})
    try {
      fs.linkSync(tmp, this.#file)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
    } finally {
      fs.rmSync(tmp, {force: true})
    }
  }

  #load(): Tree {
    let text: string
    try {
      text = fs.readFileSync(this.#file, 'utf8')
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Map()
      throw e
    }
    const parsed = JSON.parse(text) as unknown
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new HypervisorError('backend-failure', `${this.#file} is not a simulated xenstore`)
    }
    return new Map(Object.entries(parsed as Record<string, string>))
  }

  #save(tree: Tree): void {
    const tmp = `${this.#file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`
    fs.writeFileSync(tmp, JSON.stringify(Object.fromEntries(tree)), {mode: 0o600})
    fs.renameSync(tmp, this.#file)
  }

  async transaction<T>(body: (tx: StoreAccess) => Promise<T>): Promise<T> {
    return withLock(this.#lock, async () => {
      const tx = new TreeAccess(this.#load())
      const result = await body(tx)
      if (tx.dirty) this.#save(tx.tree)
      return result
    })
  }

  read(p: string): Promise<string | undefined> {
    return new TreeAccess(this.#load()).read(p)
  }

  directory(p: string): Promise<string[]> {
    return new TreeAccess(this.#load()).directory(p)
  }

  write(p: string, value: string): Promise<void> {
    return this.transaction((tx) => tx.write(p, value))
  }

  remove(p: string): Promise<void> {
    return this.transaction((tx) => tx.remove(p))
  }

  /** The values at and below `node`, as one string to compare. */
  #snapshot(node: string): string {
    let tree: Tree
    try {
      tree = this.#load()
    } catch {
      return ''
    }
    return JSON.stringify([...tree].filter(([k]) => under(k, node)).sort(([a], [b]) => (a < b ? -1 : 1)))
  }

  async watch(node: string, onChange: () => void): Promise<Subscription> {
    checkPath(node)
    const base = path.basename(this.#file)
    let last = this.#snapshot(node)
    const watcher = fs.watch(path.dirname(this.#file), {persistent: false}, (_event, name) => {
      if (name !== base) return
      const now = this.#snapshot(node)
      if (now === last) return
      last = now
      onChange()
    })
    watcher.on('error', () => undefined)
    queueMicrotask(onChange)
    return {
      close: async () => watcher.close(),
    }
  }
}
