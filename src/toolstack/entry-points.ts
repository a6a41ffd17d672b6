/**
 * The small programs the toolstack starts as `node <file>`, and which file to start for each.
 *
 * Each is tsc's output in dist/ (`built`) and, after `npm run build`, the same program bundled into
 * one file by esbuild (scripts/bundle.mjs) in dist/bundle/ (`bundle`): Node then reads one file
 * instead of resolving and loading a dozen to some forty modules, which halves the helper's start-up. The
 * bundle is made from tsc's output, so it is current when it is not older than that output (tsc
 * rewrites every file it emits); a missing or older bundle (tsc run alone, a failed bundling) is
 * never started: the built file is, so old code never runs. That holds in a checkout (src/ beside
 * dist/), where tsc may run alone. An installed package (`npm pack`, whose prepack builds both, and
 * no src/) has nothing that could make a bundle stale, and its times say nothing: npm writes every
 * file at install time, in no fixed order, so a bundle is often a few ms older than tsc's output of
 * its program. There a bundle that exists is started.
 *
 * This module is bundled into those programs too, where import.meta.url is the bundle's: the root is
 * two folders up from src/toolstack/, dist/toolstack/ and dist/bundle/ alike.
 */
import * as fs from 'node:fs'
import * as path from 'node:path'
import {fileURLToPath} from 'node:url'

/** Each program by the name of its bundle (dist/bundle/<name>.js): its module under dist/. */
export const ENTRY_POINTS = {
  /** The save/restore helper (helper/client.ts starts it unless $LIBXL_SAVE_HELPER names another). */
  'save-helper': 'toolstack/save-helper/main.js',
  /** A simulated domain (the sim's host starts one per domain). */
  'domain-main': 'toolstack/hypervisor/sim/domain-main.js',
  /** A migration side's guardian (xl/guardian.ts). */
  'guardian-main': 'toolstack/xl/guardian-main.js',
} as const

export type EntryPoint = keyof typeof ENTRY_POINTS

/** The package's root folder (the checkout, or the installed package). */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url))
const ROOT = PACKAGE_ROOT
/** Where scripts/bundle.mjs writes the bundles. */
export const BUNDLE_DIR = path.join(ROOT, 'dist', 'bundle')

/** Both files of a program: tsc's output and its bundle. */
export function entryPointFiles(name: EntryPoint): {readonly built: string; readonly bundle: string} {
  return {built: path.join(ROOT, 'dist', ENTRY_POINTS[name]), bundle: path.join(BUNDLE_DIR, `${name}.js`)}
}

function mtimeMs(file: string): number | undefined {
  try {
    return fs.statSync(file).mtimeMs
  } catch {
    return undefined
  }
}

/** `bundle` when it exists and is not older than `built` (or `built` is missing), else `built`. */
export function currentFile(built: string, bundle: string): string {
  const b = mtimeMs(bundle)
  if (b === undefined) return built
  const d = mtimeMs(built)
  return d === undefined || b >= d ? bundle : built
}

/** Whether this is a checkout, where tsc may rewrite dist/ without bundling; not an installed package. */
let checkout: boolean | undefined
function isCheckout(): boolean {
  checkout ??= fs.existsSync(path.join(ROOT, 'src'))
  return checkout
}

/**
 * The file to run with `node` for a program: its bundle when current (in a checkout) or when it
 * exists (in an installed package), else tsc's output.
 */
export function entryPointFile(name: EntryPoint): string {
  const {built, bundle} = entryPointFiles(name)
  if (isCheckout()) return currentFile(built, bundle)
  return mtimeMs(bundle) === undefined ? built : bundle
}

/**
 * The environment for one of these programs: `base` without what costs each start and none of them
 * uses. Node reads and parses every certificate `NODE_EXTRA_CA_CERTS` names when it starts, before
 * any code runs (measured on Debian's bundle, 144 certificates: a helper starts in 40 ms without it,
 * 78 ms with it); these programs never open a TLS connection, and a migration starts up to four of
 * them on the way to its first page.
 */
export function nodeProgramEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (base.NODE_EXTRA_CA_CERTS === undefined) return base
  const env = {...base}
  delete env.NODE_EXTRA_CA_CERTS
  return env
}
