// The VMM driver interface the daemon programs against. One launch spec describes a VM in
// VMM-neutral terms; each driver turns it into a LaunchPlan with a pure `prepare` (argv, API
// calls, files it will create), then `start`s the plan as a detached process that outlives the
// daemon. A restarted daemon calls `reattach(vmDir)` to find the VMs that kept running.
import type { EngineLogger } from './log.ts';
import type { QmpClient } from './qmp.ts';

export type DriverName = 'qemu' | 'firecracker';
export type Accel = 'kvm' | 'tcg';

export interface DiskSpec {
  /** Absolute path of the image (a qcow2 overlay or a raw ext4 file). */
  path: string;
  format: 'qcow2' | 'raw';
  readOnly?: boolean;
}

/**
 * How the guest's one NIC is backed.
 * - `user`: QEMU's user-mode stack, no root needed; guest port 22 is forwarded from
 *   127.0.0.1:sshHostPort. `restrict` cuts the guest off from the host and the outside (the
 *   forward still works, and so does `guestfwd`): egress policies other than `all` use it.
 * - `tap`: a tap device created beforehand by the root helper (bridged mode).
 * - `none`: no NIC at all.
 */
export type NetSpec =
  | {
      mode: 'user';
      sshHostPort: number;
      guestCidr?: string;
      mac?: string;
      restrict?: boolean;
      /** A guest address:port whose TCP connections QEMU hands to a host unix socket (egress proxy). */
      guestfwd?: GuestForward;
    }
  | { mode: 'tap'; tap: string; mac: string }
  | { mode: 'none' };

/**
 * User mode: each TCP connection the guest opens to `ip:port` (an address inside QEMU's user
 * network, answered by nothing else) is handed to `unixSocket` on the host by one process QEMU
 * starts for it (`guestfwd=…-cmd:`): `relay` (banger's build/egress-relay, which can also take
 * the connection to the upstream itself once the proxy allowed it) when given, else `socat`.
 * With `restrict=on` it is the only way out.
 */
export interface GuestForward {
  ip: string;
  port: number;
  unixSocket: string;
  /** Absolute path of the relay executable, run as `RELAY SOCKET`. */
  relay?: string;
}

/**
 * Guest RAM in a file (`memory-backend-file`) instead of anonymous memory: how warm templates
 * share their RAM with their clones (docs/snapshots.md).
 */
export interface GuestMemorySpec {
  /** Absolute path of the RAM file; QEMU creates it (sparse) when missing. */
  backendFile: string;
  /**
   * true: MAP_SHARED, the guest's writes land in the file (a template while it runs). false:
   * MAP_PRIVATE, reads share the file's page cache and writes stay private to this VMM (a clone).
   */
  share: boolean;
  /**
   * The RAM backend's QOM id (default MEMORY_BACKEND_ID, `mem`). A fork maps a RAM file made
   * from a VM that ran with anonymous RAM: its RAM block is then named after the machine's
   * default RAM id (`microvm.ram`), and a state carrying that RAM only loads into a block of
   * that name (src/vm/fork.ts).
   */
  backendId?: string;
  /**
   * Keep the free-page-reporting balloon, which VMs with anonymous RAM have: a fork of such a
   * VM restores its device state, so its device list must be the same (default: none with RAM
   * in a file; docs/snapshots.md (Fork) says why that is safe only with the guest's driver unbound).
   */
  balloon?: boolean;
}

export interface VmLaunchSpec {
  /** VM id: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}; becomes the QEMU guest name. */
  id: string;
  /** Absolute directory owned by this VM: sockets, pidfile, logs and handles.json live here. */
  vmDir: string;
  kernel: string;
  initrd?: string;
  /** Guest kernel command line; the builder adds what the machine needs (console, TSC, panic). */
  cmdline: string;
  vcpus: number;
  memoryMiB: number;
  disks: DiskSpec[];
  net: NetSpec;
  /** Guest serial console output (appended across restarts). */
  serialLog: string;
  /** Host end of the guest agent channel (virtio-serial port `banger.agent` under QEMU). */
  agentSocket?: string;
  /**
   * Host end of the QEMU guest agent channel (virtio-serial port `org.qemu.guest_agent.0`,
   * served by Debian's qemu-guest-agent): warm clones are re-identified through it.
   */
  qgaSocket?: string;
  accel: Accel;
  /** Guest RAM backed by a file (warm templates and their clones); default anonymous memory. */
  memory?: GuestMemorySpec;
  /** TCG translation cache size; bounds QEMU RSS. Default 128. Ignored under KVM. */
  tbSizeMiB?: number;
  /**
   * Restore from saved state (`-incoming URI`, e.g. `exec:cat /path/state`); VM starts paused.
   * `defer` waits for QMP `migrate-incoming` (src/engine/migration.ts loadState), so migration
   * capabilities such as x-ignore-shared can be set first.
   */
  incoming?: string;
  /**
   * Host TSC rate for `tsc_early_khz` (TCG on microvm). Pin it in the VM record when a VM's
   * saved state may be restored later; otherwise the driver reads the host's.
   */
  tscKhz?: number;
}

/** Files a plan creates or uses, all inside (or named by) the spec. */
export interface PlanFiles {
  vmDir: string;
  handles: string;
  stderrLog: string;
  serialLog: string;
  pidFile?: string;
  /** QEMU: the QMP socket. */
  qmpSocket?: string;
  /** Firecracker: the API socket. */
  apiSocket?: string;
  /** Firecracker: its own log (--log-path). */
  vmmLog?: string;
  agentSocket?: string;
  qgaSocket?: string;
}

/** One HTTP call to a VMM API (Firecracker). */
export interface VmmApiRequest {
  method: 'GET' | 'PUT' | 'PATCH';
  path: string;
  body?: Record<string, unknown>;
}

interface LaunchPlanBase {
  id: string;
  spec: VmLaunchSpec;
  binary: string;
  /** Arguments after the binary; spawned without a shell, so nothing needs quoting. */
  argv: string[];
  /** sha256 of binary + argv: equal hashes mean an identical VMM configuration. */
  argvHash: string;
  files: PlanFiles;
}

export interface QemuLaunchPlan extends LaunchPlanBase {
  driver: 'qemu';
  /** The guest kernel command line as passed with -append. */
  cmdline: string;
}

export interface FirecrackerLaunchPlan extends LaunchPlanBase {
  driver: 'firecracker';
  /** Configuration calls made after spawn, in order, before InstanceStart. */
  apiRequests: VmmApiRequest[];
}

export type LaunchPlan = QemuLaunchPlan | FirecrackerLaunchPlan;

export interface StartOptions {
  /** How long to wait for the control socket to answer. Default 15 s. */
  readyTimeoutMs?: number;
  /**
   * After the VMM answers, keep watching this long and fail if it exits (catches e.g. a
   * refused `-incoming` state). Default 0.
   */
  settleMs?: number;
  logger?: EngineLogger;
}

export type VmmStatus =
  | 'running'
  | 'paused'
  /** The guest shut down; the VMM process has not exited yet. */
  | 'shutdown'
  /** The process is alive but its control socket does not answer. */
  | 'unresponsive'
  | 'gone';

export interface ExitInfo {
  /** Exit code when the VMM was our child; null when it was reattached (only polled). */
  code: number | null;
  /**
   * The signal that ended it: from the wait status for a child; for a reattached VMM only when
   * its stderr log says so (QEMU: "terminating on signal 15 from pid N"), else null.
   */
  signal: NodeJS.Signals | null;
  /**
   * Why it ended, for people: "killed by signal SIGKILL", "terminated by signal 15 (SIGTERM)
   * from pid 812 (/usr/bin/kill)", "the guest powered off", "exited with code 1: <stderr line>",
   * or "unknown". Set in `exit` events (always) and statusDetail() of a gone VMM; waitExit()
   * gives the bare wait status without it.
   */
  reason?: string;
}

/** How a paused/stopped VMM is doing, with QEMU's own word for why (query-status `status`). */
export interface VmmStatusDetail {
  status: VmmStatus;
  /**
   * When `paused`: QEMU's RunState, e.g. 'io-error' (a host I/O error such as a full disk),
   * 'paused' (a QMP stop), 'postmigrate' (state saved), 'prelaunch', 'inmigrate'. When
   * `shutdown`: 'shutdown' or 'guest-panicked'. When `unresponsive`: the control error.
   * Firecracker: 'paused' or 'not-started'. Absent when running.
   */
  reason?: string;
}

/**
 * Something the VMM reported, as it happened. QEMU delivers all kinds (from QMP events);
 * Firecracker has no event stream and delivers only `exit`. `at` is an ISO time (QEMU's own
 * event timestamp when there is one).
 */
export type VmmEvent =
  /** The vCPUs stopped: a QMP `stop`, a migration (saveState), or an I/O error with action stop. */
  | { kind: 'stop'; at: string }
  /** The vCPUs run again (`cont`/resume(), or a restored VM started). */
  | { kind: 'resume'; at: string }
  /**
   * The guest or the host asked the machine to shut down; the process exit follows (`exit`).
   * reason: QEMU's ShutdownCause, e.g. 'guest-shutdown', 'guest-reset', 'guest-panic',
   * 'host-qmp-quit', 'host-signal'.
   */
  | { kind: 'shutdown'; at: string; guest: boolean; reason?: string }
  /**
   * A disk request failed on the host. With action 'stop' QEMU paused the guest (followed by a
   * `stop` event and status paused/io-error); resume() retries the request. nospace: the error
   * was ENOSPC (host disk full).
   */
  | {
      kind: 'block_io_error';
      at: string;
      /** The drive id (e.g. 'disk0'); '' when the drive has no name. */
      device: string;
      nodeName?: string;
      operation: 'read' | 'write';
      action: 'stop' | 'report' | 'ignore';
      nospace: boolean;
      /** The host error text, e.g. 'No space left on device'. */
      reason?: string;
    }
  /** The VMM process ended (expected or not); delivered once, and nothing after it. */
  | { kind: 'exit'; at: string; info: ExitInfo };

export type VmmEventListener = (event: VmmEvent) => void;

/** What a driver writes to `<vmDir>/handles.json`, the one thing reattach needs. */
export interface HandleRecord {
  version: 1;
  driver: DriverName;
  id: string;
  pid: number;
  /** Process start time (clock ticks since boot, /proc/PID/stat field 22): guards against pid reuse. */
  startTime: number;
  /** Host boot id: pids and start times mean nothing across a host reboot. */
  bootId: string;
  binary: string;
  argvHash: string;
  startedAt: string;
  files: PlanFiles;
  sshHostPort?: number;
}

export interface VmmHandle {
  readonly driver: DriverName;
  readonly id: string;
  readonly pid: number;
  readonly record: HandleRecord;
  /** QEMU only: the live QMP connection, if one is open. */
  readonly qmp?: QmpClient;
  status(): Promise<VmmStatus>;
  /** status() plus why a paused VM is paused (QEMU: 'io-error' = host I/O error, e.g. disk full). */
  statusDetail(): Promise<VmmStatusDetail>;
  /**
   * Let a paused guest run again (QEMU `cont`; after an io-error pause QEMU first retries the
   * failed request, and pauses again if it still fails). Throws EngineError('not_running') when
   * the VMM is gone, 'unsupported' where the VMM cannot.
   */
  resume(): Promise<void>;
  /**
   * Stop the guest and write its whole state (devices and RAM) to `path` (QEMU: migrate to a
   * file, src/engine/migration.ts). The guest stays stopped: the caller continues it (resume())
   * or ends the VMM. On failure the partial file is removed. Absent where the VMM cannot.
   */
  saveState?(path: string, opts?: StateFileOptions): Promise<{ durationMs: number }>;
  /** Abandon a save in flight (QEMU `migrate_cancel`); the guest stays stopped. Never throws. */
  cancelSave?(): Promise<void>;
  /**
   * Load a state saveState wrote into a VMM started with `incoming: 'defer'`; the guest is then
   * paused (resume() runs it).
   */
  loadState?(path: string, opts?: StateFileOptions): Promise<{ durationMs: number }>;
  /**
   * Make `overlay` (an existing qcow2 whose backing file is the current top of disk `index`)
   * the disk's new top while the VMM runs: writes go there from then on and the old top is only
   * read (QEMU: blockdev-snapshot-sync, mode existing). A fork freezes a running VM's disk so.
   */
  replaceDiskTop?(index: number, overlay: string): Promise<void>;
  /**
   * Subscribe to the VMM's events for as long as the handle lives (until release(), or the
   * `exit` event). Events that happened before subscribing are not replayed: read
   * statusDetail() after subscribing for the current state. A listener that throws is logged
   * and does not affect the others. Returns the unsubscribe function.
   */
  onEvent(listener: VmmEventListener): () => void;
  /**
   * Ask the guest to power off (ACPI power button / Ctrl-Alt-Del) and wait for the VMM to
   * exit. 'timeout' leaves the VM running so the caller can `kill` and report it.
   */
  shutdownGraceful(timeoutMs: number): Promise<'clean' | 'timeout'>;
  /** Signal the VMM (default SIGKILL) after checking it is still the process we started. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /**
   * Resolves when the VMM process is gone, with the wait status (code/signal; both null for a
   * reattached process); works for reattached (non-child) processes too. Why it ended, in
   * words, comes with the `exit` event.
   */
  waitExit(): Promise<ExitInfo>;
  /**
   * Drop control connections, event listeners and watchers; the VM keeps running (daemon
   * shutdown). Nothing of the handle keeps the process alive afterwards.
   */
  release(): Promise<void>;
}

/** How a state file is written or read. */
export interface StateFileOptions {
  /**
   * Guest RAM is a file that holds it (spec.memory): skip it (x-ignore-shared), so the state
   * file holds only the device state; the loading VMM maps the same file.
   */
  ignoreShared?: boolean;
}

export interface ReattachOptions {
  /** How long QMP / the API gets to answer. Default 3 s. */
  timeoutMs?: number;
  logger?: EngineLogger;
}

export interface VmmDriver {
  readonly name: DriverName;
  /** Pure: validates the spec and builds the plan. Throws EngineError('invalid_spec' | 'unsupported'). */
  prepare(spec: VmLaunchSpec): LaunchPlan;
  start(plan: LaunchPlan, opts?: StartOptions): Promise<VmmHandle>;
  /** A handle for the VM still running from `vmDir`, or null if none is. */
  reattach(vmDir: string, opts?: ReattachOptions): Promise<VmmHandle | null>;
}
