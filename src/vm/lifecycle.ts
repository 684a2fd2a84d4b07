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
import { existsSync } from 'node:fs';
import { chmod, mkdir, rm, statfs } from 'node:fs/promises';
import type { ExitInfo, VmLaunchSpec, VmmEvent, VmmHandle } from '../engine/index.ts';
import { isEngineError } from '../engine/index.ts';
import { INCOMING_DEFER } from '../engine/migration.ts';
import type { OperationRegistry, OperationTracker } from '../ops/operations.ts';
import { VmError } from './errors.ts';
import type { EgressHooks } from '../egress/types.ts';
import type { VmRow } from '../store/index.ts';
import type { CrashPoint } from './crash.ts';
import { runCreate, type CreateDeps, type CreateRequest } from './create.ts';
import { vmFiles } from './layout.ts';
import {
  attachEgress,
  BootStalledError,
  bootVmm,
  killVmm,
  launchSpec,
  markSerial,
  waitReady,
} from './machine.ts';
import { DEFAULT_EGRESS } from '../egress/rules.ts';
import { userNetEgress } from '../egress/types.ts';
import { findStateDirVmms } from './orphans.ts';
import {
  copyRamFile,
  fillRamFile,
  findRamFile,
  guestRamDir,
  prepareGuestRamDir,
  sweepGuestRamDir,
  usesGuestRamDir,
} from './guest-ram.ts';
import { MEMORY_BACKEND_ID } from '../engine/qemu-argv.ts';
import { hostKeyAlias, unpinHostKey } from './ssh.ts';
import {
  commitSaved,
  consumeSaved,
  correctGuestClock,
  discardSaved,
  readResumedSpec,
  readSaved,
  removePartial,
  saveFormat,
  savedDiskBytes,
  savedPaths,
  syncRamTmp,
  syncStateTmp,
  writeResumedSpec,
  type SavedManifest,
} from './pause.ts';
import { releasePort, reservePort } from './ports.ts';
import { canTransition, TransitionError, type VmState } from './states.ts';
import { cloneLaunchSpec, holdRamOpenable, listTemplates, templateRamFile } from './warm.ts';
import { reidentifyClone } from './create.ts';
import {
  hostForkHooks,
  readJournal,
  reconcileFork,
  runFork,
  sweepForks,
  type ForkDeps,
  type ForkHooks,
  type ForkResult,
} from './fork.ts';

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
  /** Template directories of every image, for start-up reconciliation (src/vm/warm.ts). */
  templateDirs?: () => Promise<{ dir: string; finished: boolean }[]>;
  /**
   * After a resume from disk continued the guest: correct its clock and wait until it answers
   * SSH (default: correctGuestClock, then waitReady of a restored VM). Tests replace it.
   */
  resumedReady?: (vm: VmRow) => Promise<void>;
  /** Set a resumed guest's clock to now; returns the skew in ms (default correctGuestClock). */
  correctClock?: (vm: VmRow) => Promise<number>;
  /** Egress enforcement of user-mode VMs and the event ring (src/egress/types.ts); none in tests. */
  egress?: EgressHooks;
  /** What a fork does in guests and on disk (src/vm/fork.ts); tests replace parts of it. */
  forkHooks?: Partial<ForkHooks>;
  /** How a pause and a resume reach the guest's RAM file (PauseRamOps); tests replace parts of it. */
  pauseRam?: Partial<PauseRamOps>;
}

/** The RAM-file side of pause and resume (src/vm/pause.ts, format `ram-file`). */
export interface PauseRamOps {
  /** The RAM file of a VMM running `spec` (a path that opens it), or undefined: not in a file. */
  find(h: VmmHandle, spec: VmLaunchSpec): Promise<string | undefined>;
  /** Copy a RAM file sparse to a new file; returns the data bytes copied. */
  copy(src: string, dst: string): Promise<number>;
  /** Copy a saved RAM file of `bytes` into a waiting VMM's RAM file (guest-ram.ts fillRamFile). */
  fill(src: string, dst: string, bytes: number): Promise<number>;
  /** The user's RAM directory when it has room for a VM of this much RAM (prepareGuestRamDir). */
  room(memoryMib: number): Promise<string | undefined>;
}

export interface ReconcileReport {
  reattached: string[];
  /** Creates a crash interrupted, undone. */
  undone: string[];
  /** VMs now stopped (interrupted starts/stops, VMMs gone while the daemon was away). */
  stopped: string[];
  /** Deletes a crash interrupted, finished. */
  deleted: string[];
  /** VMs paused to disk (their saved state checked), including interrupted pauses finished. */
  saved: string[];
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

  // ---- fork (src/vm/fork.ts) -------------------------------------------------------------------

  /**
   * Fork a running VM into new VMs named `names`, as operation `t`: the source holds its lock
   * throughout (`running` → `pausing` → `running`), the children are `creating` until they answer
   * SSH as themselves. A failure or cancel undoes the children and continues the source. Throws
   * at once (conflict) when the source is busy or not running.
   */
  async fork(t: OperationTracker, source: VmRow, names: string[]): Promise<ForkResult> {
    const cur = this.d.store.vms.getById(source.id) ?? source;
    const h = this.d.runtime.get(cur.id);
    if (cur.state !== 'running' || !h)
      throw new VmError(
        'conflict',
        cur.state === 'paused' && !h
          ? `vm "${cur.name}" is paused to disk; only a running VM can be forked (resume it first: banger vm resume ${cur.name})`
          : `vm "${cur.name}" is ${cur.state}; only a running VM can be forked${cur.state === 'stopped' || cur.state === 'error' ? ` (start it first: banger vm start ${cur.name})` : ''}`,
      );
    const busy = this.busy.get(cur.id);
    if (busy) throw new VmError('conflict', `vm "${cur.name}" is busy (${busy})`);
    return this.exclusive(cur, 'forking', () => runFork(this.forkDeps(), t, { source: cur, names }));
  }

  private forkDeps(): ForkDeps {
    const host = hostForkHooks({
      ...this.d,
      reidentify: (vm, seeded, signal) => reidentifyClone(this.d, vm, seeded, signal),
    });
    return {
      ...this.d,
      hooks: { ...host, ...this.d.forkHooks },
      setState: (vm, to, reason) => this.setState(vm, to, reason ?? null),
      runningSpec: (vm, h) => this.runningSpec(vm, h),
      removeVm: (vm) => this.removeEverything(vm, 'undo'),
      crash: (p) => this.crash(p),
      markBusy: (ids, on) => {
        for (const id of ids) {
          if (on) this.busy.set(id, 'creating');
          else this.busy.delete(id);
        }
      },
    };
  }

  // ---- start / stop / kill / resume ------------------------------------------------------------

  async start(vm: VmRow): Promise<VmRow> {
    return this.exclusive(vm, 'starting', () => this.startLocked(vm));
  }

  private async startLocked(vm0: VmRow): Promise<VmRow> {
    const vm = this.d.store.vms.getById(vm0.id) ?? vm0;
    if (this.d.runtime.isRunning(vm.id)) throw new VmError('conflict', `vm "${vm.name}" is already running`);
    // A VM paused to disk starts where it was paused (docs/lifecycle.md), not from a cold boot.
    if (vm.state === 'paused') return this.resumeSaved(vm);
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
    const cur = this.d.store.vms.getById(vm.id) ?? vm;
    if (!h && cur.state === 'paused') return this.discardLocked(cur);
    if (!h) throw new VmError('not_running', `vm "${vm.name}" is not running`);
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
    if (!h)
      throw new VmError(
        'not_running',
        cur.state === 'paused'
          ? `vm "${vm.name}" is paused to disk (no VMM runs); banger vm stop ${vm.name} discards its saved state`
          : `vm "${vm.name}" is not running`,
      );
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

  /** Let a paused VM run again: continue its guest, or restore it from disk (vm pause). */
  async resume(vm: VmRow): Promise<VmRow> {
    return this.exclusive(vm, 'resuming', async () => {
      const h = this.d.runtime.get(vm.id);
      const cur = this.d.store.vms.getById(vm.id) ?? vm;
      if (!h && cur.state === 'paused') return this.resumeSaved(cur);
      if (!h) throw new VmError('not_running', `vm "${vm.name}" is not running`);
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

  // ---- pause to disk / resume from disk (src/vm/pause.ts) -------------------------------------

  /**
   * Save a running VM to disk (device state and RAM, in its directory) and end its VMM: its
   * memory is freed, the VM is `paused` with `saved_state`. A failed save continues the guest:
   * the VM stays `running` and the error says why.
   */
  async pause(vm: VmRow): Promise<VmRow> {
    return this.exclusive(vm, 'pausing', () => this.pauseLocked(vm));
  }

  private async pauseLocked(vm0: VmRow): Promise<VmRow> {
    const vm = this.d.store.vms.getById(vm0.id) ?? vm0;
    const h = this.d.runtime.get(vm.id);
    if (vm.state === 'paused' && !h)
      throw new VmError('conflict', `vm "${vm.name}" is already paused (saved to disk)`);
    if (vm.state === 'paused')
      throw new VmError(
        'conflict',
        `vm "${vm.name}" is paused by its VMM (${vm.stateReason ?? 'stopped'}); resume it first: banger vm resume ${vm.name}`,
      );
    if (vm.state !== 'running' || !h)
      throw new VmError(
        vm.state === 'running' ? 'not_running' : 'conflict',
        `vm "${vm.name}" is ${vm.state}`,
      );
    if (!h.saveState)
      throw new VmError('invalid', `vm "${vm.name}": its VMM (${h.driver}) cannot save its state`);
    const spec = await this.runningSpec(vm, h);
    const dir = vmFiles(this.d.stateDir, vm.id).dir;
    const p = savedPaths(dir);
    const ops = this.pauseRamOps();
    // RAM in a shared file on tmpfs: the device state alone and a copy of the file (format
    // ram-file); otherwise the whole migration stream (full). Looked up before the guest stops.
    const ramSrc = await ops.find(h, spec).catch(() => undefined);
    this.setState(vm, 'pausing', 'saving the VM to disk');
    const t0 = performance.now();
    let manifest: SavedManifest;
    let copyMs = 0;
    try {
      this.crash('vm.pause.save');
      await removePartial(dir);
      let ram: SavedManifest['ram'];
      if (ramSrc !== undefined) {
        // x-ignore-shared: the RAM stays in its file, which nothing changes while the guest is
        // stopped; the copy is taken now.
        await h.saveState(p.stateTmp, { ignoreShared: true });
        this.crash('vm.pause.copy_ram');
        const c0 = performance.now();
        await ops.copy(ramSrc, p.ramTmp);
        ram = await syncRamTmp(p);
        copyMs = Math.round(performance.now() - c0);
      } else {
        await h.saveState(p.stateTmp);
      }
      const bytes = await syncStateTmp(p);
      manifest = {
        version: 1,
        vmId: vm.id,
        spec,
        bytes,
        savedAt: new Date().toISOString(),
        saveMs: Math.round(performance.now() - t0),
        ...(ram ? { format: 'ram-file' as const, ram } : { format: 'full' as const }),
      };
      this.crash('vm.pause.commit');
      await commitSaved(dir, manifest);
    } catch (err) {
      throw await this.pauseFailed(vm, h, err);
    }
    this.crash('vm.pause.exit');
    // Saved: what the VMM holds is on disk now. Its exit is asked for (no last_exit).
    await killVmm(this.d, vm.id);
    this.crash('vm.pause.record');
    const row = this.recordSaved(vm.id, manifest);
    this.d.log.info(
      {
        vm: vm.name,
        format: saveFormat(manifest),
        state_bytes: manifest.bytes,
        ram_data_bytes: manifest.ram?.dataBytes,
        save_ms: manifest.saveMs,
        copy_ram_ms: ramSrc !== undefined ? copyMs : undefined,
      },
      'vm paused to disk',
    );
    return row;
  }

  /** A save failed: nothing of it counts; the guest continues (or the VM ends stopped). */
  private async pauseFailed(vm: VmRow, h: VmmHandle, err: unknown): Promise<Error> {
    const dir = vmFiles(this.d.stateDir, vm.id).dir;
    await h.cancelSave?.();
    await discardSaved(dir).catch(() => undefined);
    const resumed = await h.resume().then(
      () => true,
      (e2: unknown) => {
        this.d.log.warn(
          { vm: vm.name, err: message(e2) },
          'could not continue the guest after a failed save',
        );
        return false;
      },
    );
    if (resumed) {
      this.setState(vm.id, 'running');
      this.d.log.warn({ vm: vm.name, err: message(err) }, 'pause failed; the VM runs on');
      return new VmError('failed', `pausing ${vm.name} failed; it keeps running: ${message(err)}`, {
        cause: err,
      });
    }
    await killVmm(this.d, vm.id);
    this.setState(vm.id, 'stopped', `pause failed and the guest could not be continued: ${message(err)}`);
    return new VmError('failed', `pausing ${vm.name} failed and its VMM is gone: ${message(err)}`, {
      cause: err,
    });
  }

  private recordSaved(id: string, m: SavedManifest, why?: string): VmRow {
    const bytes = savedDiskBytes(m);
    const row = this.d.store.vms.update(id, {
      savedState: { bytes, savedAt: m.savedAt, saveMs: m.saveMs },
    });
    const mib = (bytes / (1024 * 1024)).toFixed(1);
    return this.setState(
      row,
      'paused',
      `${why ? `${why}; ` : ''}saved to disk at ${m.savedAt} (${mib} MiB); resume with: banger vm resume ${row.name}`,
    );
  }

  /**
   * The launch spec the VM's VMM runs with: a cold boot's (launchSpec) or a warm clone's
   * (cloneLaunchSpec), whichever gives the argv the VMM was started with. A restore needs that
   * exact device configuration; a VM whose argv matches neither is not paused.
   */
  private async runningSpec(vm: VmRow, h: VmmHandle): Promise<VmLaunchSpec> {
    const image = this.d.store.images.getById(vm.imageId);
    const kernel = image ? this.d.store.kernels.getById(image.kernelId) : undefined;
    if (!image || !kernel) throw new VmError('conflict', `vm "${vm.name}": its image or kernel is gone`);
    const bridged = vm.networkMode === 'bridge' ? this.d.network.guest(vm) : undefined;
    const port = h.record.sshHostPort ?? 0;
    const accel = await this.d.accel();
    // A vm set --egress between `all` and a restricted policy applies at the next start: the VMM
    // may run with the netdev of either (`none` and `allow` share theirs).
    const variants = [
      vm,
      { ...vm, egress: DEFAULT_EGRESS },
      { ...vm, egress: { mode: 'none' as const, rules: [] } },
    ];
    // Booted with its RAM in a file (guest-ram.ts) or, before that or without room, anonymous.
    const ramDirs = [
      undefined,
      ...(this.d.guestRamRoot ? [guestRamDir(this.d.guestRamRoot, this.uid())] : []),
    ];
    const candidates = ramDirs.flatMap((dir) =>
      variants.map((v) => launchSpec(v, kernel, this.d.stateDir, accel, port, bridged, dir)),
    );
    // Resumed from disk before: the configuration that save recorded (src/vm/pause.ts).
    const resumed = await readResumedSpec(vmFiles(this.d.stateDir, vm.id).dir);
    if (resumed) candidates.unshift(resumed);
    if (vm.warmTemplate) {
      const tpl = (await listTemplates(image)).find((t) => t.hash16 === vm.warmTemplate)?.manifest;
      if (tpl) {
        const files = vmFiles(this.d.stateDir, vm.id);
        for (const v of variants)
          candidates.push(
            cloneLaunchSpec(tpl.spec, {
              id: vm.id,
              files,
              ...(bridged
                ? { tap: bridged.tap }
                : { sshHostPort: port, egress: userNetEgress(v, this.d.stateDir) }),
            }),
          );
      }
    }
    // A VMM started before the relay existed runs socat as its guestfwd command: that form too.
    const withSocat = candidates.flatMap((c) => {
      if (c.net.mode !== 'user' || c.net.guestfwd?.relay === undefined) return [c];
      const { relay: _relay, ...socat } = c.net.guestfwd;
      return [c, { ...c, net: { ...c.net, guestfwd: socat } }];
    });
    // A VMM that loaded a saved state was started with `-incoming defer`: try that form too.
    const forms = withSocat.flatMap((c) => [c, { ...c, incoming: INCOMING_DEFER }]);
    for (const spec0 of forms) {
      const spec: VmLaunchSpec =
        spec0.net.mode === 'user' ? { ...spec0, net: { ...spec0.net, sshHostPort: port } } : spec0;
      const plan = this.d.runtime.driver.prepare(spec);
      if (plan.argvHash !== h.record.argvHash) continue;
      const { incoming: _incoming, ...ran } = spec;
      // The TSC rate the command line carries, pinned: after a host reboot the host's may differ.
      const tsc = /\btsc_early_khz=(\d+)/.exec(plan.driver === 'qemu' ? plan.cmdline : '');
      return tsc?.[1] ? { ...ran, tscKhz: Number(tsc[1]) } : ran;
    }
    throw new VmError(
      'conflict',
      `vm "${vm.name}": its VMM runs with a configuration banger cannot restore (argv ${h.record.argvHash.slice(0, 12)}); restart it first`,
    );
  }

  /** `vm stop` (and delete) of a VM paused to disk: its saved state is discarded. */
  private async discardLocked(cur: VmRow): Promise<{ row: VmRow; clean: boolean; forced: boolean }> {
    this.crash('vm.stop.discard');
    // The manifest goes first: from then on a crash leaves no save, and reconcile stops it.
    await discardSaved(vmFiles(this.d.stateDir, cur.id).dir);
    this.d.store.vms.update(cur.id, { savedState: null });
    const row = this.setState(
      cur.id,
      'stopped',
      'stopped while paused to disk: its saved state was discarded',
    );
    return { row, clean: true, forced: false };
  }

  /**
   * Restore a VM paused to disk: the same VMM configuration (a new forwarded port in user
   * mode; the tap made again in bridged mode) with `-incoming defer`, load the saved state,
   * consume the save (before the guest runs: its disk then moves on from the saved RAM), `cont`,
   * correct the clock, wait for SSH. Fails back to `paused` (the save kept) until the save is
   * consumed, to `error` after.
   */
  private async resumeSaved(vm: VmRow): Promise<VmRow> {
    const dir = vmFiles(this.d.stateDir, vm.id).dir;
    const m = await readSaved(dir, vm.id);
    if (!m) {
      await discardSaved(dir);
      this.d.store.vms.update(vm.id, { savedState: null });
      const why = 'its saved state is missing or incomplete';
      this.setState(vm.id, 'stopped', `${why}; banger vm start boots it afresh`);
      throw new VmError('failed', `vm "${vm.name}" cannot be resumed: ${why}; it is stopped now`);
    }
    const row = this.setState(vm, 'resuming', 'loading its saved state');
    let consumed = false;
    const t0 = performance.now();
    try {
      this.crash('vm.resume.network');
      // Bridged: the tap (a host reboot removes it) and NAT.
      if (row.networkMode === 'bridge') await this.d.network.attach(row);
      const times = await this.startSaved(row, m);
      this.crash('vm.resume.consume');
      // The manifest alone before the guest runs (from then on there is no save); the files go
      // while it wakes up (unlinking a RAM file's extents takes ~60 ms on ext4). A crash between
      // leaves them without a manifest: reconcile's discardSaved removes them.
      await consumeSaved(dir);
      consumed = true;
      this.d.store.vms.update(vm.id, { savedState: null });
      this.crash('vm.resume.cont');
      const h = this.d.runtime.get(vm.id);
      if (!h) throw new VmError('failed', `the VMM of ${vm.name} exited while its state was loaded`);
      await h.resume();
      const contMs = Math.round(performance.now() - t0);
      const removed = discardSaved(dir).catch((err: unknown) =>
        this.d.log.warn({ vm: vm.name, err: message(err) }, 'could not remove the used save'),
      );
      this.crash('vm.resume.wait_ready');
      await Promise.all([this.resumedReady(row), removed]);
      const now = this.setState(vm.id, 'running');
      this.d.log.info(
        {
          vm: vm.name,
          format: saveFormat(m),
          ...times,
          cont_at_ms: contMs,
          ready_ms: Math.round(performance.now() - t0),
        },
        'vm resumed from disk',
      );
      return now;
    } catch (err) {
      await killVmm(this.d, vm.id);
      if (!consumed) {
        this.recordSaved(vm.id, m, `resume failed (${message(err)}); the saved state is kept`);
      } else {
        // The consume removed the manifest alone: without this, a cont that failed leaves the
        // state and RAM files (up to the guest's RAM) behind, and nothing else removes them.
        await discardSaved(dir).catch((e: unknown) =>
          this.d.log.warn({ vm: vm.name, err: message(e) }, 'could not remove the used save'),
        );
        this.setState(
          vm.id,
          'error',
          `resume failed after its saved state was used: ${message(err)}; banger vm start boots it afresh`,
        );
      }
      throw err;
    }
  }

  /**
   * Start the saved configuration waiting for its state, and load it; returns where the time went
   * (ms). A `ram-file` save: the new VMM's RAM file (QEMU's own, unlinked, in the user's RAM
   * directory) is filled from `saved.ram`, then the device state is loaded with x-ignore-shared;
   * without room on the tmpfs now, the VMM maps `saved.ram` itself copy-on-write (share=off, as a
   * warm clone maps its template's file), which the consume unlinks (the mapping stays): such a
   * VM's next pause saves the whole stream.
   */
  private async startSaved(
    vm: VmRow,
    m: SavedManifest,
  ): Promise<{
    qemu_ms: number;
    ram_ms?: number;
    ram_data_bytes?: number;
    load_ms: number;
    ram_path?: string;
  }> {
    const dir = vmFiles(this.d.stateDir, vm.id).dir;
    const p = savedPaths(dir);
    const port = m.spec.net.mode === 'user' ? await reservePort() : undefined;
    let net = m.spec.net;
    if (net.mode === 'user' && port !== undefined) {
      // The policy as it is now (a vm set while paused applies here): restrict and guestfwd are
      // netdev options outside the saved state.
      const { restrict: _r, guestfwd: _g, ...base } = net;
      net = { ...base, sshHostPort: port, ...userNetEgress(vm, this.d.stateDir) };
    }
    const ramFile = saveFormat(m) === 'ram-file';
    let memory = m.spec.memory;
    if (ramFile && !memory) throw new VmError('failed', `the save of ${vm.name} has RAM but no RAM backend`);
    let fill = false;
    if (ramFile && memory) {
      const room = await this.pauseRamOps()
        .room(m.spec.memoryMiB)
        .catch(() => undefined);
      fill = room !== undefined && room === memory.backendFile;
      if (!fill) memory = { ...memory, backendFile: p.ram, share: false };
    }
    const saved: VmLaunchSpec = { ...m.spec, net, ...(memory ? { memory } : {}) };
    const spec: VmLaunchSpec = { ...saved, incoming: INCOMING_DEFER };
    // RAM in the user's tmpfs directory: a host reboot since the pause removed it.
    if (this.d.guestRamRoot && usesGuestRamDir(spec, this.d.guestRamRoot))
      await mkdir(spec.memory!.backendFile, { recursive: true, mode: 0o700 });
    // A warm clone maps its template's read-only RAM file (src/vm/warm.ts holdRamOpenable). A
    // RAM file that is not there (a share=off `saved.ram` of an earlier resume, consumed since)
    // QEMU makes anew: nothing to hold open.
    const release =
      spec.memory && existsSync(spec.memory.backendFile)
        ? holdRamOpenable(spec.memory.backendFile)
        : (): void => undefined;
    try {
      this.crash('vm.resume.boot');
      await markSerial(this.d.stateDir, vm, 'vm.resume (from disk)', this.d.serialMarks);
      attachEgress(this.d, vm);
      const t0 = performance.now();
      const plan = this.d.runtime.driver.prepare(spec);
      const h = await this.d.runtime.driver.start(plan, { logger: this.d.log });
      this.d.runtime.attach(vm.id, h);
      // A later pause of this VMM needs to know the configuration it runs with.
      await writeResumedSpec(dir, saved);
      const qemuMs = Math.round(performance.now() - t0);
      if (!h.loadState) throw new VmError('invalid', `the ${h.driver} VMM cannot load a saved state`);
      if (!ramFile) {
        this.crash('vm.resume.load');
        const loaded = await h.loadState(p.state);
        return { qemu_ms: qemuMs, load_ms: loaded.durationMs };
      }
      let ramMs: number | undefined;
      let dataBytes: number | undefined;
      if (fill) {
        this.crash('vm.resume.fill_ram');
        const r0 = performance.now();
        const ops = this.pauseRamOps();
        const dst = await ops.find(h, spec);
        if (dst === undefined)
          throw new VmError('failed', `the RAM file of ${vm.name}'s new VMM was not found`);
        dataBytes = await ops.fill(p.ram, dst, m.ram!.bytes);
        ramMs = Math.round(performance.now() - r0);
      }
      this.crash('vm.resume.load');
      const loaded = await h.loadState(p.state, { ignoreShared: true });
      return {
        qemu_ms: qemuMs,
        ...(ramMs !== undefined ? { ram_ms: ramMs } : {}),
        ...(dataBytes !== undefined ? { ram_data_bytes: dataBytes } : {}),
        load_ms: loaded.durationMs,
        ram_path: fill ? 'tmpfs' : 'mapped-from-disk',
      };
    } finally {
      release();
      if (port !== undefined) releasePort(port);
    }
  }

  /** Pause/resume's RAM-file operations: the host's, with any the deps replace. */
  private pauseRamOps(): PauseRamOps {
    const root = this.d.guestRamRoot;
    return {
      find: async (h, spec) =>
        root !== undefined && h.driver === 'qemu' && spec.memory && usesGuestRamDir(spec, root)
          ? findRamFile(h.pid, spec.memory.backendFile, spec.memory.backendId ?? MEMORY_BACKEND_ID)
          : undefined,
      copy: copyRamFile,
      fill: fillRamFile,
      room: async (mib) => (root !== undefined ? prepareGuestRamDir(root, this.uid(), mib) : undefined),
      ...this.d.pauseRam,
    };
  }

  private async resumedReady(vm: VmRow): Promise<void> {
    if (this.d.resumedReady) return this.d.resumedReady(vm);
    // Both go through the guest (its agent, its sshd): side by side, the resume is ~2 s shorter
    // under TCG. The VM is `running` only once both are done.
    await Promise.all([
      this.fixClock(vm),
      waitReady(this.d, vm, new AbortController().signal, undefined, { restored: true }),
    ]);
  }

  /** Correct a resumed guest's clock; a guest without its agent keeps the old time (logged). */
  private async fixClock(vm: VmRow): Promise<void> {
    try {
      const skewMs = await (this.d.correctClock
        ? this.d.correctClock(vm)
        : correctGuestClock(vmFiles(this.d.stateDir, vm.id).qgaSocket, 15_000));
      this.d.log.info({ vm: vm.name, skew_ms: skewMs }, 'guest clock corrected after resume');
    } catch (err) {
      this.d.log.warn({ vm: vm.name, err: message(err) }, 'could not correct the guest clock after resume');
    }
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
    // A VM paused to disk is stopped first too: its saved state is discarded.
    if (this.d.runtime.isRunning(vm.id) || cur.state === 'paused') await this.stopLocked(cur, 10_000);
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
    this.d.egress?.detach(vm.id);
    this.d.egress?.events.forget(vm.name);
    this.crash(`${kind}.files`);
    await unpinHostKey(this.d.ssh, hostKeyAlias(vm.name));
    await rm(vmFiles(this.d.stateDir, vm.id).dir, { recursive: true, force: true });
    this.crash(`${kind}.record`);
    this.cancelAutoResume(vm.id);
    this.d.store.vms.delete(vm.id);
    if (vm.warmTemplate) this.d.warm?.vmDeleted?.(vm);
    // A fork's base and RAM file go with their last user.
    await sweepForks(this.d.stateDir, this.d.store, this.d.log).catch((err: unknown) =>
      this.d.log.warn({ err: message(err) }, 'fork sweep failed'),
    );
  }

  // ---- what the VMM reports ------------------------------------------------------------------

  /** The runtime saw a VMM exit. */
  onVmmExit(vmId: string, expected: boolean, info: ExitInfo): void {
    this.cancelAutoResume(vmId);
    this.ioErrors.delete(vmId);
    // No VMM, nothing to proxy for (a start or resume attaches again before its VMM starts).
    this.d.egress?.detach(vmId);
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
      saved: [],
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
    await sweepForks(this.d.stateDir, this.d.store, this.d.log).catch((err: unknown) =>
      this.d.log.warn({ err: message(err) }, 'fork sweep failed'),
    );
    if (this.d.guestRamRoot) {
      const gone = await sweepGuestRamDir(guestRamDir(this.d.guestRamRoot, this.uid()), this.uid());
      if (gone.length > 0) this.d.log.warn({ files: gone }, 'RAM files no VMM had open removed');
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

  /**
   * A pause or resume the daemon died in. The manifest decides: a committed save makes the VM
   * `paused` (any VMM is ended: a pause that got that far only had to end it; a resume that had
   * not consumed the save never ran the guest). Without one: an interrupted pause continues the
   * guest if its VMM lives (the VM runs on), an interrupted resume (its save consumed) continues
   * the loaded guest; with no VMM left either ends `stopped`.
   */
  private async reconcileSave(row: VmRow, h: VmmHandle | null, r: ReconcileReport): Promise<void> {
    const dir = vmFiles(this.d.stateDir, row.id).dir;
    const m = await readSaved(dir, row.id);
    const what = row.state === 'pausing' ? 'pause' : 'resume';
    if (m) {
      await killVmm(this.d, row.id);
      await removePartial(dir);
      this.recordSaved(
        row.id,
        m,
        what === 'pause' ? 'pause finished by a restarted daemon' : 'resume interrupted by a daemon restart',
      );
      r.saved.push(row.name);
      this.d.log.warn({ vm: row.name }, `${what} interrupted by a daemon restart: the VM is paused to disk`);
      return;
    }
    await discardSaved(dir);
    this.d.store.vms.update(row.id, { savedState: null });
    if (h) {
      // A save in flight is abandoned before the guest continues (the pause never counted).
      if (what === 'pause') await h.cancelSave?.();
      const ok = await h.resume().then(
        () => true,
        () => false,
      );
      if (ok) {
        // As any reattached VM: its guestfwd reaches the proxy again (the socket went with the
        // previous daemon).
        attachEgress(this.d, row, { running: true });
        if (what === 'resume') await this.fixClock(row);
        this.setState(row, 'running');
        r.reattached.push(row.name);
        this.d.log.warn({ vm: row.name }, `${what} interrupted by a daemon restart: the VM runs on`);
        return;
      }
      await killVmm(this.d, row.id);
    }
    this.setState(
      row,
      'stopped',
      what === 'pause'
        ? 'pause interrupted by a daemon restart (its VMM was gone)'
        : 'resume interrupted by a daemon restart after its saved state was used',
    );
    r.stopped.push(row.name);
  }

  /**
   * Save files with no manifest of a VM not paused: no save (nothing resumes them), e.g. what a
   * resume whose cont failed left, and saved.ram is up to the guest's RAM. A paused VM's are
   * judged by the paused branch of reconcileOne.
   */
  private async removeUsedSave(row: VmRow): Promise<void> {
    const dir = vmFiles(this.d.stateDir, row.id).dir;
    const p = savedPaths(dir);
    if (existsSync(p.manifest) || ![p.state, p.ram].some((f) => existsSync(f))) return;
    await discardSaved(dir);
    this.d.log.warn({ vm: row.name, state: row.state }, 'removed the files of a save already used');
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
    const journal = await readJournal(vmFiles(this.d.stateDir, row.id).dir);
    if (journal) {
      // A fork the daemon died in: the source's disk repaired, its guest continued (fork.ts).
      const how = await reconcileFork(this.forkDeps(), row, h, journal);
      if (how === 'running') {
        // As any reattached VM: its guestfwd reaches the proxy again (see below).
        attachEgress(this.d, row, { running: true });
        r.reattached.push(row.name);
      } else if (how === 'stopped') r.stopped.push(row.name);
      if (how !== 'kept') return;
    }
    if (row.state === 'pausing' || row.state === 'resuming') return this.reconcileSave(row, h, r);
    if (row.state !== 'paused') await this.removeUsedSave(row);
    if (row.state === 'paused' && !h) {
      // Paused to disk: no VMM is expected; the save must be there, whole.
      const m = await readSaved(vmFiles(this.d.stateDir, row.id).dir, row.id);
      if (m) {
        await removePartial(vmFiles(this.d.stateDir, row.id).dir);
        if (!row.savedState) this.recordSaved(row.id, m);
        r.saved.push(row.name);
        return;
      }
    }
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
      // Its guestfwd reaches the proxy again (the socket went with the previous daemon).
      attachEgress(this.d, row, { running: true });
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
    if (row.state === 'paused' && row.savedState) {
      // Paused to disk, its save gone or damaged (readSaved above): nothing to resume, and no
      // VMM exited (it had none), so no last_exit.
      await discardSaved(vmFiles(this.d.stateDir, row.id).dir);
      this.d.store.vms.update(row.id, { savedState: null });
      this.setState(
        row,
        'stopped',
        'its saved state is missing or incomplete; banger vm start boots it afresh',
      );
      r.stopped.push(row.name);
      this.d.log.warn({ vm: row.name }, 'VM paused to disk lost its saved state; stopped');
      return;
    }
    if (row.state === 'running' || row.state === 'paused') {
      this.d.store.vms.update(row.id, {
        lastExit: `exited while the daemon was away (found gone at ${new Date().toISOString()})`,
        savedState: null,
      });
      this.setState(row, 'stopped', 'the VMM exited while the daemon was away');
      r.stopped.push(row.name);
      this.d.log.info({ vm: row.name }, 'VM stopped while the daemon was away');
    }
  }
}
