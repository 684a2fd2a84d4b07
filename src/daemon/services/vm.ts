// The VM service: lifecycle methods of schema/methods.json's vm.* namespace. Long work (create)
// runs as an operation whose id is the op id of the RPC that began it.
import type {
  VmCreateService,
  VmForkService,
  VmService,
  VmWorkspaceService,
} from '../../../generated/handlers.gen.ts';
import type * as T from '../../../generated/types.gen.ts';
import type { StreamReply } from '../../rpc/adapters.ts';
import type { RpcContext } from '../../rpc/context.ts';
import { ErrorResponse, notFound } from '../../rpc/errors.ts';
import type { Store, VmPatch, VmRow } from '../../store/index.ts';
import type { DaemonConfig } from '../config.ts';
import type { OperationRegistry } from '../../ops/operations.ts';
import { vmToWire } from '../../vm/convert.ts';
import { DEFAULT_STOP_TIMEOUT_MS, VmLifecycle, type LifecycleDeps } from '../../vm/lifecycle.ts';
import { diskInfo } from '../../vm/disk.ts';
import { macFor, vmFiles } from '../../vm/layout.ts';
import { sshTarget } from '../../vm/machine.ts';
import { procUsage } from '../../vm/procstat.ts';
import { SSH_KEX_ALGORITHMS, sshExec } from '../../vm/ssh.ts';
import { newId } from '../../store/index.ts';
import { parseSsListen, SS_COMMAND } from '../guest-ports.ts';
import { serialLogs } from '../vm-logs.ts';
import { planCreate, planEgress } from '../../vm/plan.ts';
import { formatEgress } from '../../egress/rules.ts';
import { applyEgressChange, type EgressChange } from '../../egress/set.ts';
import {
  asWorkspace,
  exportWorkspace,
  prepareWorkspace,
  sshGuestRunner,
  type GuestRunner,
  type PrepareRequest,
} from '../../vm/workspace.ts';
import { DEFAULT_IMAGE_NAME } from './image.ts';
import { forkService } from './vm-fork.ts';
import { followEgress } from '../vm-egress.ts';
import { IdleTracker } from '../idle.ts';
import { formatIdleDuration, IdleDurationError, parseIdleDuration } from '../../vm/idle.ts';

export interface VmServiceDeps extends LifecycleDeps {
  store: Store;
  ops: OperationRegistry;
  config: DaemonConfig;
  /** The lifecycle owner; made from the same deps when absent. */
  lifecycle?: VmLifecycle;
  /** Whether a secret is set (the secret store): `--secret` names must be. */
  secretExists?: (name: string) => Promise<boolean>;
}

/** An idle_pause_after param in ms, or bad_request with the parser's words. */
function idleParam(text: string): number {
  try {
    return parseIdleDuration(text);
  } catch (err) {
    if (err instanceof IdleDurationError)
      throw new ErrorResponse('bad_request', `idle_pause_after: ${err.message}`);
    throw err;
  }
}

export class VmServiceImpl implements VmService {
  private readonly d: VmServiceDeps;
  /** Every state change, lock and VMM event of a VM goes through it. */
  readonly lifecycle: VmLifecycle;

  /** vm.fork.* (src/daemon/services/vm-fork.ts). */
  readonly fork: VmForkService;

  /** Idle pause (src/daemon/idle.ts); started by the daemon after reconcile. */
  readonly idle: IdleTracker;

  constructor(deps: VmServiceDeps) {
    this.d = deps;
    this.lifecycle = deps.lifecycle ?? new VmLifecycle(deps);
    this.fork = forkService({
      store: deps.store,
      ops: deps.ops,
      lifecycle: this.lifecycle,
      find: (ref) => this.find(ref),
      wire: (row) => this.wire(row),
      nameTaken: (name) => this.nameTaken(name),
    });
    this.idle = new IdleTracker({
      vms: deps.store.vms,
      defaultMs: deps.config.vm_defaults.idle_pause_after_ms ?? 0,
      busyWith: (id) => this.lifecycle.busyWith(id),
      isRunning: (id) => deps.runtime.isRunning(id),
      sshEndpoint: (vm) => {
        if (vm.networkMode === 'bridge') return vm.guestIp ? { mode: 'bridge', ip: vm.guestIp } : undefined;
        const port = deps.runtime.get(vm.id)?.record.sshHostPort;
        return port ? { mode: 'user', port } : undefined;
      },
      pause: (vm) => this.lifecycle.pause(vm),
      log: deps.log,
    });
  }

  // ---- helpers -------------------------------------------------------------------------

  find(ref: string): VmRow {
    const row = this.d.store.vms.getByName(ref) ?? this.d.store.vms.getById(ref);
    if (!row) throw notFound(`vm "${ref}"`);
    return row;
  }

  wire(row: VmRow): T.Vm {
    const vm = vmToWire(this.d, row, this.d.store.images.getById(row.imageId));
    // Idle pause: the effective setting, the last use the tracker knows, why it is paused.
    const after = this.idle.afterMs(row);
    if (after > 0) {
      vm.idle_pause_after = formatIdleDuration(after);
      vm.last_used_at = new Date(this.idle.lastUsed(row)).toISOString();
    }
    if (IdleTracker.idlePaused(row) && row.idlePausedAt) vm.idle_paused_at = row.idlePausedAt;
    return vm;
  }

  /** An RPC that works in or on the VM: it counts as use (idle pause). */
  private used(vm: VmRow): void {
    this.idle.touch(vm.id);
  }

  /** Start-up: make the database and the world agree (src/vm/lifecycle.ts). */
  async reconcile(): Promise<void> {
    const r = await this.lifecycle.reconcile();
    this.d.log.info(
      {
        reattached: r.reattached.length,
        undone: r.undone,
        stopped: r.stopped,
        deleted: r.deleted,
        saved: r.saved,
        orphans: r.orphans,
        templates: r.templates.length,
      },
      'VMs reconciled',
    );
  }

  // ---- create ----------------------------------------------------------------------------

  /** vm.create.*, at its wire path (the methods below do the work). */
  readonly create: VmCreateService = {
    begin: (p, ctx) => this.createBegin(p, ctx),
    status: (p) => this.createStatus(p),
    cancel: (p) => this.createCancel(p),
    plan: (p) => this.createPlan(p),
  };

  /** Names of VMs being created whose rows do not exist yet (their image may still be building). */
  private readonly reserved = new Map<string, string>();

  private nameTaken(name: string): boolean {
    return this.reserved.has(name) || !!this.d.store.vms.getByName(name);
  }

  async createBegin(p: T.VmCreateBeginParams, ctx: RpcContext): Promise<T.VmCreateBeginResult> {
    // The same resolution (and the same errors) as vm.create.plan.
    const plan = await this.createPlan(p);
    const idleMs = p.idle_pause_after !== undefined ? idleParam(p.idle_pause_after) : undefined;
    const id = newId();
    const t = this.d.ops.begin(ctx.opId, 'vm.create', 'vm.create.begin', { vm: plan.name });
    this.reserved.set(plan.name, ctx.opId);
    const draft = {
      id,
      name: plan.name,
      vcpus: plan.vcpus,
      memoryMib: plan.memory_mib,
      diskSizeBytes: plan.disk_size_bytes,
      networkMode: plan.network,
      mac: macFor(id),
      nat: plan.nat,
      egress: plan.egress,
      secrets: plan.secrets ?? [],
      // The create's op id: every egress log line of the VM carries it until a vm set changes it.
      egressOpId: ctx.opId,
      ...(idleMs !== undefined ? { idlePauseAfterMs: idleMs } : {}),
    };
    // Runs on in the background inside this call's async context: its logs carry this op id.
    void this.lifecycle
      .create(t, {
        draft,
        imageName: p.image,
        start: p.start ?? true,
        cold: p.cold ?? false,
        onRecorded: () => this.reserved.delete(plan.name),
      })
      .finally(() => this.reserved.delete(plan.name));
    return { operation_id: ctx.opId, name: plan.name };
  }

  async createStatus(p: T.VmCreateStatusParams): Promise<T.VmCreateStatusResult> {
    const op = this.d.ops.find(p.operation_id);
    if (!op || op.kind !== 'vm.create') throw notFound(`create operation ${p.operation_id}`);
    const r: T.VmCreateStatusResult = { operation: op };
    const row = op.vm ? this.d.store.vms.getByName(op.vm) : undefined;
    if (row) r.vm = this.wire(row);
    return r;
  }

  async createCancel(p: T.VmCreateCancelParams): Promise<T.VmCreateCancelResult> {
    const t = this.d.ops.get(p.operation_id);
    if (!t || t.op.kind !== 'vm.create') {
      if (this.d.ops.find(p.operation_id))
        throw new ErrorResponse('conflict', `operation ${p.operation_id} already finished`);
      throw notFound(`create operation ${p.operation_id}`);
    }
    t.abort.abort(new ErrorResponse('canceled', 'canceled by user'));
    // Wait (bounded) for the pipeline to unwind so the caller sees the final state.
    for (let i = 0; i < 600 && t.op.state === 'running'; i++) await new Promise((r) => setTimeout(r, 100));
    return { operation: t.op };
  }

  // ---- queries ---------------------------------------------------------------------------

  async list(p: T.VmListParams): Promise<T.VmListResult> {
    const rows = this.d.store.vms.list().filter((r) => (p.state ? r.state === p.state : true));
    return { vms: rows.map((r) => this.wire(r)) };
  }

  async show(p: T.VmShowParams): Promise<T.VmShowResult> {
    return { vm: this.wire(this.find(p.name)) };
  }

  // ---- lifecycle -------------------------------------------------------------------------

  async start(p: T.VmStartParams): Promise<T.VmStartResult> {
    const vm = this.find(p.name);
    const row = await this.lifecycle.start(vm);
    return { vm: this.wire(this.ranAgain(row)) };
  }

  /**
   * A VM that runs again after a start or resume by request: used now, and not paused by the
   * idle timer any more.
   */
  private ranAgain(row: VmRow): VmRow {
    this.used(row);
    if (!row.idlePausedAt) return this.d.store.vms.getById(row.id) ?? row;
    this.d.store.vms.setIdlePaused(row.id, null);
    return this.d.store.vms.getById(row.id) ?? row;
  }

  async stop(p: T.VmStopParams): Promise<T.VmStopResult> {
    const r = await this.lifecycle.stop(this.find(p.name), p.timeout_ms ?? DEFAULT_STOP_TIMEOUT_MS);
    return { vm: this.wire(r.row), clean: r.clean, forced: r.forced };
  }

  async restart(p: T.VmRestartParams): Promise<T.VmRestartResult> {
    const vm = this.find(p.name);
    // A VM paused to disk is stopped too (its save discarded): a restart boots afresh, where a
    // start would resume it.
    if (this.d.runtime.isRunning(vm.id) || vm.state === 'paused')
      await this.lifecycle.stop(vm, DEFAULT_STOP_TIMEOUT_MS);
    return { vm: this.wire(this.ranAgain(await this.lifecycle.start(this.find(vm.id)))) };
  }

  async kill(p: T.VmKillParams): Promise<T.VmKillResult> {
    const signal = `SIG${p.signal ?? 'KILL'}` as NodeJS.Signals;
    return { vm: this.wire(await this.lifecycle.kill(this.find(p.name), signal)) };
  }

  async pause(p: T.VmPauseParams): Promise<T.VmPauseResult> {
    const vm = this.find(p.name);
    // Paused by request, not by the idle timer: a mark an earlier idle pause left goes before
    // the pause (a kill -9 between a pause and clearing it afterwards left the VM counted as
    // idle-paused for good, and vm ssh/exec would then resume it by themselves).
    if (vm.idlePausedAt && vm.state !== 'paused') this.d.store.vms.setIdlePaused(vm.id, null);
    const row = await this.lifecycle.pause(vm);
    if (row.idlePausedAt) this.d.store.vms.setIdlePaused(row.id, null);
    return { vm: this.wire(this.d.store.vms.getById(row.id) ?? row) };
  }

  async resume(p: T.VmResumeParams): Promise<T.VmResumeResult> {
    return { vm: this.wire(this.ranAgain(await this.lifecycle.resume(this.find(p.name)))) };
  }

  /** vm.touch: mark the VM used now (idle pause); it only marks, never starts or resumes. */
  async touch(p: T.VmTouchParams): Promise<T.VmTouchResult> {
    const vm = this.find(p.name);
    this.used(vm);
    return { vm: this.wire(this.d.store.vms.getById(vm.id) ?? vm) };
  }

  async delete(p: T.VmDeleteParams): Promise<T.VmDeleteResult> {
    const vm = this.find(p.name);
    await this.lifecycle.delete(vm);
    return { name: vm.name, deleted: true as const };
  }

  async set(p: T.VmSetParams, ctx: RpcContext): Promise<T.VmSetResult> {
    const vm = this.find(p.name);
    if (
      p.vcpus === undefined &&
      p.memory_mib === undefined &&
      p.egress === undefined &&
      p.idle_pause_after === undefined
    )
      throw new ErrorResponse(
        'bad_request',
        'nothing to change: give vcpus, memory_mib, egress or idle_pause_after',
      );
    const idleMs = p.idle_pause_after !== undefined ? idleParam(p.idle_pause_after) : undefined;
    const egress = p.egress !== undefined ? planEgress(p.egress) : undefined;
    return this.lifecycle.exclusive(vm, 'updating', async () => {
      const cur = this.d.store.vms.getById(vm.id) ?? vm;
      const resize = p.vcpus !== undefined || p.memory_mib !== undefined;
      if (resize && (this.d.runtime.isRunning(vm.id) || cur.state !== 'stopped')) {
        throw new ErrorResponse(
          'conflict',
          `vm "${vm.name}" must be stopped to change its size (it is ${cur.state})`,
        );
      }
      const patch: VmPatch = {};
      if (p.vcpus !== undefined) patch.vcpus = p.vcpus;
      if (p.memory_mib !== undefined) patch.memoryMib = p.memory_mib;
      if (idleMs !== undefined) {
        patch.idlePauseAfterMs = idleMs;
        this.used(vm);
      }
      let change: EgressChange | undefined;
      if (egress) {
        // This call's op id becomes the policy's: its egress log lines carry it from now on.
        patch.egress = egress;
        patch.egressOpId = ctx.opId;
        change = await applyEgressChange(
          {
            vmmPid: (id) => this.d.runtime.get(id)?.pid,
            applyBridged: (row) => this.d.network.applyEgress(row),
            ...(this.d.egress ? { egress: this.d.egress } : {}),
          },
          cur,
          { ...cur, egress, egressOpId: ctx.opId },
        );
        ctx.log.info(
          { vm: vm.name, egress: formatEgress(egress), applied: change.applied },
          'egress policy set',
        );
      }
      const r: T.VmSetResult = { vm: this.wire(this.d.store.vms.update(vm.id, patch)) };
      // The events' cached op id follows the row (src/egress/events.ts).
      if (egress) this.d.egress?.events.setOpId(vm.name, ctx.opId);
      if (change) {
        r.egress_applied = change.applied;
        if (change.note) r.egress_note = change.note;
      }
      return r;
    });
  }

  async prune(p: T.VmPruneParams): Promise<T.VmPruneResult> {
    const deleted: string[] = [];
    const kept: string[] = [];
    for (const vm of this.d.store.vms.list()) {
      const prunable =
        (vm.state === 'stopped' || vm.state === 'error') &&
        !this.d.runtime.isRunning(vm.id) &&
        !this.lifecycle.busyWith(vm.id);
      if (!prunable) {
        kept.push(vm.name);
        continue;
      }
      if (!p.dry_run) await this.lifecycle.delete(vm);
      deleted.push(vm.name);
    }
    return { deleted, kept };
  }

  async stats(p: T.VmStatsParams): Promise<T.VmStatsResult> {
    const vm = this.find(p.name);
    const f = vmFiles(this.d.stateDir, vm.id);
    const disk = await diskInfo(f.overlay).catch(() => ({
      virtualBytes: vm.diskSizeBytes,
      allocatedBytes: 0,
    }));
    const r: T.VmStatsResult = {
      name: vm.name,
      state: vm.state,
      disk_allocated_bytes: disk.allocatedBytes,
      disk_virtual_bytes: disk.virtualBytes,
    };
    const h = this.d.runtime.get(vm.id);
    if (h) {
      const a = await procUsage(h.pid);
      await new Promise((res) => setTimeout(res, 250));
      const b = await procUsage(h.pid);
      r.pid = h.pid;
      if (b) {
        r.cpu_seconds = b.cpuSeconds;
        r.rss_bytes = b.rssBytes;
        if (a) r.cpu_percent = Math.round(((b.cpuSeconds - a.cpuSeconds) / 0.25) * 1000) / 10;
      }
      r.uptime_ms = Date.now() - new Date(h.record.startedAt).getTime();
    }
    return r;
  }

  async health(p: T.VmHealthParams): Promise<T.VmHealthResult> {
    const vm = this.find(p.name);
    const { readFile } = await import('node:fs/promises');
    const serial = await readFile(vmFiles(this.d.stateDir, vm.id).serialLog, 'utf8').catch(() => '');
    const lastBoot = serial.slice(serial.lastIndexOf('banger: op-'));
    // Only a VM whose VMM runs can have a kernel up: a stopped VM's console still shows its last boot.
    const live = this.d.runtime.isRunning(vm.id);
    const r: T.VmHealthResult = {
      name: vm.name,
      state: vm.state,
      kernel_up: live && /Linux version/.test(lastBoot || serial),
      userspace_up: false,
      ssh_ready: false,
      checked_at: new Date().toISOString(),
    };
    const t = live && vm.state !== 'paused' ? sshTarget(this.d, vm) : undefined;
    if (t) {
      const s = await sshExec(this.d.ssh, t, 'cat /proc/sys/kernel/random/boot_id', { timeoutMs: 10_000 });
      if (s.code === 0) {
        r.ssh_ready = true;
        r.userspace_up = true;
        r.kernel_up = true;
        r.boot_id = s.stdout.trim();
      }
    }
    return r;
  }

  /** vm.logs: the serial console's tail, or with follow a stream of it (src/daemon/vm-logs.ts). */
  async logs(p: T.VmLogsParams, ctx: RpcContext): Promise<StreamReply<T.VmLogsFrame, T.VmLogsResult>> {
    const vm = this.find(p.name);
    const path = vmFiles(this.d.stateDir, vm.id).serialLog;
    return serialLogs({ name: vm.name, path, stillRunning: () => this.isRunningByName(vm.name) }, p, ctx);
  }

  /** vm.egress: the VM's recent egress events (src/egress/events.ts), with follow a stream. */
  async egress(
    p: T.VmEgressParams,
    ctx: RpcContext,
  ): Promise<StreamReply<T.VmEgressFrame, T.VmEgressResult>> {
    const vm = this.find(p.name);
    const events = this.d.egress?.events;
    const recent = events?.recent(vm.name, p.limit ?? 100) ?? [];
    const result: T.VmEgressResult = { name: vm.name, egress: this.wire(vm).egress, events: recent };
    if (!p.follow || !events) return { result };
    const gone = (): boolean => !this.d.store.vms.getById(vm.id);
    return {
      frames: followEgress(events, vm.name, recent, ctx.signal, gone),
      // The recent events went out as frames first.
      result: { ...result, events: [] },
    };
  }

  /**
   * vm.ssh: validate first so the caller gets not_found / not_running. It counts as use (vm ssh,
   * exec and run call it before connecting); a VM the idle timer is pausing right now is waited
   * for, so the caller sees it paused and resumes it rather than connecting to a VMM that ends.
   */
  async ssh(p: T.VmSshParams): Promise<T.VmSshResult> {
    let vm = this.find(p.name);
    const inFlight = this.idle.pauseInFlight(vm.id);
    if (inFlight) {
      await inFlight;
      vm = this.find(vm.id);
    }
    this.used(vm);
    const t = this.d.runtime.isRunning(vm.id) ? sshTarget(this.d, vm) : undefined;
    if (!t)
      throw new ErrorResponse(
        'not_running',
        IdleTracker.idlePaused(vm)
          ? `vm "${vm.name}" is paused (idle); resume it with: banger vm resume ${vm.name}`
          : `vm "${vm.name}" is not running; start it with: banger vm start ${vm.name}`,
      );
    return {
      name: vm.name,
      host: t.host,
      port: t.port,
      user: t.user,
      identity_file: this.d.ssh.privateKey,
      known_hosts_file: this.d.ssh.knownHosts,
      host_key_alias: t.alias,
      ssh_options: [
        `KexAlgorithms=${SSH_KEX_ALGORITHMS}`,
        'StrictHostKeyChecking=yes',
        `HostKeyAlias=${t.alias}`,
        'GlobalKnownHostsFile=/dev/null',
        'PasswordAuthentication=no',
        // A guest or link that stops answering ends the session after about a minute instead of
        // leaving `vm ssh`/`vm exec` waiting forever; a silent command is fine (sshd answers
        // keepalives while it runs).
        'ConnectTimeout=15',
        'ServerAliveInterval=15',
        'ServerAliveCountMax=4',
      ],
    };
  }

  // ---- workspaces (src/vm/workspace.ts does the work) --------------------------------------

  /** vm.workspace.*, at its wire path (the methods below do the work). */
  readonly workspace: VmWorkspaceService = {
    prepare: (p, ctx) => this.workspacePrepare(p, ctx),
    export: (p, ctx) => this.workspaceExport(p, ctx),
  };

  /** vm.create.plan: what vm.create.begin would create, resolved without touching anything. */
  async createPlan(p: T.VmCreatePlanParams): Promise<T.VmCreatePlanResult> {
    if (p.idle_pause_after !== undefined) idleParam(p.idle_pause_after);
    return planCreate(
      {
        store: this.d.store,
        vmDefaults: this.d.config.vm_defaults,
        defaultImageName: DEFAULT_IMAGE_NAME,
        nameTaken: (n) => this.nameTaken(n),
        // The same choice vm.create.begin makes.
        chooseNetwork: (req, nat) => this.d.network.chooseMode(req, nat),
        ...(this.d.secretExists ? { secretExists: this.d.secretExists } : {}),
      },
      p,
    );
  }

  /** A runner for scripts in a running VM, or not_running. */
  private guestRunner(vm: VmRow): GuestRunner {
    const t = this.d.runtime.isRunning(vm.id) ? sshTarget(this.d, vm) : undefined;
    if (!t)
      throw new ErrorResponse(
        'not_running',
        `vm "${vm.name}" is not running; start it with: banger vm start ${vm.name}`,
      );
    return sshGuestRunner(this.d.ssh, t);
  }

  async workspacePrepare(
    p: T.VmWorkspacePrepareParams,
    ctx: RpcContext,
  ): Promise<T.VmWorkspacePrepareResult> {
    const vm = this.find(p.name);
    this.used(vm);
    return this.lifecycle.exclusive(vm, 'preparing a workspace', async () => {
      const req: PrepareRequest = { path: p.path };
      if (p.guest_path !== undefined) req.guestPath = p.guest_path;
      if (p.include_untracked !== undefined) req.includeUntracked = p.include_untracked;
      if (p.mode !== undefined) req.mode = p.mode;
      const current = asWorkspace(vm.workspace);
      if (current) req.current = current;
      const workspace = await prepareWorkspace(this.guestRunner(vm), req, { signal: ctx.signal });
      this.d.store.vms.update(vm.id, { workspace });
      ctx.log.info({ vm: vm.name, files: workspace.files, bytes: workspace.bytes }, 'workspace prepared');
      return { workspace };
    });
  }

  async workspaceExport(p: T.VmWorkspaceExportParams, ctx: RpcContext): Promise<T.VmWorkspaceExportResult> {
    const vm = this.find(p.name);
    const ws = asWorkspace(vm.workspace);
    if (!ws)
      throw new ErrorResponse(
        'conflict',
        `vm "${vm.name}" has no workspace; copy one in with: banger vm workspace prepare ${vm.name} PATH`,
      );
    this.used(vm);
    return this.lifecycle.exclusive(vm, 'exporting its workspace', () =>
      exportWorkspace(this.guestRunner(vm), ws, p.base_commit, { signal: ctx.signal }),
    );
  }

  /** vm.ports: listening TCP ports in the guest, over SSH. */
  async ports(p: T.VmPortsParams): Promise<T.VmPortsResult> {
    const vm = this.find(p.name);
    const t = this.d.runtime.isRunning(vm.id) ? sshTarget(this.d, vm) : undefined;
    if (!t)
      throw new ErrorResponse(
        'not_running',
        `vm "${vm.name}" is not running; start it with: banger vm start ${vm.name}`,
      );
    const r = await sshExec(this.d.ssh, t, SS_COMMAND, { timeoutMs: 20_000 });
    if (r.code !== 0)
      throw new ErrorResponse(
        'operation_failed',
        `${SS_COMMAND} in ${vm.name} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
      );
    const bridged = vm.networkMode === 'bridge';
    const out: T.VmPortsResult = {
      name: vm.name,
      ports: parseSsListen(r.stdout, bridged ? `${vm.name}.vm` : undefined),
    };
    if (vm.guestIp) out.guest_ip = vm.guestIp;
    return out;
  }

  isRunningByName(name: string): boolean {
    const row = this.d.store.vms.getByName(name);
    return !!row && this.d.runtime.isRunning(row.id);
  }
}
