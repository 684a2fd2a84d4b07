// The idle tracker (docs/snapshots.md "Idle pause"): pauses to disk (the vm.pause path) a
// running VM that nobody used for its idle_pause_after ([vm_defaults] or the VM's own).
//
// Used means: an RPC that works in or on the VM (vm.ssh, which vm ssh/exec/run call first;
// vm.touch, which vm ssh/exec heartbeat with while a session is open; start, resume, workspace
// prepare/export), the VM being busy (its lifecycle lock held: creating, forking, a workspace
// export), or an SSH session seen from the host side (src/daemon/idle-ssh.ts). Reading about a
// VM (list, show, logs, stats) is not use: `vm list` must not keep every VM awake.
//
// The last use lives in memory and reaches the database (vms.last_used_at) at least every
// PERSIST_EVERY_MS, so a daemon restart neither resets the timer nor pauses a VM used just
// before it. A VM the timer pauses is marked (vms.idle_paused_at) before the pause begins:
// a crash during the pause is finished or undone by the pause path's own reconcile, and the
// mark, kept or cleared on the next tick, says which pause it was.
import type { Logger } from '../log/logger.ts';
import type { VmIdleFacts, VmRow } from '../store/vms.ts';
import { idleDecision, lastUseOf, type IdleDecision } from '../vm/idle.ts';
import { hasSshSession, readTcpTable, type SshEndpoint, type TcpConn } from './idle-ssh.ts';

/** How often the tracker looks (and reads the TCP table, when some VM has idle pause on). */
export const DEFAULT_POLL_MS = 5000;
/** At most this much use is lost when the daemon dies (the last use is written in steps). */
export const PERSIST_EVERY_MS = 30_000;

export interface IdleTrackerDeps {
  vms: {
    list(): VmRow[];
    /** Ids, own settings and marks only (cheap): what a tick with idle pause off everywhere reads. */
    listIdleFacts(): VmIdleFacts[];
    getById(id: string): VmRow | undefined;
    touch(id: string, at: Date): boolean;
    setIdlePaused(id: string, at: Date | null): boolean;
  };
  /** [vm_defaults] idle_pause_after in ms (0: off). */
  defaultMs: number;
  /** The lifecycle lock's holder, if any. */
  busyWith(id: string): string | undefined;
  /** The VM's VMM handle is there. */
  isRunning(id: string): boolean;
  /** Where the VM's SSH is reached from this namespace (undefined: not known). */
  sshEndpoint(vm: VmRow): SshEndpoint | undefined;
  /** The vm.pause path (src/vm/lifecycle.ts pause). */
  pause(vm: VmRow): Promise<unknown>;
  log: Logger;
  now?: () => number;
  /** The TCP table (default /proc/net/tcp); tests give their own. */
  tcpTable?: () => Promise<TcpConn[]>;
  pollMs?: number;
}

export class IdleTracker {
  private readonly d: IdleTrackerDeps;
  private readonly now: () => number;
  /** VM id → last use known in memory (epoch ms). */
  private readonly lastUse = new Map<string, number>();
  /** VM id → what the database holds for it (epoch ms), to write in steps. */
  private readonly persisted = new Map<string, number>();
  /** VM id → a pause this tracker is running. */
  private readonly pausing = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<unknown> | undefined;

  constructor(deps: IdleTrackerDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
  }

  /** The effective idle_pause_after of a VM in ms (0: off). */
  afterMs(vm: Pick<VmRow, 'idlePauseAfterMs'>): number {
    return vm.idlePauseAfterMs ?? this.d.defaultMs;
  }

  /** Whether any VM can be paused by idleness (the daemon's default or its own setting). */
  private anyOn(vms: Pick<VmRow, 'idlePauseAfterMs'>[]): boolean {
    return vms.some((v) => this.afterMs(v) > 0);
  }

  /** Forget the VMs that are gone (deleted): nothing else drops them from memory. */
  private prune(vms: Pick<VmRow, 'id'>[]): void {
    const ids = new Set(vms.map((v) => v.id));
    for (const m of [this.lastUse, this.persisted]) for (const id of m.keys()) if (!ids.has(id)) m.delete(id);
  }

  /** The last use of a VM: memory or its record, whichever is newer. */
  lastUsed(vm: VmRow): number {
    return Math.max(this.lastUse.get(vm.id) ?? 0, lastUseOf(vm));
  }

  /**
   * Mark a VM used now. `persist` writes the database at once (RPCs); otherwise only when the
   * stored value is PERSIST_EVERY_MS old (sessions seen on each tick). RPC uses are not written in
   * steps: the vm ssh/exec heartbeat (vm.touch) stands for a session the host side may not see,
   * and after a daemon restart a stored value up to PERSIST_EVERY_MS old could pause a VM with a
   * window under it (10 s at least) before the next heartbeat. It comes every third of the
   * window, at most once a minute, so the writes it costs are few anyway.
   */
  touch(id: string, persist = true): void {
    const now = this.now();
    this.lastUse.set(id, now);
    const stored = this.persisted.get(id) ?? 0;
    if (persist || now - stored >= PERSIST_EVERY_MS) {
      if (this.d.vms.touch(id, new Date(now))) this.persisted.set(id, now);
    }
  }

  /** A pause of this VM the tracker is running (vm.ssh waits for it, then resumes). */
  pauseInFlight(id: string): Promise<void> | undefined {
    return this.pausing.get(id);
  }

  /** Whether the VM is paused (to disk) by the idle timer. */
  static idlePaused(vm: VmRow): boolean {
    return vm.state === 'paused' && !!vm.savedState && !!vm.idlePausedAt;
  }

  start(): void {
    if (this.timer) return;
    const every = this.d.pollMs ?? DEFAULT_POLL_MS;
    this.timer = setInterval(() => {
      // One tick at a time: a slow pause does not stack ticks.
      if (!this.ticking) this.ticking = this.tick().finally(() => (this.ticking = undefined));
    }, every);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look at every VM; returns the decisions (for tests and the debug log). */
  async tick(): Promise<Map<string, IdleDecision>> {
    const out = new Map<string, IdleDecision>();
    if (this.d.defaultMs <= 0) {
      // Off by default: when no VM has its own setting or a mark to clear, the cheap look is all
      // this tick reads (every 5 s, whether or not anyone uses idle pause).
      const facts = this.d.vms.listIdleFacts();
      if (!this.anyOn(facts) && !facts.some((v) => v.idlePausedAt)) {
        this.prune(facts);
        return out;
      }
    }
    const vms = this.d.vms.list();
    this.prune(vms);
    this.clearStaleMarks(vms);
    if (!this.anyOn(vms)) return out;
    const running = new Set(
      vms.filter((v) => v.state === 'running' && this.d.isRunning(v.id)).map((v) => v.id),
    );
    // The table is read only when a VM it could keep awake runs.
    const table = running.size > 0 ? await (this.d.tcpTable ?? (() => readTcpTable()))() : ([] as TcpConn[]);
    for (const vm of vms) {
      const ep = this.d.sshEndpoint(vm);
      const dec = idleDecision({
        running: running.has(vm.id),
        busy: this.d.busyWith(vm.id),
        session: ep !== undefined && hasSshSession(table, ep),
        pausing: this.pausing.has(vm.id),
        afterMs: this.afterMs(vm),
        lastUsedMs: this.lastUsed(vm),
        now: this.now(),
      });
      out.set(vm.name, dec);
      if (dec.action === 'used') this.touch(vm.id, false);
      else if (dec.action === 'pause') this.startPause(vm, dec.idleMs);
    }
    return out;
  }

  /**
   * A mark on a VM that is not paused any more (stopped, a pause that failed or that a crash
   * undid; a resume by request clears it itself) is cleared, unless this tracker is pausing it.
   */
  private clearStaleMarks(vms: VmRow[]): void {
    for (const vm of vms) {
      if (!vm.idlePausedAt || this.pausing.has(vm.id)) continue;
      // (Resuming: a resume that fails before the guest runs leaves it paused by the timer still.)
      if (vm.state === 'paused' || vm.state === 'pausing' || vm.state === 'resuming') continue;
      this.d.vms.setIdlePaused(vm.id, null);
    }
  }

  private startPause(vm: VmRow, idleMs: number): void {
    // Marked first: a crash from here on leaves a mark that the pause path's reconcile makes
    // true (the save committed: paused) or stale (the guest continued: cleared next tick).
    this.d.vms.setIdlePaused(vm.id, new Date(this.now()));
    const p = this.d
      .pause(vm)
      .then(() => {
        this.d.log.info({ vm: vm.name, idle_ms: idleMs, after_ms: this.afterMs(vm) }, 'vm paused: idle');
      })
      .catch((err: unknown) => {
        this.d.vms.setIdlePaused(vm.id, null);
        // Not again at once: a pause that failed (busy, a full disk) waits another window.
        this.touch(vm.id, false);
        this.d.log.warn(
          { vm: vm.name, err: err instanceof Error ? err.message : String(err) },
          'idle pause failed; the VM runs on',
        );
      })
      .finally(() => this.pausing.delete(vm.id));
    this.pausing.set(vm.id, p);
  }

  /** Wait for the pauses in flight (tests, shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.pausing.values()]);
  }
}
