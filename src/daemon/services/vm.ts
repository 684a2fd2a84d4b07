// The VM service: lifecycle methods of schema/methods.json's vm.* namespace. Long work (create)
// runs as an operation whose id is the op id of the RPC that began it.
import { rm } from 'node:fs/promises';
import type { VmService } from '../../../generated/handlers.gen.ts';
import type * as T from '../../../generated/types.gen.ts';
import type { RpcContext } from '../../rpc/context.ts';
import { ErrorResponse, notFound } from '../../rpc/errors.ts';
import type { Store, VmRow } from '../../store/index.ts';
import type { DaemonConfig } from '../config.ts';
import type { OperationRegistry } from '../../ops/operations.ts';
import { vmToWire } from '../../vm/convert.ts';
import { runCreate, type CreateDeps } from '../../vm/create.ts';
import { diskInfo } from '../../vm/disk.ts';
import { macFor, vmFiles } from '../../vm/layout.ts';
import { BootStalledError, bootVmm, killVmm, sshTarget, waitReady } from '../../vm/machine.ts';
import { randomVmName, validateVmName } from '../../vm/names.ts';
import { procUsage } from '../../vm/procstat.ts';
import { parseSize } from '../../vm/sizes.ts';
import { hostKeyAlias, SSH_KEX_ALGORITHMS, sshExec, unpinHostKey } from '../../vm/ssh.ts';
import { newId } from '../../store/index.ts';
import { parseSsListen, SS_COMMAND } from '../guest-ports.ts';
import { modeWithoutNetwork as rootlessMode, requireNetwork } from '../../vm/network.ts';
import { planCreate } from '../../vm/plan.ts';
import {
  asWorkspace,
  exportWorkspace,
  prepareWorkspace,
  sshGuestRunner,
  type GuestRunner,
  type PrepareRequest,
} from '../../vm/workspace.ts';
import { DEFAULT_IMAGE_NAME } from './image.ts';

export interface VmServiceDeps extends CreateDeps {
  store: Store;
  ops: OperationRegistry;
  config: DaemonConfig;
}

const DEFAULT_STOP_TIMEOUT_MS = 30_000;

export class VmServiceImpl implements VmService {
  private readonly d: VmServiceDeps;
  /** VM id → what it is busy with; one lifecycle operation per VM at a time. */
  private readonly busy = new Map<string, string>();

  constructor(deps: VmServiceDeps) {
    this.d = deps;
  }

  // ---- helpers -------------------------------------------------------------------------

  find(ref: string): VmRow {
    const row = this.d.store.vms.getByName(ref) ?? this.d.store.vms.getById(ref);
    if (!row) throw notFound(`vm "${ref}"`);
    return row;
  }

  wire(row: VmRow): T.Vm {
    return vmToWire(this.d, row, this.d.store.images.getById(row.imageId));
  }

  private async exclusive<R>(vm: VmRow, what: string, fn: () => Promise<R>): Promise<R> {
    const cur = this.busy.get(vm.id);
    if (cur) throw new ErrorResponse('conflict', `vm "${vm.name}" is busy (${cur})`);
    this.busy.set(vm.id, what);
    try {
      return await fn();
    } finally {
      this.busy.delete(vm.id);
    }
  }

  /** Called by the runtime when a VMM exits. */
  onVmmExit(vmId: string, expected: boolean): void {
    const row = this.d.store.vms.getById(vmId);
    if (!row) return;
    if (!expected && (row.state === 'running' || row.state === 'starting')) {
      this.d.log.warn({ vm: row.name }, 'VMM exited on its own; marking the VM stopped');
      this.d.store.vms.update(vmId, { state: 'stopped' });
    }
  }

  /** Start-up: find VMs that kept running while the daemon was away. */
  async reconcile(): Promise<void> {
    for (const row of this.d.store.vms.list()) {
      if (row.state === 'creating') {
        // A create interrupted by a daemon crash: its pipeline is gone; mark it failed.
        this.d.store.vms.update(row.id, {
          state: 'error',
          lastError: 'create interrupted by a daemon restart',
        });
        continue;
      }
      const h = await this.d.runtime.reattach(row.id, vmFiles(this.d.stateDir, row.id).dir).catch(() => null);
      if (h) {
        if (row.state !== 'running') this.d.store.vms.update(row.id, { state: 'running' });
        this.d.log.info({ vm: row.name, pid: h.pid }, 'reattached to running VM');
      } else if (row.state === 'running' || row.state === 'starting' || row.state === 'stopping') {
        this.d.store.vms.update(row.id, { state: 'stopped' });
        this.d.log.info({ vm: row.name }, 'VM stopped while the daemon was away');
      }
    }
  }

  // ---- create ----------------------------------------------------------------------------

  /** Names of VMs being created whose rows do not exist yet (their image may still be building). */
  private readonly reserved = new Map<string, string>();

  private nameTaken(name: string): boolean {
    return this.reserved.has(name) || !!this.d.store.vms.getByName(name);
  }

  async createBegin(p: T.VmCreateBeginParams, ctx: RpcContext): Promise<T.VmCreateBeginResult> {
    const cfg = this.d.config.vm_defaults;
    const name = p.name !== undefined ? validateVmName(p.name) : randomVmName((n) => this.nameTaken(n));
    if (this.nameTaken(name)) throw new ErrorResponse('already_exists', `vm "${name}" already exists`);
    const networkMode = this.d.network
      ? await this.d.network.chooseMode(p.network, p.nat ?? false)
      : rootlessMode(p.network, p.nat ?? false);
    if (p.image !== undefined && !this.d.store.images.getByName(p.image))
      throw notFound(`image "${p.image}"`);
    const diskSizeBytes = parseSize(p.disk_size ?? cfg.disk_size, 'disk size');
    if (diskSizeBytes < 512 * 1024 * 1024)
      throw new ErrorResponse('bad_request', 'disk size must be at least 512M');
    const id = newId();
    const t = this.d.ops.begin(ctx.opId, 'vm.create', 'vm.create.begin', { vm: name });
    this.reserved.set(name, ctx.opId);
    const draft = {
      id,
      name,
      vcpus: p.vcpus ?? cfg.vcpus,
      memoryMib: p.memory_mib ?? cfg.memory_mib,
      diskSizeBytes,
      networkMode,
      mac: macFor(id),
      nat: p.nat ?? false,
    };
    this.busy.set(id, 'creating');
    // Runs on in the background inside this call's async context: its logs carry this op id.
    void runCreate(this.d, t, {
      draft,
      imageName: p.image,
      start: p.start ?? true,
      cold: p.cold ?? false,
      onRecorded: () => this.reserved.delete(name),
    })
      .then(() => t.succeed())
      .catch(async (err: unknown) => {
        this.d.log.warn(
          { err: err instanceof Error ? err.message : String(err), vm: name },
          'create failed; undoing',
        );
        await t.rollback();
        t.fail(err);
      })
      .finally(() => {
        this.busy.delete(id);
        this.reserved.delete(name);
      });
    return { operation_id: ctx.opId, name };
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

  async start(p: T.VmStartParams, ctx: RpcContext): Promise<T.VmStartResult> {
    const vm = this.find(p.name);
    return this.exclusive(vm, 'starting', async () => ({
      vm: this.wire(await this.startRow(vm, ctx.signal)),
    }));
  }

  private async startRow(vm: VmRow, signal: AbortSignal): Promise<VmRow> {
    if (this.d.runtime.isRunning(vm.id))
      throw new ErrorResponse('conflict', `vm "${vm.name}" is already running`);
    if (vm.state === 'creating' || vm.state === 'deleting')
      throw new ErrorResponse('conflict', `vm "${vm.name}" is ${vm.state}`);
    const image = this.d.store.images.getById(vm.imageId);
    const kernel = image ? this.d.store.kernels.getById(image.kernelId) : undefined;
    if (!image || !kernel)
      throw new ErrorResponse('conflict', `vm "${vm.name}": its image or kernel is gone`);
    let row = this.d.store.vms.update(vm.id, { state: 'starting' });
    try {
      // Bridged: make sure bridge, tap and NAT are there (a host reboot removes them).
      if (row.networkMode === 'bridge') await requireNetwork(this.d, row).attach(row);
      // A client that goes away does not abort a start; the VM just keeps booting.
      void signal;
      for (let attempt = 1; ; attempt++) {
        await bootVmm(this.d, row, kernel, 'vm.start');
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
      return this.d.store.vms.update(vm.id, { state: 'running', lastError: null });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      const state = this.d.runtime.isRunning(vm.id) ? 'running' : 'error';
      this.d.store.vms.update(vm.id, { state, lastError: msg });
      throw err;
    }
  }

  private async stopRow(
    vm: VmRow,
    timeoutMs: number,
  ): Promise<{ row: VmRow; clean: boolean; forced: boolean }> {
    const h = this.d.runtime.get(vm.id);
    if (!h) throw new ErrorResponse('not_running', `vm "${vm.name}" is not running`);
    this.d.store.vms.update(vm.id, { state: 'stopping' });
    this.d.runtime.expectExit(vm.id);
    const res = await h.shutdownGraceful(timeoutMs);
    let forced = false;
    if (res === 'timeout') {
      this.d.log.warn(
        { vm: vm.name, timeout_ms: timeoutMs },
        'guest did not power off in time; killing the VMM',
      );
      await h.kill('SIGKILL');
      forced = true;
    }
    await h.waitExit();
    const row = this.d.store.vms.update(vm.id, { state: 'stopped' });
    return { row, clean: !forced, forced };
  }

  async stop(p: T.VmStopParams): Promise<T.VmStopResult> {
    const vm = this.find(p.name);
    return this.exclusive(vm, 'stopping', async () => {
      const r = await this.stopRow(vm, p.timeout_ms ?? DEFAULT_STOP_TIMEOUT_MS);
      return { vm: this.wire(r.row), clean: r.clean, forced: r.forced };
    });
  }

  async restart(p: T.VmRestartParams, ctx: RpcContext): Promise<T.VmRestartResult> {
    const vm = this.find(p.name);
    return this.exclusive(vm, 'restarting', async () => {
      if (this.d.runtime.isRunning(vm.id)) await this.stopRow(vm, DEFAULT_STOP_TIMEOUT_MS);
      return { vm: this.wire(await this.startRow(this.find(vm.id), ctx.signal)) };
    });
  }

  async kill(p: T.VmKillParams): Promise<T.VmKillResult> {
    const vm = this.find(p.name);
    const h = this.d.runtime.get(vm.id);
    if (!h) throw new ErrorResponse('not_running', `vm "${vm.name}" is not running`);
    this.d.runtime.expectExit(vm.id);
    await h.kill(`SIG${p.signal ?? 'KILL'}` as NodeJS.Signals);
    const exited = await Promise.race([
      h.waitExit().then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
    ]);
    if (!exited)
      throw new ErrorResponse(
        'operation_failed',
        `vm "${vm.name}" did not exit after SIG${p.signal ?? 'KILL'}`,
      );
    return { vm: this.wire(this.d.store.vms.update(vm.id, { state: 'stopped' })) };
  }

  async delete(p: T.VmDeleteParams): Promise<T.VmDeleteResult> {
    const vm = this.find(p.name);
    return this.exclusive(vm, 'deleting', async () => {
      await this.deleteRow(vm);
      return { name: vm.name, deleted: true as const };
    });
  }

  private async deleteRow(vm: VmRow): Promise<void> {
    if (this.d.runtime.isRunning(vm.id)) await this.stopRow(vm, 10_000);
    this.d.store.vms.update(vm.id, { state: 'deleting' });
    if (vm.networkMode === 'bridge' && this.d.network) {
      // Tap and NAT go with the VM; if the helper fails now, start-up reconciliation collects them.
      await this.d.network
        .detach(vm)
        .catch((err: unknown) =>
          this.d.log.warn({ vm: vm.name, err: (err as Error).message }, 'could not remove the VM network'),
        );
    }
    await unpinHostKey(this.d.ssh, hostKeyAlias(vm.name));
    await rm(vmFiles(this.d.stateDir, vm.id).dir, { recursive: true, force: true });
    this.d.store.vms.delete(vm.id);
    if (vm.warmTemplate) this.d.warm?.vmDeleted?.(vm);
  }

  async set(p: T.VmSetParams): Promise<T.VmSetResult> {
    const vm = this.find(p.name);
    if (p.vcpus === undefined && p.memory_mib === undefined)
      throw new ErrorResponse('bad_request', 'nothing to change: give vcpus or memory_mib');
    return this.exclusive(vm, 'updating', async () => {
      if (this.d.runtime.isRunning(vm.id) || vm.state !== 'stopped') {
        throw new ErrorResponse(
          'conflict',
          `vm "${vm.name}" must be stopped to change its size (it is ${vm.state})`,
        );
      }
      const patch: { vcpus?: number; memoryMib?: number } = {};
      if (p.vcpus !== undefined) patch.vcpus = p.vcpus;
      if (p.memory_mib !== undefined) patch.memoryMib = p.memory_mib;
      return { vm: this.wire(this.d.store.vms.update(vm.id, patch)) };
    });
  }

  async prune(p: T.VmPruneParams): Promise<T.VmPruneResult> {
    const deleted: string[] = [];
    const kept: string[] = [];
    for (const vm of this.d.store.vms.list()) {
      const prunable =
        (vm.state === 'stopped' || vm.state === 'error') &&
        !this.d.runtime.isRunning(vm.id) &&
        !this.busy.has(vm.id);
      if (!prunable) {
        kept.push(vm.name);
        continue;
      }
      if (!p.dry_run) await this.exclusive(vm, 'deleting', () => this.deleteRow(vm));
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
    const r: T.VmHealthResult = {
      name: vm.name,
      state: vm.state,
      kernel_up:
        /Linux version/.test(lastBoot) || (this.d.runtime.isRunning(vm.id) && /Linux version/.test(serial)),
      userspace_up: false,
      ssh_ready: false,
      checked_at: new Date().toISOString(),
    };
    const t = sshTarget(this.d, vm);
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

  /** vm.ssh: validate first so the caller gets not_found / not_running. */
  sshDetails(name: string): T.VmSshResult {
    const vm = this.find(name);
    const t = this.d.runtime.isRunning(vm.id) ? sshTarget(this.d, vm) : undefined;
    if (!t)
      throw new ErrorResponse(
        'not_running',
        `vm "${vm.name}" is not running; start it with: banger vm start ${vm.name}`,
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
      ],
    };
  }

  // ---- workspaces (src/vm/workspace.ts does the work) --------------------------------------

  /** vm.create.plan: what vm.create.begin would create, resolved without touching anything. */
  async createPlan(p: T.VmCreatePlanParams): Promise<T.VmCreatePlanResult> {
    return planCreate(
      {
        store: this.d.store,
        vmDefaults: this.d.config.vm_defaults,
        defaultImageName: DEFAULT_IMAGE_NAME,
        nameTaken: (n) => this.nameTaken(n),
        // The same choice vm.create.begin makes.
        chooseNetwork: (req, nat) =>
          this.d.network ? this.d.network.chooseMode(req, nat) : Promise.resolve(rootlessMode(req, nat)),
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
    return this.exclusive(vm, 'preparing a workspace', async () => {
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
    return this.exclusive(vm, 'exporting its workspace', () =>
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
