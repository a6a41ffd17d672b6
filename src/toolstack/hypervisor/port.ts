/**
 * The Hypervisor port: everything the toolstack and the save/restore engines need from a Xen host,
 * shaped after what libxl and libxc ask of Xen (domctls, foreign memory, xenstore). The device model
 * (QEMU) is not here: libxl starts and drives it itself (libxl/device-model.ts). Two
 * back ends implement it: `sim` (a simulated host in a state folder) and, later, `xen`.
 */
import type {DirtyBitmap} from './dirty-bitmap.js'

export type GuestType = 'hvm' | 'pv' | 'pvh'

/** The guest workload of a simulated domain (SimulationExtras.loadWorkload). */
export interface WorkloadSpec {
  /** Pages written per second while the guest runs. */
  dirtyRate: number
  /** Size of the region the writes fall in, MiB (at most the guest's memory). */
  workingSetMiB: number
  /** PRNG seed: two guests with one seed write the same pages in the same order. */
  seed: number
  /** Probability per step of a host-local random event that makes copies diverge (0 = deterministic). */
  nondeterminism: number
  /** Network frames emitted per second. */
  packetRate: number
  /** Disk writes per second, to the guest's first COLO disk through its device model (default 0). */
  diskRate?: number
}

/** What it takes to make a domain (XEN_DOMCTL_createdomain and the build's memory and vCPUs). */
export interface DomainSpec {
  /** The domain's handle (a uuid); Xen makes none up, libxl does when the config has none. */
  uuid?: string
  type: GuestType
  maxMemKb: number
  vcpus: number
}

export interface DomainState {
  running: boolean
  blocked: boolean
  paused: boolean
  shutdown: boolean
  /** libxl_shutdown_reason when shut down: 0 poweroff, 1 reboot, 2 suspend, 3 crash, 4 watchdog, 5 soft_reset. */
  shutdownReason?: number
  dying: boolean
}

export interface DomainInfo {
  domid: number
  uuid: string
  type: GuestType
  maxMemKb: number
  currentMemKb: number
  vcpus: number
  /** Guest pages (the p2m size). */
  pages: number
  state: DomainState
  cpuTimeNs: number
}

export interface CreateOptions {
  /** Leave the domain paused (xl create -p). */
  paused: boolean
  /** Build an empty domain whose memory and state a restore fills in; it is created paused. */
  forRestore?: boolean
}

/** A domain whose build is under way: its domid, and when it is built. */
export interface EarlyDomain {
  readonly domid: number
  readonly built: Promise<void>
}

export interface TscInfo {
  mode: number
  khz: number
  nsec: bigint
  incarnation: number
}

export interface HvmParam {
  index: number
  value: bigint
}

export interface CpuidLeaf {
  leaf: number
  subleaf: number
  a: number
  b: number
  c: number
  d: number
}

export interface MsrEntry {
  index: number
  value: bigint
}

export interface CpuPolicy {
  cpuid: CpuidLeaf[]
  msrs: MsrEntry[]
}

/** Foreign access to a domain's memory, as libxc maps guest frames. */
export interface GuestMemory {
  readonly pages: number
  /** Reads the pages into `into`, one 4096-byte page after another in `pfns` order. */
  readPages(pfns: readonly number[], into: Buffer): Promise<void>
  /** Writes the pages from `data`, one 4096-byte page after another in `pfns` order. */
  writePages(pfns: readonly number[], data: Buffer): Promise<void>
  /**
   * Memory that is a file (the simulated host's): page `pfn` is the 4096 bytes at offset
   * pfn * 4096 of this fd, open for reading and writing until close. A save or restore then moves
   * pages fd to fd in the kernel. Undefined where guest memory is only mapped (Xen's foreign maps).
   */
  readonly pagesFd?: number
  close(): Promise<void>
}

/** Log-dirty mode (XEN_DOMCTL_SHADOW_OP_*). */
export interface LogDirty {
  enable(): Promise<void>
  disable(): Promise<void>
  /** The pages written since the last clean, without clearing (PEEK). */
  peek(): Promise<DirtyBitmap>
  /** The pages written since the last clean, clearing them atomically (CLEAN): no write is lost between two cleans. */
  clean(): Promise<DirtyBitmap>
}

export interface Subscription {
  close(): Promise<void>
}

/** xenstore's limits (xenstore_lib.h, xs_wire.h): a path of at most XENSTORE_ABS_PATH_MAX bytes, a value of at most XENSTORE_PAYLOAD_MAX. */
export const STORE_PATH_MAX = 3072
export const STORE_VALUE_MAX = 4096

/** What a xenstore transaction offers; paths are absolute ('/local/domain/3/name'). */
export interface StoreAccess {
  /** The node's value, or undefined when there is no such node. */
  read(path: string): Promise<string | undefined>
  /** The names of the node's children ([] when it has none or is absent). */
  directory(path: string): Promise<string[]>
  /** Sets the value, making missing parents (with empty values) as xenstore does. */
  write(path: string, value: string): Promise<void>
  /** Removes the node and everything below it (nothing when absent). */
  remove(path: string): Promise<void>
}

/**
 * xenstore: the host's tree of small string values that every toolstack process, device model and
 * guest shares (libxenstore). Outside a transaction each call stands alone.
 */
export interface Store extends StoreAccess {
  /**
   * Runs `body` as one transaction: it sees one state of the tree and its writes land together or
   * not at all. As with xenstore's EAGAIN, `body` may run again when another writer got in first,
   * so it must have no effect outside the transaction.
   */
  transaction<T>(body: (tx: StoreAccess) => Promise<T>): Promise<T>
  /** Calls `onChange` once at the start and whenever the node or anything below it changes (a xenstore watch). */
  watch(path: string, onChange: () => void): Promise<Subscription>
}

/** The host's folders for the toolstack's own files (Xen's XEN_LIB_DIR and XEN_RUN_DIR). */
export interface HostPaths {
  /** Persistent files such as libxl's userdata (Xen: /var/lib/xen). */
  readonly lib: string
  /** Sockets and pid files such as the device model's QMP socket (Xen: /var/run/xen). */
  readonly run: string
  /** Logs such as the device model's qemu-dm-<name>.log (Xen: /var/log/xen). */
  readonly log: string
}

export interface IntegrityProblem {
  pfn: number
  reason: string
}

/** The sim guest's pages checked against what its workload can have written (SimulationExtras.verifyIntegrity). */
export interface IntegrityReport {
  domid: number
  pages: number
  /** True when every page is consistent. */
  ok: boolean
  /** How many pages are not. */
  badCount: number
  /** The first bad pages (at most 16), ascending. */
  bad: IntegrityProblem[]
  /** The highest page generation seen (the last step that wrote a page still in memory). */
  maxGeneration: number
  /** The guest's step count from its vCPU context (pages may not be newer), if it has one. */
  step?: number
}

/**
 * What only the simulated host has: its guest's workload and counters, the frames it sends, and
 * the checks tests and `xl-ts sim` make of its memory and disk. Undefined on real Xen: nothing
 * needs it to migrate, checkpoint or fail over.
 */
export interface SimulationExtras {
  /** sha256 (hex) of the guest's memory followed by its vCPU context, the guest held still meanwhile. */
  checksum(domid: number): Promise<string>
  /** sha256 (hex) of the guest's memory alone (a Remus backup's vCPU state waits for the failover). */
  memoryChecksum(domid: number): Promise<string>
  /** Checks every page: consistent with its pfn and generation, none newer than the vCPU context's step. */
  verifyIntegrity(domid: number): Promise<IntegrityReport>
  /** The bytes of one guest disk block: each disk write fills one block with one byte. */
  readonly diskBlockBytes: number
  /** The image the guest's disk writes land in (its first COLO disk's target), once it has a device model. */
  diskImage(domid: number): Promise<string | undefined>
  /**
   * Checks the guest's disk as its device model shows it (a COLO secondary: through its active and
   * hidden disks): block i must hold byte patterns[i] all over (256: not checked).
   */
  verifyDiskView(domid: number, patterns: readonly number[]): Promise<{blocks: number; mismatches: number[]}>
  /** The guest's step and the frames it has sent so far. */
  guestCounters(domid: number): Promise<{readonly step: number; readonly frames: number}>
  /**
   * Loads the guest's workload into a domain built and not yet run (the sim's stand-in for the
   * kernel it boots): how fast it writes pages, sends frames and writes its disk.
   */
  loadWorkload(domid: number, workload: WorkloadSpec): Promise<void>
  /** A frame the sim guest sent: the step that sent it and its sequence number (undefined: any other frame). */
  frameInfo(frame: Buffer): {readonly step: number; readonly seq: number} | undefined
}

export interface Hypervisor {
  readonly backend: 'sim' | 'xen'
  /** The simulated host's extras (undefined on real Xen). */
  readonly simulation?: SimulationExtras
  /**
   * What a toolstack program started from this one (our save helper, a guardian) needs in its
   * environment to reach the same host.
   */
  connectionEnv(): Record<string, string>
  /** The host's xenstore. */
  readonly store: Store
  /** Where the toolstack keeps its files on this host. */
  readonly paths: HostPaths

  list(): Promise<DomainInfo[]>
  info(domid: number): Promise<DomainInfo>
  create(spec: DomainSpec, opts: CreateOptions): Promise<number>
  /**
   * Optional: `create`, resolved as soon as the domid is allocated; `built` settles when the domain
   * is built, as `create` would resolve or reject (a domain that fails to build is gone, as after a
   * failed create; `built` never rejects unhandled). Calls on the domain meanwhile (`info` first)
   * wait for it to be built, also from another process: what needs only the domid, the restore
   * helper above all, starts while the domain does.
   */
  createEarly?(spec: DomainSpec, opts: CreateOptions): Promise<EarlyDomain>
  destroy(domid: number): Promise<void>
  pause(domid: number): Promise<void>
  unpause(domid: number): Promise<void>
  /** Asks the guest to shut down; it goes away once it has. */
  shutdown(domid: number): Promise<void>

  /** Suspends the guest for save: it stops, its state is frozen (shutdown reason suspend). */
  suspend(domid: number): Promise<void>
  /** Resumes a suspended guest; `cancel` = suspend-cancel (the guest carries on where it was). */
  resume(domid: number, opts: {cancel: boolean}): Promise<void>

  logDirty(domid: number): LogDirty
  openMemory(domid: number): Promise<GuestMemory>

  getVcpuContext(domid: number): Promise<Buffer>
  setVcpuContext(domid: number, context: Buffer): Promise<void>
  getHvmParams(domid: number): Promise<HvmParam[]>
  setHvmParams(domid: number, params: readonly HvmParam[]): Promise<void>
  getTscInfo(domid: number): Promise<TscInfo>
  setTscInfo(domid: number, tsc: TscInfo): Promise<void>
  getCpuPolicy(domid: number): Promise<CpuPolicy>
  setCpuPolicy(domid: number, policy: CpuPolicy): Promise<void>

  /** Releases the back end's handles (cached connections); domains are not affected. */
  close?(): void | Promise<void>
}
