// Assemble and start a daemon: used by bangerd's main and by in-process integration tests.
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:net';
import type { Writable } from 'node:stream';
import type { Operation } from '../../generated/types.gen.ts';
import {
  FirecrackerDriver,
  hostEngine,
  QemuDriver,
  qemuVersion,
  selectEngine,
  type EngineSelection,
  type VmmDriver,
} from '../engine/index.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { listenUnix } from '../rpc/listen.ts';
import { createRpcServer } from '../rpc/server.ts';
import { openStore, type Store } from '../store/index.ts';
import { BANGER_VERSION } from '../version.ts';
import { crashPoints } from '../vm/crash.ts';
import { VmRuntime } from '../vm/runtime.ts';
import { ensureInstallKey, sshPaths } from '../vm/ssh.ts';
import type { DaemonConfig } from './config.ts';
import { Daemon } from './daemon.ts';
import { EngineInfo } from './engine-info.ts';
import { redactParams, withQuietPolls } from './rpc-log.ts';
import { HelperLink } from './helper-link.ts';
import { DnsServer } from './dns.ts';
import { bridgePlan, VmNetwork } from '../vm/network.ts';
import { BridgedEgress } from '../egress/bridged.ts';
import { WarmService } from './warm.ts';
import { OperationRegistry, type OperationSink } from '../ops/operations.ts';
import { DaemonServiceImpl, vmCommitment } from './services/daemon.ts';
import { ImageServiceImpl } from './services/image.ts';
import type { BootableFn } from './services/image-bootable.ts';
import { OciImageService } from './services/image-oci.ts';
import { KernelServiceImpl } from './services/kernel.ts';
import { OpServiceImpl } from './services/op.ts';
import { rootMethods } from './services/root.ts';
import { VmServiceImpl } from './services/vm.ts';
import { SecretServiceImpl } from './services/secret.ts';
import { EgressEvents } from '../egress/events.ts';
import { sweepProxySockets } from '../egress/sweep.ts';
import { proxyHooks, startEgressSide } from '../egress/side.ts';
import { DEFAULT_LOGS_CONFIG } from '../ops/config.ts';
import { OpRecorder } from '../ops/recorder.ts';
import { SerialWatcher } from '../ops/serial.ts';
import { LogSources } from '../ops/sources.ts';
import { RpcLogRepo } from '../store/rpclog.ts';
import { GUEST_RAM_ROOT } from '../vm/guest-ram.ts';

export interface StartOptions {
  socket: string;
  stateDir: string;
  config: DaemonConfig;
  helperSocket: string | undefined;
  logFile?: string;
  logStream?: Writable;
  /** Log only to logFile, not stderr (bangerd --quiet: stderr already goes to a file). */
  quietStderr?: boolean;
  /** Tests inject a fake VMM driver. */
  driver?: VmmDriver;
  /** How long a guest may take to become ready (default 300 s: TCG is slow). */
  readyTimeoutMs?: number;
  /** Called when a `shutdown` RPC or a signal stopped the daemon. */
  onStopped?: () => void;
  /** The root helper's JSON log file, for op traces (default: config [logs] helper_file). */
  helperLogFile?: string;
  /** TEST-ONLY: fail this boot step (default: env BANGER_TEST_FAIL_STEP); see MachineDeps. */
  testFailStep?: string;
  /** TEST-ONLY: SIGKILL the daemon when this step begins (default: env BANGER_TEST_CRASH_AT). */
  testCrashAt?: string;
  /** Tests inject a fake `bootable` step for OCI pulls (default: src/image/prepare.ts). */
  ociBootable?: BootableFn;
  /** sources.list text kernel.catalog / kernel.pull read (default: the image recipe's archive). */
  kernelAptSources?: string;
}

export interface RunningDaemon {
  daemon: Daemon;
  server: Server;
  log: Logger;
  store: Store;
  stop(why: string): Promise<void>;
}

/** Operations persist in the store, so op records outlive daemon restarts (bounded by retention). */
function storeSink(store: Store): OperationSink {
  return {
    save(op: Operation): void {
      const exists = store.operations.get(op.id);
      if (!exists) {
        store.operations.insert({
          id: op.id,
          kind: op.kind,
          method: op.method,
          state: op.state,
          vmName: op.vm ?? null,
          imageName: op.image ?? null,
          startedAt: op.started_at,
          steps: op.steps,
        });
      } else {
        store.operations.update(op.id, {
          state: op.state,
          steps: op.steps,
          endedAt: op.ended_at ?? null,
          error: op.error ?? null,
        });
      }
    },
  };
}

function driverFor(s: EngineSelection, log: Logger): VmmDriver {
  return s.driver === 'firecracker'
    ? new FirecrackerDriver({ logger: log, ...(s.binary ? { binary: s.binary } : {}) })
    : new QemuDriver({ logger: log });
}

export function cacheDirFor(config: DaemonConfig): string {
  return config.image_cache_dir ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'banger');
}

export async function startDaemon(opts: StartOptions): Promise<RunningDaemon> {
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const log = createLogger({
    name: 'bangerd',
    level: opts.config.log_level,
    file: opts.logFile,
    stream: opts.logStream,
    quiet: opts.quietStderr === true && opts.logFile !== undefined,
  });
  const store = openStore(join(opts.stateDir, 'state.db'));
  for (const w of store.warnings) log.warn(w);
  const interrupted = store.operations.failInterrupted({
    code: 'operation_failed',
    message: 'interrupted by a daemon restart',
  });
  if (interrupted > 0)
    log.warn({ count: interrupted }, 'operations interrupted by the previous daemon marked failed');
  const logsCfg = opts.config.logs ?? DEFAULT_LOGS_CONFIG;
  const retention = { maxCount: logsCfg.max_operations, maxAgeDays: logsCfg.max_age_days };
  store.pruneOperations(retention);

  const helper = new HelperLink(opts.helperSocket);
  // Op records: one row per RPC, serial windows, retention (banger op list/show/trace).
  const rpcLog = new RpcLogRepo(store.db);
  const serial = new SerialWatcher(rpcLog, log);
  const logSources = new LogSources({
    cfg: logsCfg,
    daemonLogFile: opts.logFile,
    helperLogFile: opts.helperLogFile,
    helperConfigured: opts.helperSocket !== undefined,
    askHelper: async () => (await helper.client?.priv.ping(undefined, { timeoutMs: 3000 }))?.log_file,
  });
  const recorder = new OpRecorder({
    repo: rpcLog,
    store,
    log,
    serial,
    isLive: (id) => ops.get(id) !== undefined,
    retention,
  });
  const baseSink = storeSink(store);
  // TEST-ONLY crash points (BANGER_TEST_CRASH_AT): every operation step is one, `<kind>.<step>`.
  const crash = crashPoints(opts.testCrashAt ?? process.env.BANGER_TEST_CRASH_AT, log);
  const ops = new OperationRegistry(log, {
    onStepStart: (op, step) => crash(`${op.kind}.${step}`),
    sink: {
      save(op) {
        baseSink.save(op);
        recorder.onOperationSaved(op);
      },
    },
  });
  recorder.start();
  const testFailStep = opts.testFailStep ?? process.env.BANGER_TEST_FAIL_STEP;
  if (testFailStep)
    log.warn({ step: testFailStep }, 'TEST-ONLY fault injection is on: boots fail at this step');
  const startedAt = new Date();
  // The VMM driver: config `engine`, unless it cannot run here (said in daemon status and doctor).
  const selection: EngineSelection = opts.driver
    ? { driver: opts.driver.name, reason: 'injected (tests)' }
    : selectEngine(opts.config.engine, hostEngine);
  if (selection.driver !== opts.config.engine) log.warn({ reason: selection.reason }, 'engine fallback');
  const engine = new EngineInfo(opts.config, store, opts.stateDir, log, selection);
  const ssh = sshPaths(opts.stateDir);
  const installKey = ensureInstallKey(ssh);
  installKey.catch((err: unknown) => log.error({ err }, 'could not create the SSH key'));

  const images = new ImageServiceImpl({
    store,
    ops,
    log,
    stateDir: opts.stateDir,
    cacheDir: cacheDirFor(opts.config),
    aptSources: opts.config.images.apt_sources,
    accel: () => engine.accel(),
    crash,
  });
  const kernels = new KernelServiceImpl({
    store,
    log,
    stateDir: opts.stateDir,
    ops,
    crash,
    cacheDir: cacheDirFor(opts.config),
    ...(opts.kernelAptSources !== undefined ? { aptSources: opts.kernelAptSources } : {}),
  });
  // OCI pulls and imports; their layer cache lives with the other caches. They boot the default
  // image's kernel (building the default image first when there is none).
  const ociImages = new OciImageService({
    store,
    ops,
    log,
    stateDir: opts.stateDir,
    blobDir: join(cacheDirFor(opts.config), 'oci', 'blobs'),
    defaultKernel: async (signal, onProgress) =>
      (await images.resolveForVm(undefined, { signal, onProgress })).kernel,
    busyElsewhere: (name) => images.busy(name),
    aptSources: () => opts.config.images.apt_sources,
    // The prepare VM boots with the daemon's accelerator (a probe boot on first use).
    ...(opts.ociBootable ? { bootable: opts.ociBootable } : { accel: () => engine.accel() }),
  });
  images.ociImages = ociImages;
  // An orphan sweep must not take a kernel directory an import or pull is filling.
  images.kernelBusy = (name) => kernels.busy(name);
  const runtime = new VmRuntime(opts.driver ?? driverFor(selection, log), log);
  // Bridge mode: taps, NAT and resolver routing through bangerd-root.
  // `<name>.vm` for running bridged VMs: 127.0.0.1 for the host, the bridge address for guests.
  const dns =
    opts.config.dns_port > 0
      ? new DnsServer({
          port: opts.config.dns_port,
          log,
          lookup: (name) => {
            const row = store.vms.getByName(name);
            if (!row || row.networkMode !== 'bridge' || !row.guestIp || !runtime.isRunning(row.id))
              return undefined;
            return { ip: row.guestIp };
          },
        })
      : undefined;
  if (dns) {
    await dns
      .listen('127.0.0.1', false)
      .catch((err: unknown) =>
        log.warn(
          { port: opts.config.dns_port, err: (err as Error).message },
          '.vm DNS is off: cannot listen on 127.0.0.1 (set dns_port in the config)',
        ),
      );
  }
  // Egress events (proxy, bridged filter, resolver) go to the per-VM ring under the op id that set
  // the VM's policy (src/egress/events.ts).
  const egressEvents = new EgressEvents({
    log,
    opIdOf: (name) => {
      const row = store.vms.getByName(name);
      return row ? row.egressOpId : undefined;
    },
  });
  // Egress policies of bridged VMs: host chains through the helper, domain rules through the resolver.
  const bridgedEgress = new BridgedEgress({
    priv: () => helper.client?.priv,
    plan: bridgePlan(opts.config),
    dnsPort: opts.config.dns_port,
    vms: () => store.vms.list(),
    log,
    record: egressEvents.recordEgress,
    ...(opts.config.egress ? { proxyPort: opts.config.egress.proxy_port } : {}),
  });
  if (dns) dns.egress = { check: (src, name) => bridgedEgress.dnsCheck(src, name) };
  const network = new VmNetwork({
    config: opts.config,
    store,
    log,
    helper,
    egress: bridgedEgress,
    ...(dns ? { dns } : {}),
  });
  // The egress proxy, the secret store and banger's CA (src/egress/side.ts).
  const egressSide = await startEgressSide({
    stateDir: opts.stateDir,
    config: opts.config.egress,
    log,
    record: egressEvents.recordEgress,
    gateway: bridgePlan(opts.config).gateway,
  });
  const installPubKey = (): Promise<string> => installKey;
  let engineVersion: Promise<string> | undefined;
  const warm = new WarmService({
    store,
    ops,
    log,
    config: opts.config,
    driver: runtime.driver,
    accel: () => engine.accel(),
    engineVersion: () => (engineVersion ??= qemuVersion()),
    installPubKey,
    readyTimeoutMs: opts.readyTimeoutMs ?? 300_000,
    network,
    resolveImage: (name) => images.resolveForVm(name),
  });
  images.warmTemplates = warm;
  const vms = new VmServiceImpl({
    store,
    ops,
    network,
    config: opts.config,
    log,
    stateDir: opts.stateDir,
    runtime,
    ssh,
    accel: () => engine.accel(),
    readyTimeoutMs: opts.readyTimeoutMs ?? 300_000,
    serialMarks: serial,
    ...(testFailStep ? { testFailStep } : {}),
    installPubKey,
    resolveImage: (name, o) => images.resolveForVm(name, o),
    warm,
    crash,
    templateDirs: () => warm.templateDirs(),
    secretExists: (name) => egressSide.secrets.has(name),
    guestEgress: (vm) => egressSide.guestEgress(vm),
    egress: proxyHooks(egressSide, egressEvents),
    // Guest RAM in a file on /dev/shm (QEMU only; tests with an injected driver keep anonymous RAM).
    ...(runtime.driver.name === 'qemu' && !opts.driver ? { guestRamRoot: GUEST_RAM_ROOT } : {}),
  });
  // The lifecycle owner hears every VMM exit and event (QMP) from here on.
  runtime.listen(
    (id, expected, info) => vms.lifecycle.onVmmExit(id, expected, info),
    (id, ev) => vms.lifecycle.onVmmEvent(id, ev),
  );
  await images.sweep();
  // Proxy sockets of VMs deleted across a crash (src/egress/sweep.ts).
  const staleSockets = await sweepProxySockets(join(opts.stateDir, 'egress', 'px'), (id) =>
    Boolean(store.vms.getById(id)),
  );
  if (staleSockets.length > 0) log.info({ removed: staleSockets }, 'removed proxy sockets of deleted VMs');
  await vms.reconcile();
  await network.reconcile();
  // Idle pause: after reconcile, so a pause a crash interrupted is settled before the first look.
  vms.idle.start();
  void warm.sweepAll();

  let stopping: Promise<void> | undefined;
  const stop = (why: string): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      log.info({ why }, 'bangerd stopping; running VMs keep running');
      vms.idle.stop();
      vms.lifecycle.close();
      void runtime.releaseAll().finally(() => {
        server.close(() => {
          void recorder.stop().finally(() => {
            store.close();
            void dns?.close();
            egressSide.proxy.close();
            bridgedEgress.close();
            log.info('bangerd stopped');
            resolve();
            opts.onStopped?.();
          });
        });
      });
    });
    return stopping;
  };
  // Nested as the method names are: vm.create.begin is services.vm.create.begin.
  const daemon = new Daemon(log, {
    ...rootMethods(() => void stop('shutdown rpc')),
    daemon: new DaemonServiceImpl(
      {
        socket: opts.socket,
        stateDir: opts.stateDir,
        startedAt,
        engine: () => engine.status(),
        commitment: () => vmCommitment(store.vms.list()),
      },
      helper,
      ops,
    ),
    vm: vms,
    image: images,
    kernel: kernels,
    secret: new SecretServiceImpl({ secrets: egressSide.secrets, store }),
    op: new OpServiceImpl({
      repo: rpcLog,
      store,
      serial,
      retention,
      logs: () => logSources.resolve(),
    }),
  });
  const server = createRpcServer({
    dispatcher: daemon,
    log: withQuietPolls(log, 'rpc'),
    summaryPrefix: 'rpc',
    onFinished: (f) => recorder.onRpcFinished({ ...f, params: redactParams(f.method, f.params) }),
  });
  await listenUnix(server, opts.socket, { dirMode: 0o700, socketMode: 0o600 });
  log.info({ socket: opts.socket, state_dir: opts.stateDir, version: BANGER_VERSION }, 'bangerd listening');
  return { daemon, server, log, store, stop };
}
