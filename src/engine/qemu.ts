// The QEMU driver: spawns `qemu-system-x86_64 -M microvm` detached so the VM outlives the
// daemon, records pid + start time + sockets in handles.json, and finds the VM again after a
// daemon restart (reattach). Control goes through QMP; kill goes through the pid, after
// checking the pid is still the process we started.
import { mkdir, rm, stat } from 'node:fs/promises';
import type {
  ExitInfo,
  HandleRecord,
  LaunchPlan,
  QemuLaunchPlan,
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
import { EngineError } from './errors.ts';
import { decodeQmpEvent, describeExit, EventHub, pollLiveness } from './events.ts';
import { readHandles, writeHandles } from './handles.ts';
import { loadState, saveState } from './migration.ts';
import { QgaHold } from './qga-hold.ts';
import { silentLogger, type EngineLogger } from './log.ts';
import { hostProcFs, isSameLiveProcess, runsProgram, type ProcFs } from './proc.ts';
import { ProcessWatch, readLogFrom, sleep, spawnDetached } from './process.ts';
import { DEFAULT_QEMU_BINARY, hostTscKhz, prepareQemuPlan } from './qemu-argv.ts';
import { isNotListening, QmpClient, type QmpEvent } from './qmp.ts';

/** Bytes/s for a save to a file (QEMU's default of 32 MiB/s made a 150 MiB save take 7 s). */
const SAVE_MAX_BANDWIDTH = 64 * 1024 * 1024 * 1024;

export interface QemuDriverOptions {
  binary?: string;
  /** Host TSC kHz for TCG guests; default: read /proc/cpuinfo once. */
  tscKhz?: number | null;
  procfs?: ProcFs;
  logger?: EngineLogger;
}

export class QemuDriver implements VmmDriver {
  readonly name = 'qemu' as const;
  private readonly binary: string;
  private readonly procfs: ProcFs;
  private readonly logger: EngineLogger;
  private tscKhz: number | null | undefined;

  constructor(opts: QemuDriverOptions = {}) {
    this.binary = opts.binary ?? DEFAULT_QEMU_BINARY;
    this.procfs = opts.procfs ?? hostProcFs;
    this.logger = opts.logger ?? silentLogger;
    this.tscKhz = opts.tscKhz;
  }

  prepare(spec: VmLaunchSpec): QemuLaunchPlan {
    // Read lazily and once: the only host fact the pure builder needs.
    if (this.tscKhz === undefined) this.tscKhz = hostTscKhz();
    return prepareQemuPlan(spec, { binary: this.binary, hostTscKhz: this.tscKhz });
  }

  async start(plan: LaunchPlan, opts: StartOptions = {}): Promise<QemuHandle> {
    if (plan.driver !== 'qemu')
      throw new EngineError('unsupported', `QEMU driver cannot start a ${plan.driver} plan`);
    const log = opts.logger ?? this.logger;
    const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
    const { files } = plan;
    const qmpPath = files.qmpSocket as string;

    await mkdir(files.vmDir, { recursive: true });
    const existing = await this.reattachIdentity(files.vmDir);
    if (existing) {
      throw new EngineError('already_running', `VM ${plan.id} already runs as pid ${existing.pid}`, {
        details: { pid: existing.pid },
      });
    }
    // Stale sockets from a previous run would make us talk to nothing (or wait on the wrong file).
    await Promise.all(
      [qmpPath, files.agentSocket, files.qgaSocket, files.pidFile].map((p) =>
        p ? rm(p, { force: true }) : null,
      ),
    );

    const t0 = Date.now();
    const spawned = await spawnDetached(plan.binary, plan.argv, {
      cwd: files.vmDir,
      stderrPath: files.stderrLog,
    });
    const { pid } = spawned;
    const stat = this.procfs.stat(pid);
    const record: HandleRecord = {
      version: 1,
      driver: 'qemu',
      id: plan.id,
      pid,
      startTime: stat?.startTime ?? 0,
      bootId: this.procfs.bootId(),
      binary: plan.binary,
      argvHash: plan.argvHash,
      startedAt: new Date(t0).toISOString(),
      files,
    };
    if (plan.spec.net.mode === 'user') record.sshHostPort = plan.spec.net.sshHostPort;
    const watch = new ProcessWatch(pid, record.startTime, { procfs: this.procfs, childExit: spawned.exited });
    log.info({ vm: plan.id, pid, argvHash: plan.argvHash }, 'qemu spawned');

    const failStart = async (why: string, cause?: unknown): Promise<never> => {
      if (watch.isAlive()) {
        watch.signal('SIGKILL');
        await watch.waitExitFor(3_000);
      }
      const exit = await Promise.race([spawned.exited, sleep(200).then(() => null)]);
      const stderr = (await readLogFrom(files.stderrLog, spawned.stderrOffset)).trim();
      const exitText = exit ? ` (exit code ${exit.code ?? '-'}${exit.signal ? `, ${exit.signal}` : ''})` : '';
      const message = `QEMU for VM ${plan.id} ${why}${exitText}${stderr ? `: ${stderr}` : ''}`;
      log.error({ vm: plan.id, pid, stderr, exit }, 'qemu start failed');
      throw new EngineError('start_failed', message, {
        cause,
        details: { pid, stderr, exitCode: exit?.code ?? null, signal: exit?.signal ?? null },
      });
    };

    if (record.startTime === 0) return failStart('exited immediately');
    // Written before QMP is up: if the daemon dies right now, the VM is still findable.
    await writeHandles(files.vmDir, record);

    let qmp: QmpClient | undefined;
    while (!qmp) {
      if (!watch.isAlive()) return failStart('exited during startup');
      const left = readyTimeoutMs - (Date.now() - t0);
      if (left <= 0) return failStart(`did not answer on QMP within ${readyTimeoutMs} ms`);
      try {
        qmp = await QmpClient.connect(qmpPath, { timeoutMs: Math.min(left, 5_000), logger: log });
      } catch (err) {
        // Not listening yet (ENOENT/ECONNREFUSED) is the normal case; anything else is retried
        // too until the deadline, but logged.
        if (!isNotListening(err)) log.debug({ vm: plan.id, err }, 'qmp connect failed; retrying');
        await sleep(25);
      }
    }
    try {
      await qmp.queryStatus();
    } catch (err) {
      qmp.close();
      return failStart('failed its first QMP query', err);
    }
    if (opts.settleMs && opts.settleMs > 0) {
      if (await watch.waitExitFor(opts.settleMs)) {
        qmp.close();
        return failStart(`exited within ${opts.settleMs} ms of starting`);
      }
    }
    log.info({ vm: plan.id, pid, readyMs: Date.now() - t0 }, 'qemu ready');
    return new QemuHandle(record, watch, qmp, log, { stderrOffset: spawned.stderrOffset });
  }

  async reattach(vmDir: string, opts: ReattachOptions = {}): Promise<QemuHandle | null> {
    const log = opts.logger ?? this.logger;
    const record = await this.reattachIdentity(vmDir, log);
    if (!record) return null;
    const watch = new ProcessWatch(record.pid, record.startTime, { procfs: this.procfs });
    // Only what QEMU writes from now on explains a later exit (the log is appended across runs).
    const stderrOffset = await stat(record.files.stderrLog).then(
      (s) => s.size,
      () => 0,
    );
    const handle = new QemuHandle(record, watch, undefined, log, { stderrOffset });
    const qmpPath = record.files.qmpSocket;
    if (qmpPath) {
      try {
        const qmp = await QmpClient.connect(qmpPath, { timeoutMs: opts.timeoutMs ?? 3_000, logger: log });
        handle.adoptQmp(qmp);
        const name = await qmp.execute<{ name?: string }>('query-name');
        if (name.name !== undefined && name.name !== record.id) {
          await handle.release();
          throw new EngineError(
            'identity_mismatch',
            `QMP at ${qmpPath} belongs to ${name.name}, not ${record.id}`,
          );
        }
      } catch (err) {
        if (err instanceof EngineError && err.code === 'identity_mismatch') throw err;
        // Alive and ours, but QMP is silent (wedged, or another client holds it): hand back a
        // handle anyway so the caller can still kill it; status() reports 'unresponsive'.
        log.warn({ vm: record.id, pid: record.pid, err }, 'reattach: QMP does not answer');
      }
    }
    log.info({ vm: record.id, pid: record.pid, qmp: handle.qmp !== undefined }, 'qemu reattached');
    return handle;
  }

  /** The handles.json record if its pid is alive, a qemu-system process, and the one we started. */
  private async reattachIdentity(
    vmDir: string,
    log: EngineLogger = this.logger,
  ): Promise<HandleRecord | null> {
    const res = await readHandles(vmDir);
    if (!res.ok) {
      if (res.reason === 'invalid')
        log.warn({ vmDir, detail: res.detail }, 'reattach: unreadable handles.json');
      return null;
    }
    const r = res.record;
    const why =
      r.driver !== 'qemu'
        ? `driver is ${r.driver}`
        : r.bootId !== this.procfs.bootId()
          ? 'host rebooted since start'
          : !isSameLiveProcess(this.procfs, r.pid, r.startTime)
            ? 'process gone (or pid reused)'
            : !runsProgram(this.procfs, r.pid, 'qemu-system')
              ? 'pid runs something else'
              : null;
    if (why) {
      log.debug({ vmDir, pid: r.pid, why }, 'reattach: no live VMM');
      return null;
    }
    return r;
  }
}

export interface QemuHandleOptions {
  /** Where this run's output starts in the stderr log (read to explain an exit). Default 0. */
  stderrOffset?: number;
  /** Reconnect attempts after the QMP socket drops while the VMM lives. Default 8 (~15 s). */
  reconnectAttempts?: number;
  /** First reconnect delay, doubled per attempt up to 5 s. Default 100 ms. */
  reconnectBaseMs?: number;
  /** How often a subscribed handle checks that the process lives. Default 500 ms. */
  livenessMs?: number;
}

/**
 * A live QEMU VM. The QMP connection is kept for the VM's life (reopened, a bounded number of
 * times, if it drops while QEMU lives) and unref'd, so it never keeps the daemon alive on its
 * own; release() closes it. Events flow from QMP once someone subscribes (onEvent), plus an
 * `exit` event found by an unref'd liveness poll, the QMP hang-up or the child's exit.
 */
export class QemuHandle implements VmmHandle {
  readonly driver = 'qemu' as const;
  readonly record: HandleRecord;
  private readonly watch: ProcessWatch;
  private readonly logger: EngineLogger;
  private readonly hub: EventHub;
  private readonly stderrOffset: number;
  private readonly reconnectAttempts: number;
  private readonly reconnectBaseMs: number;
  private readonly livenessMs: number;
  private client: QmpClient | undefined;
  private offClient: (() => void) | undefined;
  private connecting: Promise<QmpClient> | undefined;
  private released = false;
  private watching = false;
  private stopLiveness: (() => void) | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectTries = 0;
  private lastShutdown: { guest: boolean; reason?: string } | undefined;
  private exitMemo: Promise<{ raw: ExitInfo; info: ExitInfo }> | undefined;
  private exitEvent: Extract<VmmEvent, { kind: 'exit' }> | undefined;
  /** Keeps the guest agent's port connected while no QgaClient uses it (see qga-hold.ts). */
  private qgaHold: QgaHold | undefined;

  constructor(
    record: HandleRecord,
    watch: ProcessWatch,
    qmp: QmpClient | undefined,
    logger: EngineLogger,
    opts: QemuHandleOptions = {},
  ) {
    this.record = record;
    this.watch = watch;
    this.logger = logger;
    this.hub = new EventHub(logger);
    this.stderrOffset = opts.stderrOffset ?? 0;
    this.reconnectAttempts = opts.reconnectAttempts ?? 8;
    this.reconnectBaseMs = opts.reconnectBaseMs ?? 100;
    this.livenessMs = opts.livenessMs ?? 500;
    if (qmp) this.adoptQmp(qmp);
    this.holdQga();
  }

  get id(): string {
    return this.record.id;
  }
  get pid(): number {
    return this.record.pid;
  }
  get qmp(): QmpClient | undefined {
    return this.client && !this.client.closed ? this.client : undefined;
  }

  /** @internal: make `qmp` this handle's connection (events, hang-up watch, unref). */
  adoptQmp(qmp: QmpClient): void {
    if (this.client === qmp) return;
    this.closeQmp();
    this.client = qmp;
    qmp.unref();
    const offEvent = qmp.onEvent((ev) => this.onQmpEvent(ev));
    const offClose = qmp.onClose(() => this.onQmpClosed(qmp));
    this.offClient = () => {
      offEvent();
      offClose();
    };
    this.reconnectTries = 0;
  }

  isAlive(): boolean {
    return this.watch.isAlive();
  }

  /** The open QMP connection, reconnecting if it dropped. */
  async ensureQmp(timeoutMs = 3_000): Promise<QmpClient> {
    const current = this.qmp;
    if (current) return current;
    if (!this.record.files.qmpSocket) throw new EngineError('unsupported', 'no QMP socket recorded');
    if (!this.isAlive()) throw new EngineError('not_running', `VM ${this.id} (pid ${this.pid}) is gone`);
    return this.connectQmp(timeoutMs);
  }

  private connectQmp(timeoutMs: number): Promise<QmpClient> {
    const path = this.record.files.qmpSocket as string;
    this.connecting ??= QmpClient.connect(path, { timeoutMs, logger: this.logger })
      .then((c) => {
        this.adoptQmp(c);
        return c;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  async status(): Promise<VmmStatus> {
    return (await this.queryStatus()).status;
  }

  async statusDetail(): Promise<VmmStatusDetail> {
    const detail = await this.queryStatus();
    if (detail.status !== 'gone') return detail;
    // Gone: say why (the same words as the exit event; settling it also emits that event).
    const { info } = await this.settleExit();
    return info.reason !== undefined ? { status: 'gone', reason: info.reason } : detail;
  }

  private async queryStatus(): Promise<VmmStatusDetail> {
    if (!this.isAlive()) return { status: 'gone' };
    try {
      const qmp = await this.ensureQmp();
      const st = await qmp.queryStatus();
      const status = mapRunState(st.status);
      return status === 'running' ? { status } : { status, reason: st.status };
    } catch (err) {
      if (!this.isAlive()) return { status: 'gone' };
      this.logger.warn({ vm: this.id, err }, 'status: QMP does not answer');
      return { status: 'unresponsive', reason: err instanceof Error ? err.message : String(err) };
    }
  }

  async resume(): Promise<void> {
    if (!this.isAlive()) throw new EngineError('not_running', `VM ${this.id} (pid ${this.pid}) is gone`);
    const qmp = await this.ensureQmp();
    await qmp.execute('cont');
    this.logger.info({ vm: this.id }, 'resume (cont)');
  }

  async saveState(path: string, opts: StateFileOptions = {}): Promise<{ durationMs: number }> {
    if (!this.isAlive()) throw new EngineError('not_running', `VM ${this.id} (pid ${this.pid}) is gone`);
    const qmp = await this.ensureQmp();
    // QEMU throttles a migration to 32 MiB/s by default (meant for a live migration sharing a
    // network link); this one goes to a local file while the guest is stopped: no limit.
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SAVE_MAX_BANDWIDTH });
    const r = await saveState(qmp, path, opts.ignoreShared ? { ignoreShared: true } : {});
    this.logger.info({ vm: this.id, path, ms: r.durationMs }, 'state saved');
    return r;
  }

  async cancelSave(): Promise<void> {
    const qmp = await this.ensureQmp().catch(() => undefined);
    await qmp?.execute('migrate_cancel').catch(() => undefined);
  }

  async loadState(path: string, opts: StateFileOptions = {}): Promise<{ durationMs: number }> {
    if (!this.isAlive()) throw new EngineError('not_running', `VM ${this.id} (pid ${this.pid}) is gone`);
    const r = await loadState(await this.ensureQmp(), path, opts.ignoreShared ? { ignoreShared: true } : {});
    this.logger.info({ vm: this.id, path, ms: r.durationMs }, 'state loaded');
    return r;
  }

  async replaceDiskTop(index: number, overlay: string): Promise<void> {
    if (!this.isAlive()) throw new EngineError('not_running', `VM ${this.id} (pid ${this.pid}) is gone`);
    // The drive ids qemu-argv gives (`disk<i>`); mode existing: banger made the overlay, with
    // its backing file named, so QEMU writes no backing path of its own into it.
    await (
      await this.ensureQmp()
    ).execute('blockdev-snapshot-sync', {
      device: `disk${index}`,
      'snapshot-file': overlay,
      format: 'qcow2',
      mode: 'existing',
    });
    this.logger.info({ vm: this.id, disk: index, overlay }, 'disk top replaced');
  }

  onEvent(listener: VmmEventListener): () => void {
    const exit = this.exitEvent;
    if (exit) {
      // Already over: the one event a late subscriber still needs.
      queueMicrotask(() => listener(exit));
      return () => {};
    }
    const off = this.hub.add(listener);
    if (this.released) this.holdQga();
    this.released = false;
    this.startWatching();
    return off;
  }

  async shutdownGraceful(timeoutMs: number): Promise<'clean' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    if (!this.isAlive()) return 'clean';
    try {
      const qmp = await this.ensureQmp(Math.min(3_000, timeoutMs));
      const st = await qmp.queryStatus();
      // A paused guest cannot act on the power button.
      if (!st.running && mapRunState(st.status) === 'paused') await qmp.execute('cont');
      await qmp.execute('system_powerdown');
    } catch (err) {
      if (!this.isAlive()) return 'clean';
      this.logger.warn({ vm: this.id, err }, 'graceful shutdown: cannot send system_powerdown');
      return 'timeout';
    }
    const exited = await this.watch.waitExitFor(Math.max(0, deadline - Date.now()));
    if (exited) await this.settleExit();
    this.logger.info({ vm: this.id, result: exited ? 'clean' : 'timeout' }, 'graceful shutdown');
    return exited ? 'clean' : 'timeout';
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    let sent: boolean;
    try {
      sent = this.watch.signal(signal);
    } catch (err) {
      // EPERM (not our uid): ask QEMU itself to quit.
      this.logger.warn({ vm: this.id, err }, 'kill: signal refused, trying QMP quit');
      const qmp = await this.ensureQmp();
      await qmp.execute('quit').catch(() => {});
      sent = true;
    }
    if (!sent) {
      this.closeQmp();
      return;
    }
    this.logger.info({ vm: this.id, pid: this.pid, signal }, 'kill');
    if (signal === 'SIGKILL' || signal === 'SIGTERM') {
      if (!(await this.watch.waitExitFor(5_000))) {
        throw new EngineError('timeout', `VM ${this.id} (pid ${this.pid}) survived ${signal} for 5 s`);
      }
      await this.settleExit();
    }
  }

  /**
   * Resolves once the VMM is gone, with its wait status (code/signal; both null when
   * reattached). Why it ended (ExitInfo.reason) is in the `exit` event and statusDetail().
   */
  async waitExit(): Promise<ExitInfo> {
    return (await this.settleExit()).raw;
  }

  /** The wait status plus what the stderr log and QMP said; emits the `exit` event once. */
  private settleExit(): Promise<{ raw: ExitInfo; info: ExitInfo }> {
    this.exitMemo ??= this.watch.waitExit().then(async (raw) => {
      const stderr = await readLogFrom(this.record.files.stderrLog, this.stderrOffset);
      const info = describeExit(raw, {
        stderr,
        ...(this.lastShutdown ? { shutdown: this.lastShutdown } : {}),
      });
      this.exited(info);
      return { raw, info };
    });
    return this.exitMemo;
  }

  async release(): Promise<void> {
    this.released = true;
    this.dropQgaHold();
    this.hub.clear();
    this.stopWatching();
    this.closeQmp();
    this.watch.stop();
    // watch.stop() ends the poll behind a pending waitExit(): a later call must start anew.
    if (!this.exitEvent) this.exitMemo = undefined;
  }

  private exited(info: ExitInfo): void {
    if (this.exitEvent) return;
    const event = { kind: 'exit' as const, at: new Date().toISOString(), info };
    this.exitEvent = event;
    this.dropQgaHold();
    this.stopWatching();
    this.closeQmp();
    this.logger.info({ vm: this.id, pid: this.pid, ...info }, 'qemu exited');
    this.hub.emit(event);
    this.hub.clear();
  }

  private holdQga(): void {
    const path = this.record.files.qgaSocket;
    if (path && !this.exitEvent && !this.qgaHold) this.qgaHold = QgaHold.start(path, this.logger);
  }

  private dropQgaHold(): void {
    this.qgaHold?.stop();
    this.qgaHold = undefined;
  }

  private noticeExit(): void {
    void this.settleExit();
  }

  private startWatching(): void {
    if (this.watching || this.exitEvent) return;
    this.watching = true;
    this.stopLiveness = pollLiveness(
      () => this.isAlive(),
      () => this.noticeExit(),
      this.livenessMs,
    );
    // A child's exit arrives at once (with its signal); the poll covers reattached VMMs.
    void this.watch.childExit?.then(() => {
      if (this.watching) this.noticeExit();
    });
    // Reattached while QMP was silent, or it dropped before anyone listened: get it back.
    if (!this.qmp && !this.connecting && this.record.files.qmpSocket) this.scheduleReconnect(0);
  }

  private stopWatching(): void {
    this.watching = false;
    this.stopLiveness?.();
    this.stopLiveness = undefined;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }

  private onQmpEvent(ev: QmpEvent): void {
    const event = decodeQmpEvent(ev);
    if (!event) return;
    if (event.kind === 'shutdown') {
      this.lastShutdown =
        event.reason !== undefined ? { guest: event.guest, reason: event.reason } : { guest: event.guest };
    }
    this.logger.debug({ vm: this.id, event }, 'qmp event');
    this.hub.emit(event);
  }

  /** QEMU hung up on us (we did not close it): the VM is exiting, or the socket broke. */
  private onQmpClosed(qmp: QmpClient): void {
    if (this.client !== qmp) return;
    this.client = undefined;
    this.offClient = undefined;
    if (this.released || this.exitEvent) return;
    this.scheduleReconnect();
  }

  private scheduleReconnect(delayMs?: number): void {
    if (this.reconnectTimer || this.released || this.exitEvent) return;
    if (this.reconnectTries >= this.reconnectAttempts) {
      this.logger.warn(
        { vm: this.id, attempts: this.reconnectTries },
        'QMP connection lost and not regained: no more events until the next command reconnects',
      );
      return;
    }
    const delay = delayMs ?? Math.min(this.reconnectBaseMs * 2 ** this.reconnectTries, 5_000);
    this.reconnectTries++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.released || this.exitEvent) return;
      if (!this.isAlive()) {
        this.noticeExit();
        return;
      }
      if (this.qmp) return;
      this.connectQmp(3_000).then(
        () => {
          // Released while connecting: the handle must not hold a connection nobody reads.
          if (this.released) this.closeQmp();
          else this.logger.info({ vm: this.id }, 'QMP reconnected');
        },
        (err: unknown) => {
          this.logger.debug({ vm: this.id, err }, 'QMP reconnect failed');
          this.scheduleReconnect();
        },
      );
    }, delay);
    this.reconnectTimer.unref();
  }

  /** Close our QMP connection on purpose (no reconnect follows). */
  private closeQmp(): void {
    const c = this.client;
    this.offClient?.();
    this.offClient = undefined;
    this.client = undefined;
    c?.close();
  }
}

/** QEMU RunState -> VmmStatus. */
export function mapRunState(status: string): VmmStatus {
  if (status === 'running') return 'running';
  if (status === 'shutdown' || status === 'guest-panicked') return 'shutdown';
  // paused, prelaunch, inmigrate, postmigrate, finish-migrate, suspended, io-error,
  // internal-error, watchdog, ...: the vCPUs are not running.
  return 'paused';
}
