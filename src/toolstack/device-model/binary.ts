/** Finding an executable as the shell would: a path with a slash as it is, else the first in PATH. */
import * as fs from 'node:fs'
import * as path from 'node:path'

/** `binary` as an absolute path, looked up in PATH when it has no slash; undefined when not found. */
export function resolveBinary(binary: string, env: NodeJS.ProcessEnv): string | undefined {
  const candidates = binary.includes('/') ? [path.resolve(binary)] : (env.PATH ?? '').split(':').filter(Boolean).map((dir) => path.join(dir, binary))
  return candidates.find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return fs.statSync(file).isFile()
    } catch {
      return false
    }
  })
}
