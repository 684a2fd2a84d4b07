// The Firecracker driver: spawn `firecracker --api-sock ...` detached, replay the planned API
// calls, InstanceStart. Serial console = Firecracker's stdout, appended to the serial log.
// Not installable on the development hosts (no usable KVM): tests run it against a fake API.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { delimiter, isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';
import type {
  ExitInfo,
  FirecrackerLaunchPlan,
  HandleRecord,
  LaunchPlan,
  ReattachOptions,
  StartOptions,
  VmLaunchSpec,
  VmmApiRequest,
  VmmDriver,
  VmmEvent,
  VmmEventListener,
  VmmHandle,
  VmmStatus,
  VmmStatusDetail,
} from './driver.ts';
import { EngineError } from './errors.ts';
import { describeExit, EventHub, pollLiveness } from './events.ts';
import {
  DEFAULT_FIRECRACKER_BINARY,
  fcDescribeInstance,
  fcInstanceStart,
  fcResume,
  fcSendCtrlAltDel,
  firecrackerInstanceId,
  mapFirecrackerState,
  prepareFirecrackerPlan,
} from './firecracker-api.ts';
import { readHandles, writeHandles } from './handles.ts';
import { silentLogger, type EngineLogger } from './log.ts';
import { hostProcFs, isSameLiveProcess, runsProgram, type ProcFs } from './proc.ts';
import { ProcessWatch, readLogFrom, sleep, spawnDetached } from './process.ts';

export interface ApiResponse {
  status: number;
  body: unknown;
}

/** One HTTP request over Firecracker's unix socket; non-2xx rejects with EngineError('api_error'). */
export function firecrackerCall(
  socketPath: string,
  req: VmmApiRequest,
  timeoutMs = 5_000,
): Promise<ApiResponse> {
  return new Promise((resolve, reject) => {
    const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
    const headers: Record<string, string | number> = { Accept: 'application/json' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    const r = request(
      { socketPath, method: req.method, path: req.path, headers, timeout: timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            // keep the text
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            resolve({ status, body });
            return;
          }
          const fault =
            typeof body === 'object' && body !== null && 'fault_message' in body
              ? String((body as { fault_message: unknown }).fault_message)
              : text || `HTTP ${status}`;
          reject(
            new EngineError('api_error', `Firecracker ${req.method} ${req.path}: ${fault}`, {
              details: { status, method: req.method, path: req.path, fault },
            }),
          );
        });
      },
    );
    r.on('timeout', () =>
      r.destroy(new EngineError('timeout', `Firecracker ${req.method} ${req.path} timed out`)),
    );
    r.on('error', reject);
    if (payload !== undefined) r.write(payload);
    r.end();
  });
}

/** Send the plan's configuration calls in order, then InstanceStart. */
export async function configureAndBoot(socketPath: string, requests: VmmApiRequest[]): Promise<void> {
  for (const req of requests) await firecrackerCall(socketPath, req);
  await firecrackerCall(socketPath, fcInstanceStart);
}

export interface FirecrackerDriverOptions {
  binary?: string;
  procfs?: ProcFs;
  logger?: EngineLogger;
}

export class FirecrackerDriver implements VmmDriver {
  readonly name = 'firecracker' as const;
  private readonly binary: string;
  private readonly procfs: ProcFs;
  private readonly logger: EngineLogger;

  constructor(opts: FirecrackerDriverOptions = {}) {
    this.binary = opts.binary ?? DEFAULT_FIRECRACKER_BINARY;
    this.procfs = opts.procfs ?? hostProcFs;
    this.logger = opts.logger ?? silentLogger;
  }

  prepare(spec: VmLaunchSpec): FirecrackerLaunchPlan {
    return prepareFirecrackerPlan(spec, { binary: this.binary });
  }

  async start(plan: LaunchPlan, opts: StartOptions = {}): Promise<FirecrackerHandle> {
    if (plan.driver !== 'firecracker') {
      throw new EngineError('unsupported', `Firecracker driver cannot start a ${plan.driver} plan`);
    }
    const log = opts.logger ?? this.logger;
    const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
    const { files } = plan;
    const api = files.apiSocket as string;
    await mkdir(files.vmDir, { recursive: true });
    const existing = await this.liveRecord(files.vmDir, log);
    if (existing) {
      throw new EngineError('already_running', `VM ${plan.id} already runs as pid ${existing.pid}`, {
        details: { pid: existing.pid },
      });
    }
    await rm(api, { force: true });
    if (files.agentSocket) await rm(files.agentSocket, { force: true });
    // Older Firecracker versions refuse a --log-path that does not exist.
    if (files.vmmLog) await writeFile(files.vmmLog, '', { flag: 'a' });

    const t0 = Date.now();
    const spawned = await spawnDetached(plan.binary, plan.argv, {
      cwd: files.vmDir,
      stderrPath: files.stderrLog,
      stdoutPath: files.serialLog,
    });
    const record: HandleRecord = {
      version: 1,
      driver: 'firecracker',
      id: plan.id,
      pid: spawned.pid,
      startTime: this.procfs.stat(spawned.pid)?.startTime ?? 0,
      bootId: this.procfs.bootId(),
      binary: plan.binary,
      argvHash: plan.argvHash,
      startedAt: new Date(t0).toISOString(),
      files,
    };
    const watch = new ProcessWatch(record.pid, record.startTime, {
      procfs: this.procfs,
      childExit: spawned.exited,
    });
    const fail = async (why: string, cause?: unknown): Promise<never> => {
      if (watch.signal('SIGKILL')) await watch.waitExitFor(3_000);
      const stderr = (await readLogFrom(files.stderrLog, spawned.stderrOffset)).trim();
      log.error({ vm: plan.id, pid: record.pid, stderr, err: cause }, 'firecracker start failed');
      throw new EngineError(
        'start_failed',
        `Firecracker for VM ${plan.id} ${why}${stderr ? `: ${stderr}` : ''}`,
        {
          cause,
          details: { pid: record.pid, stderr },
        },
      );
    };
    if (record.startTime === 0) return fail('exited immediately');
    await writeHandles(files.vmDir, record);

    for (;;) {
      if (!watch.isAlive()) return fail('exited during startup');
      if (Date.now() - t0 > readyTimeoutMs) return fail(`API did not answer within ${readyTimeoutMs} ms`);
      try {
        await firecrackerCall(api, fcDescribeInstance, 1_000);
        break;
      } catch {
        await sleep(25);
      }
    }
    try {
      await configureAndBoot(api, plan.apiRequests);
    } catch (err) {
      return fail(`rejected its configuration (${(err as Error).message})`, err);
    }
    if (opts.settleMs && (await watch.waitExitFor(opts.settleMs)))
      return fail('exited right after InstanceStart');
    log.info({ vm: plan.id, pid: record.pid, readyMs: Date.now() - t0 }, 'firecracker started');
    return new FirecrackerHandle(record, watch, log, { stderrOffset: spawned.stderrOffset });
  }

  async reattach(vmDir: string, opts: ReattachOptions = {}): Promise<FirecrackerHandle | null> {
    const log = opts.logger ?? this.logger;
    const record = await this.liveRecord(vmDir, log);
    if (!record) return null;
    const stderrOffset = await stat(record.files.stderrLog).then(
      (s) => s.size,
      () => 0,
    );
    const handle = new FirecrackerHandle(
      record,
      new ProcessWatch(record.pid, record.startTime, { procfs: this.procfs }),
      log,
      { stderrOffset },
    );
    try {
      const info = await firecrackerCall(
        record.files.apiSocket as string,
        fcDescribeInstance,
        opts.timeoutMs ?? 3_000,
      );
      const id = (info.body as { id?: unknown } | undefined)?.id;
      if (typeof id === 'string' && id !== firecrackerInstanceId(record.id)) {
        throw new EngineError('identity_mismatch', `Firecracker API answers for ${id}, not ${record.id}`);
      }
    } catch (err) {
      if (err instanceof EngineError && err.code === 'identity_mismatch') throw err;
      log.warn({ vm: record.id, err }, 'reattach: Firecracker API does not answer');
    }
    return handle;
  }

  private async liveRecord(vmDir: string, log: EngineLogger): Promise<HandleRecord | null> {
    const res = await readHandles(vmDir);
    if (!res.ok) {
      if (res.reason === 'invalid')
        log.warn({ vmDir, detail: res.detail }, 'reattach: unreadable handles.json');
      return null;
    }
    const r = res.record;
    const ok =
      r.driver === 'firecracker' &&
      r.bootId === this.procfs.bootId() &&
      isSameLiveProcess(this.procfs, r.pid, r.startTime) &&
      runsProgram(this.procfs, r.pid, 'firecracker');
    return ok ? r : null;
  }
}

/**
 * A live Firecracker VM. Its API has no event stream, so onEvent delivers only `exit` (an
 * unref'd liveness poll, or the child's exit); pause state comes from GET / and PATCH /vm.
 */
export class FirecrackerHandle implements VmmHandle {
  readonly driver = 'firecracker' as const;
  readonly record: HandleRecord;
  readonly qmp = undefined;
  private readonly watch: ProcessWatch;
  private readonly logger: EngineLogger;
  private readonly hub: EventHub;
  private readonly stderrOffset: number;
  private stopLiveness: (() => void) | undefined;
  private exitMemo: Promise<{ raw: ExitInfo; info: ExitInfo }> | undefined;
  private exitEvent: Extract<VmmEvent, { kind: 'exit' }> | undefined;

  constructor(
    record: HandleRecord,
    watch: ProcessWatch,
    logger: EngineLogger,
    opts: { stderrOffset?: number } = {},
  ) {
    this.record = record;
    this.watch = watch;
    this.logger = logger;
    this.hub = new EventHub(logger);
    this.stderrOffset = opts.stderrOffset ?? 0;
  }
  get id(): string {
    return this.record.id;
  }
  get pid(): number {
    return this.record.pid;
  }
  private get api(): string {
    return this.record.files.apiSocket as string;
  }

  call(req: VmmApiRequest, timeoutMs?: number): Promise<ApiResponse> {
    return firecrackerCall(this.api, req, timeoutMs);
  }

  async status(): Promise<VmmStatus> {
    return (await this.queryStatus()).status;
  }

  async statusDetail(): Promise<VmmStatusDetail> {
    const detail = await this.queryStatus();
    if (detail.status !== 'gone') return detail;
    const { info } = await this.settleExit();
    return info.reason !== undefined ? { status: 'gone', reason: info.reason } : detail;
  }

  private async queryStatus(): Promise<VmmStatusDetail> {
    if (!this.watch.isAlive()) return { status: 'gone' };
    try {
      const res = await this.call(fcDescribeInstance, 3_000);
      const state = (res.body as { state?: unknown } | undefined)?.state;
      const status = mapFirecrackerState(state);
      if (status === 'running') return { status };
      return { status, reason: state === 'Not started' ? 'not-started' : 'paused' };
    } catch (err) {
      if (!this.watch.isAlive()) return { status: 'gone' };
      return { status: 'unresponsive', reason: err instanceof Error ? err.message : String(err) };
    }
  }

  /** PATCH /vm {state: Resumed}; Firecracker refuses it for a VM that never started. */
  async resume(): Promise<void> {
    if (!this.watch.isAlive())
      throw new EngineError('not_running', `VM ${this.id} (pid ${this.pid}) is gone`);
    await this.call(fcResume, 5_000);
  }

  onEvent(listener: VmmEventListener): () => void {
    const exit = this.exitEvent;
    if (exit) {
      queueMicrotask(() => listener(exit));
      return () => {};
    }
    const off = this.hub.add(listener);
    if (!this.stopLiveness) {
      this.stopLiveness = pollLiveness(
        () => this.watch.isAlive(),
        () => void this.settleExit(),
      );
      void this.watch.childExit?.then(() => {
        if (this.stopLiveness) void this.settleExit();
      });
    }
    return off;
  }

  async shutdownGraceful(timeoutMs: number): Promise<'clean' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    if (!this.watch.isAlive()) return 'clean';
    try {
      // Firecracker exits when the guest resets; Ctrl-Alt-Del makes a Linux guest do that.
      await this.call(fcSendCtrlAltDel, Math.min(3_000, timeoutMs));
    } catch (err) {
      if (!this.watch.isAlive()) return 'clean';
      this.logger.warn({ vm: this.id, err }, 'graceful shutdown: SendCtrlAltDel failed');
      return 'timeout';
    }
    const exited = await this.watch.waitExitFor(Math.max(0, deadline - Date.now()));
    if (exited) await this.settleExit();
    return exited ? 'clean' : 'timeout';
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.watch.signal(signal)) return;
    if ((signal === 'SIGKILL' || signal === 'SIGTERM') && !(await this.watch.waitExitFor(5_000))) {
      throw new EngineError('timeout', `VM ${this.id} (pid ${this.pid}) survived ${signal} for 5 s`);
    }
  }

  /** The wait status (code/signal); why it ended is in the `exit` event. */
  async waitExit(): Promise<ExitInfo> {
    return (await this.settleExit()).raw;
  }

  private settleExit(): Promise<{ raw: ExitInfo; info: ExitInfo }> {
    this.exitMemo ??= this.watch.waitExit().then(async (raw) => {
      const stderr = await readLogFrom(this.record.files.stderrLog, this.stderrOffset);
      const info = describeExit(raw, { stderr });
      if (!this.exitEvent) {
        this.exitEvent = { kind: 'exit', at: new Date().toISOString(), info };
        this.stopLiveness?.();
        this.hub.emit(this.exitEvent);
        this.hub.clear();
      }
      return { raw, info };
    });
    return this.exitMemo;
  }

  async release(): Promise<void> {
    this.hub.clear();
    this.stopLiveness?.();
    this.stopLiveness = undefined;
    this.watch.stop();
    if (!this.exitEvent) this.exitMemo = undefined;
  }
}

export interface FirecrackerAvailability {
  available: boolean;
  reason: string;
  path?: string;
  version?: string;
}

/** Is there a runnable firecracker binary and a usable /dev/kvm? */
export async function detectFirecracker(
  opts: { binary?: string; devKvm?: string; pathEnv?: string } = {},
): Promise<FirecrackerAvailability> {
  const binary = opts.binary ?? DEFAULT_FIRECRACKER_BINARY;
  const candidates = isAbsolute(binary)
    ? [binary]
    : (opts.pathEnv ?? process.env.PATH ?? '')
        .split(delimiter)
        .filter((d) => d.length > 0)
        .map((d) => join(d, binary));
  let found: string | undefined;
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      found = c;
      break;
    } catch {
      // next
    }
  }
  if (!found) return { available: false, reason: `${binary} not found on PATH` };
  const devKvm = opts.devKvm ?? '/dev/kvm';
  try {
    await access(devKvm, constants.R_OK | constants.W_OK);
  } catch {
    return { available: false, reason: `${devKvm} missing or not read/writable`, path: found };
  }
  try {
    const { stdout } = await promisify(execFile)(found, ['--version'], { timeout: 5_000 });
    const version = stdout.split('\n')[0]?.trim() ?? '';
    return { available: true, reason: 'firecracker binary and /dev/kvm present', path: found, version };
  } catch (err) {
    return { available: false, reason: `${found} --version failed: ${(err as Error).message}`, path: found };
  }
}

export async function isFirecrackerAvailable(
  opts: { binary?: string; devKvm?: string } = {},
): Promise<boolean> {
  return (await detectFirecracker(opts)).available;
}
