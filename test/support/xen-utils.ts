/**
 * Xen's own tools from Debian's xen-utils-4.17, unpacked (not installed) by scripts/fetch-xen-utils:
 * `verify-stream-v2` (pure Python) and `libxl-save-helper` (with the shared libraries it needs,
 * unpacked into the same root from Debian's libxenmisc4.17, libxentoollog1, ...).
 *
 * Where: `XEN_UTILS_ROOT` if set (the folder `dpkg -x` unpacked into), else
 * `$XEN_UTILS_CACHE/root` (default `<repo>/.cache/xen-utils/root`). When it is not there this runs
 * scripts/fetch-xen-utils; when that fails it throws, so the tests that need Xen's tools fail with the
 * reason. They never skip: a missing verifier must not look like a passing interop test.
 */
import {existsSync, readFileSync} from 'node:fs'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const XEN_LIB = 'usr/lib/xen-4.17'

export interface XenUtils {
  /** The folder the package was unpacked into. */
  readonly root: string
  /** `<root>/usr/lib/xen-4.17/bin/verify-stream-v2` */
  readonly verifyStreamV2: string
  /** PYTHONPATH for the verifier: `<root>/usr/lib/xen-4.17/lib/python` (the `xen` package). */
  readonly pythonPath: string
  /** `<root>/usr/lib/xen-4.17/bin/libxl-save-helper` (needs Xen's libraries to run). */
  readonly libxlSaveHelper: string
  /** The Python that runs the verifier: `XEN_PYTHON`, else `python3` from PATH. */
  readonly python: string
}

function utilsAt(root: string): XenUtils {
  return {
    root,
    verifyStreamV2: path.join(root, XEN_LIB, 'bin/verify-stream-v2'),
    pythonPath: path.join(root, XEN_LIB, 'lib/python'),
    libxlSaveHelper: path.join(root, XEN_LIB, 'bin/libxl-save-helper'),
    python: process.env.XEN_PYTHON || 'python3',
  }
}

function defaultRoot(): string {
  const cache = process.env.XEN_UTILS_CACHE || path.join(REPO_ROOT, '.cache/xen-utils')
  return path.join(cache, 'root')
}

let located: Promise<XenUtils> | undefined

/** Finds (fetching if needed) the unpacked xen-utils; rejects with a clear message when it cannot. */
export function locateXenUtils(): Promise<XenUtils> {
  located ??= locate()
  return located
}

async function locate(): Promise<XenUtils> {
  const explicit = process.env.XEN_UTILS_ROOT
  if (explicit) {
    const utils = utilsAt(path.resolve(explicit))
    if (!existsSync(utils.verifyStreamV2)) {
      throw new Error(`XEN_UTILS_ROOT=${explicit} has no ${XEN_LIB}/bin/verify-stream-v2 (unset it to use the cache)`)
    }
    return utils
  }
  const cached = utilsAt(defaultRoot())
  if (existsSync(cached.verifyStreamV2)) return cached

  const script = path.join(REPO_ROOT, 'scripts/fetch-xen-utils')
  const run = await execa('bash', [script], {reject: false, stdin: 'ignore', all: false})
  if (run.exitCode !== 0 || run.failed) {
    throw new Error(
      [
        `Xen's verify-stream-v2 is not available: ${cached.verifyStreamV2} is missing and`,
        `scripts/fetch-xen-utils failed (exit ${run.exitCode ?? run.signal ?? '?'}).`,
        'Run `bash scripts/setup` (as root, with Debian apt access) or set XEN_UTILS_ROOT.',
        'fetch-xen-utils said:',
        String(run.stderr || run.shortMessage).trim(),
      ].join('\n'),
    )
  }
  const root = String(run.stdout).trim().split('\n').pop() ?? ''
  const utils = utilsAt(root)
  if (!existsSync(utils.verifyStreamV2)) {
    throw new Error(`scripts/fetch-xen-utils printed ${JSON.stringify(root)}, which has no ${XEN_LIB}/bin/verify-stream-v2`)
  }
  return utils
}

export type VerifyFormat = 'libxc' | 'libxl' | 'xl'

export interface VerifyResult {
  /** 0 valid; 1 stream/record/IO error ("Stream Error:"); 2 a bug in the script ("Script Error:"). */
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
}

export interface VerifyOptions {
  /** `-v`: summarise the records on stdout. Default true. */
  readonly verbose?: boolean
  /**
   * How a Buffer reaches the verifier. `file` (default): written to a temporary file, given as `-i FILE`.
   * `stdin`: fed through a pipe (`-i 0`). The verifier reads its input unbuffered and takes a short
   * read for the end of the stream, so through a pipe any record larger than what the pipe holds
   * (64 KiB by default; every full PAGE_DATA record) fails with "Stream truncated".
   */
  readonly via?: 'file' | 'stdin'
}

/**
 * Runs Xen's verify-stream-v2 on a stream: a Buffer or a file (`-i FILE`). Resolves with the exit
 * code and output whatever the verdict; rejects only if the verifier cannot be found or started.
 */
export async function verifyStreamV2(
  input: Buffer | {readonly file: string},
  format: VerifyFormat,
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const utils = await locateXenUtils()
  if (Buffer.isBuffer(input) && (opts.via ?? 'file') === 'file') {
    const dir = await mkdtemp(path.join(tmpdir(), 'xl-ts-verify-'))
    try {
      const file = path.join(dir, `stream.${format}`)
      await writeFile(file, input)
      return await verifyStreamV2({file}, format, opts)
    } finally {
      await rm(dir, {recursive: true, force: true})
    }
  }
  const args = [utils.verifyStreamV2, '-f', format]
  if (opts.verbose ?? true) args.push('-v')
  const fromFile = !Buffer.isBuffer(input)
  args.push('-i', fromFile ? input.file : '0')
  const run = await execa(utils.python, args, {
    reject: false,
    stripFinalNewline: false,
    ...(fromFile ? {stdin: 'ignore' as const} : {input}),
    env: {PYTHONPATH: utils.pythonPath, PYTHONDONTWRITEBYTECODE: '1'},
  })
  if (run.exitCode === undefined) {
    throw new Error(`could not run ${utils.python} ${args.join(' ')}: ${run.shortMessage}`)
  }
  return {exitCode: run.exitCode, stdout: String(run.stdout), stderr: String(run.stderr)}
}

export interface XenSaveHelper {
  /** `<root>/usr/lib/xen-4.17/bin/libxl-save-helper` */
  readonly path: string
  /** LD_LIBRARY_PATH that finds its libraries inside the unpacked root. */
  readonly libraryPath: string
  /** process.env plus that LD_LIBRARY_PATH: the environment to run it in. */
  readonly env: NodeJS.ProcessEnv
  /** The Debian packages its libraries came from (as fetch-xen-utils recorded them). */
  readonly packages: readonly string[]
}

const LIBS_STAMP = '.xl-ts-libs'
const LIBS_MISSING = '.xl-ts-libs-missing'

function helperAt(root: string): XenSaveHelper | undefined {
  const stamp = path.join(root, LIBS_STAMP)
  const helper = path.join(root, XEN_LIB, 'bin/libxl-save-helper')
  if (!existsSync(stamp) || !existsSync(helper)) return undefined
  const lines = readFileSync(stamp, 'utf8').split('\n')
  const libdirs = lines.filter((l) => l.startsWith('libdir ')).map((l) => path.join(root, l.slice('libdir '.length)))
  const packages = lines.filter((l) => l.startsWith('package ')).map((l) => l.slice('package '.length))
  const libraryPath = libdirs.join(':')
  return {path: helper, libraryPath, env: {...process.env, LD_LIBRARY_PATH: libraryPath}, packages}
}

let locatedHelper: Promise<XenSaveHelper> | undefined

/**
 * Finds Xen's libxl-save-helper and its libraries (running scripts/fetch-xen-utils when they are
 * not unpacked yet); rejects with the reason when they cannot be had.
 */
export function locateXenSaveHelper(): Promise<XenSaveHelper> {
  locatedHelper ??= locateHelper()
  return locatedHelper
}

async function locateHelper(): Promise<XenSaveHelper> {
  const explicit = process.env.XEN_UTILS_ROOT
  const root = explicit ? path.resolve(explicit) : defaultRoot()
  const found = helperAt(root)
  if (found) return found
  if (explicit) {
    throw new Error(`XEN_UTILS_ROOT=${explicit} has no ${LIBS_STAMP} (libxl-save-helper's libraries); unset it to use the cache`)
  }
  const script = path.join(REPO_ROOT, 'scripts/fetch-xen-utils')
  const run = await execa('bash', [script], {reject: false, stdin: 'ignore', all: false})
  const printed = String(run.stdout).trim().split('\n').pop() ?? ''
  const after = printed ? helperAt(printed) : undefined
  if (after) return after
  const missing = path.join(printed || root, LIBS_MISSING)
  const reason = existsSync(missing) ? readFileSync(missing, 'utf8').trim() : String(run.stderr || run.shortMessage).trim()
  throw new Error(
    [
      `Xen's libxl-save-helper cannot run here: its shared libraries are not unpacked (exit ${run.exitCode ?? run.signal ?? '?'}).`,
      `Reason: ${reason}`,
      'Run `bash scripts/setup` (as root, with Debian apt access) or set XEN_UTILS_ROOT.',
    ].join('\n'),
  )
}
