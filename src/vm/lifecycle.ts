// The one owner of a VM's life. Every state change goes through setState, which checks the
// transition table (src/vm/states.ts); one lock per VM keeps two verbs from overlapping; the
// VMM's exits and events (QMP) are turned into states here; and at start-up `reconcile` makes
// the database and the world (VMM processes, files, taps, template builds) agree again, whatever
// step the previous daemon died in. The daemon's VM service only maps the wire to these verbs.
//
// Crash consistency: a VM's row is written (state `creating`) before anything outside the
// database exists for it, and everything made for it afterwards derives from its id (directory,
// tap, host-key alias, VMM argv), so a restarted daemon can undo an interrupted create without a
// journal of its own; each undo is idempotent. See docs/lifecycle.md.
import { chmod, rm, statfs } from 'node:fs/promises';
import type { ExitInfo, VmmEvent } from '../engine/index.ts';
import { isEngineError } from '../engine/index.ts';
import type { OperationRegistry, OperationTracker } from '../ops/operations.ts';
import { VmError } from './errors.ts';
import type { VmRow } from '../store/index.ts';
import type { CrashPoint } from './crash.ts';
import { runCreate, type CreateDeps, type CreateRequest } from './create.ts';
import { vmFiles } from './layout.ts';
import { BootStalledError, bootVmm, killVmm, waitReady } from './machine.ts';
import { findStateDirVmms } from './orphans.ts';
import { hostKeyAlias, unpinHostKey } from './ssh.ts';
import { canTransition, TransitionError, type VmState } from './states.ts';
import { templateRamFile } from './warm.ts';

export interface LifecycleDeps extends Omit<CreateDeps, 'setState'> {
  ops: OperationRegistry;
  /** TEST-ONLY crash points (src/vm/crash.ts); a no-op in normal use. */
  crash?: CrashPoint;
  /** Free bytes on the filesystem holding `path` (default: statfs). */
  freeBytes?: (path: string) => Promise<number>;
  /** How often a VM paused by a full host disk checks for room (default 5 s). */
  resumePollMs?: number;
  /** Room needed before such a VM is resumed (default 64 MiB). */
  resumeFreeBytes?: number;
  /** Who owns the VMMs (default this process's uid): reconcile stops only theirs. */
  uid?: number;
  /** Template directories of every image, for start-up reconciliation (src/vm/warm.ts). */
  templateDirs?: () => Promise<{ dir: string; finished: boolean }[]>;
}

export interface ReconcileReport {
  reattached: string[];
  /** Creates a crash interrupted, undone. */
  undone: string[];
  /** VMs now stopped (interrupted starts/stops, VMMs gone while the daemon was away). */
  stopped: string[];
  /** Deletes a crash interrupted, finished. */
  deleted: string[];
  /** VMM processes nobody owned, stopped (pids). */
  orphans: number[];
  /** Unfinished template builds removed. */
  templates: string[];
}

/** How long a stop waits for the guest to power off before killing the VMM. */
export const DEFAULT_STOP_TIMEOUT_MS = 30_000;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class VmLifecycle {
  private readonly d: LifecycleDeps;
  /** VM id → what it is busy with: one lifecycle verb per VM at a time. */
  private readonly busy = new Map<string, string>();
  /** VMs paused by a full host disk → the timer that resumes them once there is room. */
  private readonly resumeTimers = new Map<string, NodeJS.Timeout>();
  /** The last host I/O error each VM's VMM reported (why a following `stop` happened). */
  private readonly ioErrors = new Map<string, Extract<VmmEvent, { kind: 'block_io_error' }>>();

  constructor(deps: LifecycleDeps) {
    this.d = deps;
  }

  private crash(point: string): void {
    this.d.crash?.(point);
  }

  // ---- state ---------------------------------------------------------------------------------

  /**
   * The only writer of a VM's state. Refuses (TransitionError) what the table does not allow;
   * writing the state a VM already has only updates its reason. Entering `running` clears
   * last_error; entering `error` sets it to the reason.
   */
  setState(vm: VmRow | string, to: VmState, reason: string | null = null): VmRow {
    const id = typeof vm === 'string' ? vm : vm.id;
    const cur = this.d.store.vms.getById(id);
    if (!cur) throw new VmError('not_found', `vm ${id} is gone`);
    if (cur.state !== to && !canTransition(cur.state, to)) throw new TransitionError(cur.name, cur.state, to);
    const row = this.d.store.vms.writeState(id, {
      state: to,
      reason,
      ...(to === 'running' ? { lastError: null } : to === 'error' ? { lastError: reason } : {}),
    });
    if (cur.state !== to)
      this.d.log.info({ vm: row.name, from: cur.state, to, reason: reason ?? undefined }, 'vm state');
    return row;
  }

  /** What the VM is busy with now, if anything. */
  busyWith(id: string): string | undefined {
    return this.busy.get(id);
  }

  /** Run `fn` holding the VM's lock; a second verb on a busy VM is refused with `conflict`. */
  async exclusive<R>(vm: VmRow, what: string, fn: () => Promise<R>): Promise<R> {
    const cur = this.busy.get(vm.id);
    if (cur) throw new VmError('conflict', `vm "${vm.name}" is busy (${cur})`);
    this.busy.set(vm.id, what);
    try {
      return await fn();
    } finally {
      this.busy.delete(vm.id);
    }
  }

  // ---- create --------------------------------------------------------------------------------

  /**
   * Run a create in the background as operation `t` (its steps, undo and result). Resolves when
   * it ends; never rejects (the failure is the operation's).
   */
  create(t: OperationTracker, req: CreateRequest): Promise<void> {
    this.busy.set(req.draft.id, 'creating');
    return runCreate({ ...this.d, setState: (vm, to, reason) => this.setState(vm, to, reason) }, t, req)
      .then(() => t.succeed())
      .catch(async (err: unknown) => {
        this.d.log.warn({ err: message(err), vm: req.draft.name }, 'create failed; undoing');
        await t.rollback();
        t.fail(err);
      })
      .finally(() => this.busy.delete(req.draft.id));
  }

  // ---- start / stop / kill / resume ------------------------------------------------------------

  async start(vm: VmRow): Promise<VmRow> {
    return this.exclusive(vm, 'starting', () => this.startLocked(vm));
  }

  private async startLocked(vm0: VmRow): Promise<VmRow> {
    const vm = this.d.store.vms.getById(vm0.id) ?? vm0;
    if (this.d.runtime.isRunning(vm.id)) throw new VmError('conflict', `vm "${vm.name}" is already running`);
    if (vm.state !== 'stopped' && vm.state !== 'error')
      throw new VmError('conflict', `vm "${vm.name}" is ${vm.state}`);
    const image = this.d.store.images.getById(vm.imageId);
    const kernel = image ? this.d.store.kernels.getById(image.kernelId) : undefined;
    if (!image || !kernel) throw new VmError('conflict', `vm "${vm.name}": its image or kernel is gone`);
    let row = this.setState(vm, 'starting');
    try {
      this.crash('vm.start.network');
      // Bridged: make sure bridge, tap and NAT are there (a host reboot removes them).
      if (row.networkMode === 'bridge') await this.d.network.attach(row);
      // A start outlives its client: the caller's abort does not stop a boot half-way.
      for (let attempt = 1; ; attempt++) {
        this.crash('vm.start.boot');
        await bootVmm(this.d, row, kernel, 'vm.start');
        this.crash('vm.start.wait_ready');
        try {
          await waitReady(this.d, row, new AbortController().signal);
          break;
        } catch (err) {
          // A boot stuck with a silent console is retried once.
          if (!(err instanceof BootStalledError) || attempt > 1) throw err;
          this.d.log.warn(
            { vm: row.name, err: err.message },
            'boot stalled; killing the VMM and booting again',
          );
          await killVmm(this.d, row.id);
        }
      }
      row = this.d.store.vms.recordBoot(vm.id);
      return this.setState(row, 'running');
    } catch (err) {
      // A VMM that did not become ready answers as nobody: stop it, and say why.
      await killVmm(this.d, vm.id);
      this.setState(vm.id, 'error', `start failed: ${message(err)}`);
      throw err;
    }
  }

  async stop(
    vm: VmRow,
    timeoutMs = DEFAULT_STOP_TIMEOUT_MS,
  ): Promise<{ row: VmRow; clean: boolean; forced: boolean }> {
    return this.exclusive(vm, 'stopping', () => this.stopLocked(vm, timeoutMs));
  }

  private async stopLocked(
    vm: VmRow,
    timeoutMs: number,
  ): Promise<{ row: VmRow; clean: boolean; forced: boolean }> {
    const h = this.d.runtime.get(vm.id);
    if (!h) throw new VmError('not_running', `vm "${vm.name}" is not running`);
    const cur = this.d.store.vms.getById(vm.id) ?? vm;
    const paused = cur.state === 'paused';
    this.setState(vm.id, 'stopping');
    this.crash('vm.stop.shutdown');
    this.d.runtime.expectExit(vm.id);
    // A paused guest cannot answer the power button: it is killed.
    const res = paused ? 'timeout' : await h.shutdownGraceful(timeoutMs);
    let forced = false;
    if (res === 'timeout') {
      if (!paused)
        this.d.log.warn(
          { vm: vm.name, timeout_ms: timeoutMs },
          'guest did not power off in time; killing the VMM',
        );
      await h.kill('SIGKILL');
      forced = true;
    }
    await h.waitExit();
    this.cancelAutoResume(vm.id);
    const row = this.setState(
      vm.id,
      'stopped',
      forced ? (paused ? 'killed while paused' : 'killed after the stop timeout') : null,
    );
    return { row, clean: !forced, forced };
  }

  /** Signal the VMM (no lock: it must work while a stop hangs). */
  async kill(vm: VmRow, signal: NodeJS.Signals = 'SIGKILL'): Promise<VmRow> {
    const cur = this.d.store.vms.getById(vm.id) ?? vm;
    if (cur.state === 'creating')
      throw new VmError('conflict', `vm "${vm.name}" is being created; cancel the create instead`);
    const h = this.d.runtime.get(vm.id);
    if (!h) throw new VmError('not_running', `vm "${vm.name}" is not running`);
    this.d.runtime.expectExit(vm.id);
    await h.kill(signal);
    const exited = await Promise.race([
      h.waitExit().then(() => true),
      new Promise<boolean>((r) => setTimeout(r, 10_000, false)),
    ]);
    if (!exited) throw new VmError('failed', `vm "${vm.name}" did not exit after ${signal}`);
    this.cancelAutoResume(vm.id);
    const now = this.d.store.vms.getById(vm.id);
    if (!now) throw new VmError('not_found', `vm "${vm.name}" is gone`);
    return now.state === 'stopped' ? now : this.setState(now, 'stopped', `killed (${signal}) by request`);
  }

  /** Let a paused VM run again. */
  async resume(vm: VmRow): Promise<VmRow> {
    return this.exclusive(vm, 'resuming', async () => {
      const h = this.d.runtime.get(vm.id);
      if (!h) throw new VmError('not_running', `vm "${vm.name}" is not running`);
      const cur = this.d.store.vms.getById(vm.id) ?? vm;
      if (cur.state !== 'paused')
        throw new VmError('conflict', `vm "${vm.name}" is not paused (it is ${cur.state})`);
      await h.resume();
      return this.resumed(vm.id, 'resumed by request');
    });
  }

  private resumed(id: string, why: string): VmRow {
    this.cancelAutoResume(id);
    this.ioErrors.delete(id);
    const row = this.d.store.vms.getById(id);
    if (!row) throw new VmError('not_found', `vm ${id} is gone`);
    if (row.state !== 'paused') return row;
    this.d.log.info({ vm: row.name, why }, 'vm resumed');
    return this.setState(row, 'running');
  }

  // ---- delete --------------------------------------------------------------------------------

  async delete(vm: VmRow): Promise<void> {
    return this.exclusive(vm, 'deleting', () => this.deleteLocked(vm));
  }

  private async deleteLocked(vm: VmRow): Promise<void> {
    const cur = this.d.store.vms.getById(vm.id) ?? vm;
    if (cur.state === 'creating')
      throw new VmError('conflict', `vm "${vm.name}" is being created; cancel the create instead`);
    this.crash('vm.delete.stop');
    if (this.d.runtime.isRunning(vm.id)) await this.stopLocked(cur, 10_000);
    if (cur.state !== 'deleting') this.setState(vm.id, 'deleting');
    await this.removeEverything(cur, 'vm.delete');
  }

  /**
   * Everything a VM has outside the database, then its row: VMM, network, pinned host key,
   * directory. Idempotent: a crash anywhere in here is finished by the next delete or restart.
   */
  private async removeEverything(
    vm: VmRow,
    kind: 'vm.delete' | 'undo',
    opts: { scanOrphans?: boolean } = {},
  ): Promise<void> {
    // After a restart the VMM may run without a handle yet: find it through its directory.
    if (!this.d.runtime.isRunning(vm.id))
      await this.d.runtime.reattach(vm.id, vmFiles(this.d.stateDir, vm.id).dir).catch(() => null);
    await killVmm(this.d, vm.id);
    // (Start-up reconciliation scans /proc once for every VM at its end instead.)
    for (const p of opts.scanOrphans === false
      ? []
      : findStateDirVmms(this.d.stateDir, this.uid()).filter(
          (p) => p.dir === vmFiles(this.d.stateDir, vm.id).dir,
        )) {
      this.killPid(p.pid, `VMM of ${vm.name} (no handle)`);
    }
    this.crash(`${kind}.network`);
    if (vm.networkMode === 'bridge') {
      // Tap and NAT go with the VM; if the helper fails now, start-up reconciliation collects them.
      await this.d.network
        .detach(vm)
        .catch((err: unknown) =>
          this.d.log.warn({ vm: vm.name, err: message(err) }, 'could not remove the VM network'),
        );
    }
    this.crash(`${kind}.files`);
    await unpinHostKey(this.d.ssh, hostKeyAlias(vm.name));
    await rm(vmFiles(this.d.stateDir, vm.id).dir, { recursive: true, force: true });
    this.crash(`${kind}.record`);
    this.cancelAutoResume(vm.id);
    this.d.store.vms.delete(vm.id);
    if (vm.warmTemplate) this.d.warm?.vmDeleted?.(vm);
  }

  // ---- what the VMM reports ------------------------------------------------------------------

  /** The runtime saw a VMM exit. */
  onVmmExit(vmId: string, expected: boolean, info: ExitInfo): void {
    this.cancelAutoResume(vmId);
    this.ioErrors.delete(vmId);
    const row = this.d.store.vms.getById(vmId);
    if (!row || expected) return;
    const how =
      info.reason ??
      (info.signal
        ? `killed by signal ${info.signal}`
        : info.code !== null
          ? `exited with code ${info.code}`
          : 'exited');
    const lastExit = `${how} at ${new Date().toISOString()}`;
    this.d.store.vms.update(vmId, { lastExit });
    // A create or start in flight sees the exit itself and fails; here only settled states move.
    if (row.state === 'running' || row.state === 'paused') {
      this.d.log.warn({ vm: row.name, how }, 'VMM exited on its own; the VM is stopped');
      this.setState(row, 'stopped', `the VMM ${how}`);
    }
  }

  /** The runtime relayed a VMM event (QEMU: QMP STOP, RESUME, BLOCK_IO_ERROR, SHUTDOWN). */
  onVmmEvent(vmId: string, ev: VmmEvent): void {
    if (ev.kind === 'block_io_error') {
      this.ioErrors.set(vmId, ev);
      const row = this.d.store.vms.getById(vmId);
      this.d.log.warn(
        {
          vm: row?.name ?? vmId,
          device: ev.device,
          operation: ev.operation,
          action: ev.action,
          nospace: ev.nospace,
          reason: ev.reason,
        },
        'host I/O error in a VM disk',
      );
      return;
    }
    if (ev.kind === 'stop') void this.paused(vmId, ev.at);
    else if (ev.kind === 'resume') {
      const row = this.d.store.vms.getById(vmId);
      if (row?.state === 'paused') this.resumed(vmId, 'the VMM resumed');
    }
  }

  /** After a `stop` event: a running VM whose guest QEMU stopped is `paused`, with the reason. */
  private async paused(vmId: string, at: string): Promise<void> {
    const row = this.d.store.vms.getById(vmId);
    // Creates, starts and stops pause and resume guests themselves (restore, save): not news.
    if (row?.state !== 'running' || this.busy.has(vmId)) return;
    const h = this.d.runtime.get(vmId);
    const detail = await h?.statusDetail().catch(() => undefined);
    if (detail && detail.status !== 'paused') return;
    this.markPaused(row, detail?.reason, at);
  }

  private markPaused(row: VmRow, qemuReason: string | undefined, at: string): void {
    const io = this.ioErrors.get(row.id);
    let reason: string;
    if (qemuReason === 'io-error' || io) {
      const what = io ? `${io.device || 'disk'}: ${io.reason ?? 'I/O error'}` : 'I/O error';
      if (io?.nospace) {
        reason = `host disk full at ${at} (${what}); resumes by itself once space is free, or with: banger vm resume ${row.name}`;
        this.scheduleAutoResume(row);
      } else if (!io) {
        // Seen after a daemon restart: the error itself was reported to the previous daemon.
        reason = `host I/O error at ${at} (most likely a full disk); resumes by itself once the disk has room, or with: banger vm resume ${row.name}`;
        this.scheduleAutoResume(row);
      } else {
        reason = `host I/O error at ${at} (${what}); after fixing it: banger vm resume ${row.name}`;
      }
    } else {
      reason = `paused at ${at} (QEMU: ${qemuReason ?? 'stopped'}); resume with: banger vm resume ${row.name}`;
    }
    this.d.log.warn({ vm: row.name, reason }, 'vm paused by its VMM');
    this.setState(row, 'paused', reason);
  }

  private scheduleAutoResume(row: VmRow): void {
    if (this.resumeTimers.has(row.id)) return;
    const dir = vmFiles(this.d.stateDir, row.id).dir;
    const need = this.d.resumeFreeBytes ?? 64 * 1024 * 1024;
    const free =
      this.d.freeBytes ??
      (async (p: string) => {
        const s = await statfs(p);
        return s.bavail * s.bsize;
      });
    const timer = setInterval(() => {
      void (async () => {
        const bytes = await free(dir).catch(() => 0);
        if (bytes < need || this.busy.has(row.id)) return;
        const h = this.d.runtime.get(row.id);
        if (!h) return this.cancelAutoResume(row.id);
        this.d.log.info({ vm: row.name, free_bytes: bytes }, 'host disk has room again; resuming the VM');
        this.cancelAutoResume(row.id);
        this.ioErrors.delete(row.id);
        await h
          .resume()
          .catch((err: unknown) => this.d.log.warn({ vm: row.name, err: message(err) }, 'resume failed'));
        // RESUME (event) makes it running; a disk still full pauses it again (STOP + io error).
      })();
    }, this.d.resumePollMs ?? 5000);
    timer.unref();
    this.resumeTimers.set(row.id, timer);
  }

  private cancelAutoResume(id: string): void {
    const t = this.resumeTimers.get(id);
    if (t) clearInterval(t);
    this.resumeTimers.delete(id);
  }

  /** Stop timers (daemon shutdown). */
  close(): void {
    for (const id of [...this.resumeTimers.keys()]) this.cancelAutoResume(id);
  }

  // ---- start-up ------------------------------------------------------------------------------

  private uid(): number {
    return this.d.uid ?? process.getuid?.() ?? 0;
  }

  private killPid(pid: number, what: string): void {
    try {
      process.kill(pid, 'SIGKILL');
      this.d.log.warn({ pid, what }, 'stopped a VMM nobody owned');
    } catch (err) {
      this.d.log.warn({ pid, what, err: message(err) }, 'could not stop an unowned VMM');
    }
  }

  /**
   * Make the database and the world agree after a daemon (re)start: undo interrupted creates,
   * finish interrupted deletes, end interrupted starts and stops as `stopped`, reattach VMs that
   * kept running (and learn whether QEMU paused them meanwhile), remove unfinished template
   * builds with their VMMs, and stop every VMM of the state dir that nothing owns.
   */
  async reconcile(): Promise<ReconcileReport> {
    const r: ReconcileReport = {
      reattached: [],
      undone: [],
      stopped: [],
      deleted: [],
      orphans: [],
      templates: [],
    };
    for (const row of this.d.store.vms.list()) {
      try {
        await this.reconcileOne(row, r);
      } catch (err) {
        this.d.log.error({ vm: row.name, err: message(err) }, 'could not reconcile a VM');
        if (row.state === 'creating')
          this.setState(row, 'error', `an interrupted create could not be undone: ${message(err)}`);
      }
    }
    // Template builds: a directory without template.json is a build that never finished.
    for (const t of (await this.d.templateDirs?.().catch(() => [])) ?? []) {
      const h = await this.d.runtime.driver.reattach(t.dir, { logger: this.d.log }).catch(() => null);
      if (h) {
        await h.kill('SIGKILL').catch(() => undefined);
        await h.waitExit().catch(() => undefined);
        this.d.log.warn({ template: t.dir, pid: h.pid }, 'stopped the VMM of an interrupted template build');
      }
      if (t.finished) {
        // A crash while a clone started may have left the RAM file writable (holdRamOpenable).
        await chmod(templateRamFile(t.dir), 0o444).catch(() => undefined);
      } else {
        await rm(t.dir, { recursive: true, force: true });
        r.templates.push(t.dir);
        this.d.log.warn({ template: t.dir }, 'removed an interrupted template build');
      }
    }
    // Whatever VMM of this state dir still runs without a handle belongs to nobody now.
    const owned = new Set(this.d.runtime.ids().map((id) => this.d.runtime.get(id)?.pid));
    for (const p of findStateDirVmms(this.d.stateDir, this.uid())) {
      if (owned.has(p.pid)) continue;
      this.killPid(p.pid, p.dir);
      r.orphans.push(p.pid);
    }
    return r;
  }

  private async reconcileOne(row: VmRow, r: ReconcileReport): Promise<void> {
    if (row.state === 'creating') {
      // Its pipeline died with the daemon: undo all of it (the op is already marked failed).
      await this.removeEverything(row, 'undo', { scanOrphans: false });
      this.d.log.warn({ vm: row.name }, 'create interrupted by a daemon restart: undone');
      r.undone.push(row.name);
      return;
    }
    if (row.state === 'deleting') {
      await this.removeEverything(row, 'undo', { scanOrphans: false });
      this.d.log.warn({ vm: row.name }, 'delete interrupted by a daemon restart: finished');
      r.deleted.push(row.name);
      return;
    }
    const h = await this.d.runtime
      .reattach(row.id, vmFiles(this.d.stateDir, row.id).dir)
      .catch((err: unknown) => {
        if (!isEngineError(err)) throw err;
        return null;
      });
    if (row.state === 'starting' || row.state === 'stopping') {
      // Nobody can tell how far the boot or the shutdown got: the VM ends stopped.
      await killVmm(this.d, row.id);
      this.setState(
        row,
        'stopped',
        `${row.state === 'starting' ? 'start' : 'stop'} interrupted by a daemon restart`,
      );
      r.stopped.push(row.name);
      return;
    }
    if (h && (row.state === 'running' || row.state === 'paused')) {
      r.reattached.push(row.name);
      this.d.log.info({ vm: row.name, pid: h.pid }, 'reattached to running VM');
      const detail = await h.statusDetail().catch(() => undefined);
      if (detail?.status === 'paused') {
        if (row.state === 'running') this.markPaused(row, detail.reason, new Date().toISOString());
        else if (detail.reason === 'io-error') this.scheduleAutoResume(row);
      } else if (detail?.status === 'running' && row.state === 'paused') {
        this.setState(row, 'running');
      }
      return;
    }
    if (h) {
      // A VMM for a VM recorded stopped or error: nothing asked for it; it answers as nobody.
      await killVmm(this.d, row.id);
      this.d.log.warn({ vm: row.name, state: row.state }, 'stopped a VMM of a VM that is not running');
      return;
    }
    if (row.state === 'running' || row.state === 'paused') {
      this.d.store.vms.update(row.id, {
        lastExit: `exited while the daemon was away (found gone at ${new Date().toISOString()})`,
      });
      this.setState(row, 'stopped', 'the VMM exited while the daemon was away');
      r.stopped.push(row.name);
      this.d.log.info({ vm: row.name }, 'VM stopped while the daemon was away');
    }
  }
}
