// A recording fake VmmDriver for daemon tests: every operation lands in a transcript, any named
// operation can be made to fail, a shared FakeVmmHost lets a second driver instance "reattach"
// to VMs started by the first one (a simulated daemon restart), and the host can make a VM emit
// events (an I/O-error pause, a stop, an exit) the way QEMU would.
import type {
  DriverName,
  ExitInfo,
  HandleRecord,
  LaunchPlan,
  ReattachOptions,
  StartOptions,
  StateFileOptions,
  VmLaunchSpec,
  VmmDriver,
  VmmEvent,
  VmmEventListener,
  VmmHandle,
  VmmStatus,
  VmmStatusDetail,
} from './driver.ts';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { EngineError } from './errors.ts';
import { describeExit, EventHub } from './events.ts';
import { silentLogger } from './log.ts';
import { prepareFirecrackerPlan } from './firecracker-api.ts';
import { prepareQemuPlan } from './qemu-argv.ts';

export type FakeOpName =
  | 'prepare'
  | 'start'
  | 'reattach'
  | 'status'
  | 'statusDetail'
  | 'resume'
  | 'saveState'
  | 'cancelSave'
  | 'loadState'
  | 'replaceDiskTop'
  | 'shutdownGraceful'
  | 'kill'
  | 'waitExit'
  | 'release';

/** An event as the fake host is told to emit it: `at` defaults to now. */
export type FakeEventInput = VmmEvent extends infer E
  ? E extends VmmEvent
    ? Omit<E, 'at'> & { at?: string }
    : never
  : never;

export interface FakeOp {
  op: FakeOpName;
  /** VM id (or vmDir for reattach). */
  target: string;
  detail?: Record<string, unknown>;
}

interface FakeVm {
  id: string;
  vmDir: string;
  pid: number;
  status: Exclude<VmmStatus, 'gone'> | 'gone';
  /** statusDetail's reason (QEMU RunState words: 'io-error', 'paused', 'postmigrate', ...). */
  reason?: string;
  record: HandleRecord;
  /** The wait status waitExit() gives. */
  exit?: ExitInfo;
  /** The same with its reason, as `exit` events and statusDetail() give it. */
  exitDescribed?: ExitInfo;
  waiters: ((e: ExitInfo) => void)[];
  /** What a graceful shutdown does: the guest powers off, or ignores the button. */
  onPowerdown: 'clean' | 'timeout';
  /** What resume() does after an io-error pause: run again, or fail the retried write again. */
  onResume: 'run' | 'io-error';
  /** The event hubs of this VM's live handles (a released handle leaves). */
  hubs: Set<EventHub>;
  /** What QEMU checks when loading a state: vCPUs, RAM size, disks, RAM block name. */
  layout: string;
  /** Disk index → the file its top is now (replaceDiskTop), for tests. */
  diskTops: Map<number, string>;
  /** The last block_io_error, replayed by resume() when onResume is 'io-error'. */
  lastIoError?: Extract<VmmEvent, { kind: 'block_io_error' }>;
}

/** The fake "host": VMs live here, independent of any one driver instance. */
export class FakeVmmHost {
  readonly vms = new Map<string, FakeVm>();
  private nextPid = 40_000;

  allocPid(): number {
    return this.nextPid++;
  }

  byId(id: string): FakeVm | undefined {
    for (const vm of this.vms.values()) if (vm.id === id) return vm;
    return undefined;
  }

  /**
   * The VMM process ends (guest crash, poweroff from inside, kill -9 from outside): waitExit()
   * gets the wait status, `exit` listeners and statusDetail() also a reason (as the real
   * drivers: `info.reason` if given, else describeExit's words).
   */
  exitVm(id: string, info: ExitInfo = { code: 0, signal: null }): void {
    const vm = this.byId(id);
    if (!vm || vm.status === 'gone') return;
    const full = info.reason !== undefined ? info : describeExit(info);
    const raw: ExitInfo = { code: info.code, signal: info.signal };
    vm.status = 'gone';
    delete vm.reason;
    vm.exit = raw;
    vm.exitDescribed = full;
    for (const w of vm.waiters.splice(0)) w(raw);
    this.deliver(vm, { kind: 'exit', at: new Date().toISOString(), info: full });
    vm.hubs.clear();
  }

  setStatus(id: string, status: Exclude<VmmStatus, 'gone'>, reason?: string): void {
    const vm = this.byId(id);
    if (!vm) return;
    vm.status = status;
    if (reason === undefined) delete vm.reason;
    else vm.reason = reason;
  }

  /**
   * Make VM `id` emit `event` to its handles' listeners, moving its status as QEMU would:
   * stop -> paused ('paused', or 'io-error' right after a stopping block_io_error), resume ->
   * running, exit -> gone (same as exitVm). A shutdown event changes nothing by itself.
   */
  emit(id: string, event: FakeEventInput): void {
    const vm = this.byId(id);
    if (!vm || vm.status === 'gone') return;
    const e = { ...event, at: event.at ?? new Date().toISOString() } as VmmEvent;
    if (e.kind === 'exit') {
      this.exitVm(id, e.info);
      return;
    }
    if (e.kind === 'stop') {
      vm.status = 'paused';
      vm.reason = vm.reason === 'io-error' ? 'io-error' : 'paused';
    } else if (e.kind === 'resume') {
      vm.status = 'running';
      delete vm.reason;
    } else if (e.kind === 'block_io_error') {
      vm.lastIoError = e;
      if (e.action === 'stop') vm.reason = 'io-error';
    }
    this.deliver(vm, e);
  }

  /**
   * QEMU's sequence for a write that hit a full host disk (werror=enospc/stop): BLOCK_IO_ERROR
   * (nospace), then STOP; the VM is then paused with reason 'io-error'.
   */
  ioError(
    id: string,
    opts: { device?: string; nospace?: boolean; operation?: 'read' | 'write'; reason?: string } = {},
  ): void {
    const nospace = opts.nospace ?? true;
    this.emit(id, {
      kind: 'block_io_error',
      device: opts.device ?? 'disk0',
      operation: opts.operation ?? 'write',
      action: 'stop',
      nospace,
      reason: opts.reason ?? (nospace ? 'No space left on device' : 'Input/output error'),
    });
    this.emit(id, { kind: 'stop' });
  }

  /** What resume() does after an io-error pause: 'run' (space is back) or fail again ('io-error'). */
  setResumeBehaviour(id: string, behaviour: 'run' | 'io-error'): void {
    const vm = this.byId(id);
    if (vm) vm.onResume = behaviour;
  }

  /** @internal */
  deliver(vm: FakeVm, e: VmmEvent): void {
    for (const hub of [...vm.hubs]) hub.emit(e);
  }

  /** Make the guest ignore (or honour) the power button. */
  setPowerdownBehaviour(id: string, behaviour: 'clean' | 'timeout'): void {
    const vm = this.byId(id);
    if (vm) vm.onPowerdown = behaviour;
  }
}

interface Failure {
  op: FakeOpName;
  target: string | undefined;
  error: Error;
  times: number;
}

export class FakeVmmDriver implements VmmDriver {
  readonly name: DriverName;
  readonly host: FakeVmmHost;
  readonly transcript: FakeOp[] = [];
  private failures: Failure[] = [];

  constructor(opts: { name?: DriverName; host?: FakeVmmHost } = {}) {
    this.name = opts.name ?? 'qemu';
    this.host = opts.host ?? new FakeVmmHost();
  }

  /**
   * Make the next `times` (default 1, Infinity for always) calls of `op` fail, optionally only
   * for one VM id (or vmDir for reattach).
   */
  failOn(op: FakeOpName, opts: { target?: string; error?: Error | string; times?: number } = {}): this {
    const error =
      opts.error instanceof Error
        ? opts.error
        : new EngineError(op === 'start' ? 'start_failed' : 'timeout', opts.error ?? `fake: ${op} failed`);
    this.failures.push({ op, target: opts.target, error, times: opts.times ?? 1 });
    return this;
  }

  /** Transcript as compact strings, e.g. ["prepare vm1", "start vm1", "kill vm1 SIGKILL"]. */
  ops(): string[] {
    return this.transcript.map((t) => {
      const extra = t.detail && 'signal' in t.detail ? ` ${String(t.detail.signal)}` : '';
      return `${t.op} ${t.target}${extra}`;
    });
  }

  /** @internal: record an op and throw if a failure is armed for it. */
  record(op: FakeOpName, target: string, detail?: Record<string, unknown>): void {
    this.transcript.push(detail === undefined ? { op, target } : { op, target, detail });
    const f = this.failures.find((x) => x.op === op && (x.target === undefined || x.target === target));
    if (!f) return;
    f.times -= 1;
    if (f.times <= 0) this.failures = this.failures.filter((x) => x !== f);
    throw f.error;
  }

  prepare(spec: VmLaunchSpec): LaunchPlan {
    this.record('prepare', spec.id);
    // The real pure builders: specs a real driver would reject are rejected here too.
    return this.name === 'qemu'
      ? prepareQemuPlan(spec, { hostTscKhz: 2_000_000 })
      : prepareFirecrackerPlan(spec);
  }

  async start(plan: LaunchPlan, _opts?: StartOptions): Promise<VmmHandle> {
    this.record('start', plan.id);
    const existing = this.host.vms.get(plan.files.vmDir);
    if (existing && existing.status !== 'gone') {
      throw new EngineError('already_running', `VM ${plan.id} already runs as pid ${existing.pid}`);
    }
    const pid = this.host.allocPid();
    const record: HandleRecord = {
      version: 1,
      driver: this.name,
      id: plan.id,
      pid,
      startTime: pid,
      bootId: 'fake-boot',
      binary: plan.binary,
      argvHash: plan.argvHash,
      startedAt: new Date().toISOString(),
      files: plan.files,
    };
    if (plan.spec.net.mode === 'user') record.sshHostPort = plan.spec.net.sshHostPort;
    const vm: FakeVm = {
      id: plan.id,
      vmDir: plan.files.vmDir,
      pid,
      status: plan.spec.incoming !== undefined ? 'paused' : 'running',
      record,
      waiters: [],
      onPowerdown: 'clean',
      onResume: 'run',
      hubs: new Set(),
      layout: JSON.stringify([
        plan.spec.vcpus,
        plan.spec.memoryMiB,
        plan.spec.disks.length,
        // QEMU's RAM block names: the backend's id, or the machine's default RAM (microvm).
        plan.spec.memory?.backendId ?? (plan.spec.memory ? 'mem' : 'microvm.ram'),
      ]),
      diskTops: new Map(),
    };
    if (vm.status === 'paused') vm.reason = 'inmigrate';
    // QEMU creates a missing RAM file of a memory-backend-file (sparse, the guest's size).
    const mem = plan.spec.memory;
    if (mem && !existsSync(mem.backendFile)) writeFileSync(mem.backendFile, '');
    this.host.vms.set(vm.vmDir, vm);
    return new FakeVmmHandle(this, vm);
  }

  async reattach(vmDir: string, _opts?: ReattachOptions): Promise<VmmHandle | null> {
    this.record('reattach', vmDir);
    const vm = this.host.vms.get(vmDir);
    return vm && vm.status !== 'gone' ? new FakeVmmHandle(this, vm) : null;
  }
}

export class FakeVmmHandle implements VmmHandle {
  readonly driver: DriverName;
  private readonly fake: FakeVmmDriver;
  private readonly vm: FakeVm;
  private readonly hub = new EventHub(silentLogger);

  constructor(fake: FakeVmmDriver, vm: FakeVm) {
    this.fake = fake;
    this.vm = vm;
    this.driver = fake.name;
  }
  get id(): string {
    return this.vm.id;
  }
  get pid(): number {
    return this.vm.pid;
  }
  get record(): HandleRecord {
    return this.vm.record;
  }

  async status(): Promise<VmmStatus> {
    this.fake.record('status', this.id);
    return this.vm.status;
  }

  async statusDetail(): Promise<VmmStatusDetail> {
    this.fake.record('statusDetail', this.id);
    const { status, reason } = this.vm;
    if (status === 'gone') {
      const why = this.vm.exitDescribed?.reason;
      return why !== undefined ? { status, reason: why } : { status };
    }
    return reason !== undefined && status !== 'running' ? { status, reason } : { status };
  }

  async resume(): Promise<void> {
    this.fake.record('resume', this.id);
    const host = this.fake.host;
    if (this.vm.status === 'gone')
      throw new EngineError('not_running', `VM ${this.id} (pid ${this.pid}) is gone`);
    if (this.vm.status !== 'paused') return;
    const retryFails = this.vm.reason === 'io-error' && this.vm.onResume === 'io-error';
    host.emit(this.id, { kind: 'resume' });
    // QEMU retries the failed request on cont: on a still-full disk it fails and pauses again.
    if (retryFails) {
      const last = this.vm.lastIoError;
      host.ioError(
        this.id,
        last ? { device: last.device, nospace: last.nospace, operation: last.operation } : {},
      );
    }
  }

  /**
   * Like QEMU's migrate to a file: the guest stops (paused, 'postmigrate') and `path` gets the
   * VM's id and the launch's argv hash (loadState checks them). Fails when armed (failOn).
   */
  async saveState(path: string, opts: StateFileOptions = {}): Promise<{ durationMs: number }> {
    if (this.vm.status === 'gone') throw new EngineError('not_running', `VM ${this.id} is gone`);
    if (this.vm.status === 'running') this.fake.host.emit(this.id, { kind: 'stop' });
    this.fake.record('saveState', this.id, { path, ...opts });
    writeFileSync(
      path,
      JSON.stringify({
        fakeState: this.id,
        argvHash: this.vm.record.argvHash,
        layout: this.vm.layout,
        ignoreShared: opts.ignoreShared === true,
      }),
    );
    this.fake.host.setStatus(this.id, 'paused', 'postmigrate');
    return { durationMs: 1 };
  }

  async cancelSave(): Promise<void> {
    this.fake.record('cancelSave', this.id);
  }

  /**
   * Reads a file saveState wrote; refuses one of a VMM laid out differently (vCPUs, RAM, disks,
   * RAM block name: QEMU would fail the load), and one saved without its RAM unless this load
   * maps the RAM file too (ignoreShared), as QEMU would.
   */
  async loadState(path: string, opts: StateFileOptions = {}): Promise<{ durationMs: number }> {
    this.fake.record('loadState', this.id, { path, ...opts });
    const saved = JSON.parse(readFileSync(path, 'utf8')) as {
      fakeState?: string;
      layout?: string;
      ignoreShared?: boolean;
    };
    if (saved.fakeState !== this.id && saved.layout !== this.vm.layout)
      throw new EngineError('start_failed', `restoring VM state failed: state of ${saved.fakeState}`);
    if (saved.ignoreShared === true && opts.ignoreShared !== true)
      throw new EngineError('start_failed', 'restoring VM state failed: its RAM is not in the state');
    this.fake.host.setStatus(this.id, 'paused', 'paused');
    return { durationMs: 1 };
  }

  async replaceDiskTop(index: number, overlay: string): Promise<void> {
    if (this.vm.status === 'gone') throw new EngineError('not_running', `VM ${this.id} is gone`);
    this.fake.record('replaceDiskTop', this.id, { index, overlay });
    this.vm.diskTops.set(index, overlay);
  }

  /** Not recorded in the transcript: a subscription, not an operation on the VMM. */
  onEvent(listener: VmmEventListener): () => void {
    const exit = this.vm.exitDescribed;
    if (exit) {
      const e: VmmEvent = { kind: 'exit', at: new Date().toISOString(), info: exit };
      queueMicrotask(() => listener(e));
      return () => {};
    }
    this.vm.hubs.add(this.hub);
    return this.hub.add(listener);
  }

  async shutdownGraceful(timeoutMs: number): Promise<'clean' | 'timeout'> {
    this.fake.record('shutdownGraceful', this.id, { timeoutMs });
    if (this.vm.status === 'gone') return 'clean';
    if (this.vm.onPowerdown === 'timeout') return 'timeout';
    this.fake.host.exitVm(this.id, { code: 0, signal: null });
    return 'clean';
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    this.fake.record('kill', this.id, { signal });
    if (signal === 'SIGKILL' || signal === 'SIGTERM') this.fake.host.exitVm(this.id, { code: null, signal });
  }

  waitExit(): Promise<ExitInfo> {
    this.fake.record('waitExit', this.id);
    if (this.vm.exit) return Promise.resolve(this.vm.exit);
    return new Promise((resolve) => this.vm.waiters.push(resolve));
  }

  async release(): Promise<void> {
    this.fake.record('release', this.id);
    this.hub.clear();
    this.vm.hubs.delete(this.hub);
  }
}
