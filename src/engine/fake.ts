// A recording fake VmmDriver for daemon tests: every operation lands in a transcript, any named
// operation can be made to fail, and a shared FakeVmmHost lets a second driver instance
// "reattach" to VMs started by the first one (a simulated daemon restart).
import type {
  DriverName,
  ExitInfo,
  HandleRecord,
  LaunchPlan,
  ReattachOptions,
  StartOptions,
  VmLaunchSpec,
  VmmDriver,
  VmmHandle,
  VmmStatus,
} from './driver.ts';
import { EngineError } from './errors.ts';
import { prepareFirecrackerPlan } from './firecracker-api.ts';
import { prepareQemuPlan } from './qemu-argv.ts';

export type FakeOpName =
  'prepare' | 'start' | 'reattach' | 'status' | 'shutdownGraceful' | 'kill' | 'waitExit' | 'release';

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
  record: HandleRecord;
  exit?: ExitInfo;
  waiters: ((e: ExitInfo) => void)[];
  /** What a graceful shutdown does: the guest powers off, or ignores the button. */
  onPowerdown: 'clean' | 'timeout';
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

  /** The guest dies on its own (crash, poweroff from inside). */
  exitVm(id: string, info: ExitInfo = { code: 0, signal: null }): void {
    const vm = this.byId(id);
    if (!vm || vm.status === 'gone') return;
    vm.status = 'gone';
    vm.exit = info;
    for (const w of vm.waiters.splice(0)) w(info);
  }

  setStatus(id: string, status: Exclude<VmmStatus, 'gone'>): void {
    const vm = this.byId(id);
    if (vm) vm.status = status;
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
    };
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
  }
}
