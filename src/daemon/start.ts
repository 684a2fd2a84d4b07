// Assemble and start a daemon: used by bangerd's main and by in-process integration tests.
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:net';
import type { Writable } from 'node:stream';
import type { Operation } from '../../generated/types.gen.ts';
import { QemuDriver, type VmmDriver } from '../engine/index.ts';
import { createLogger, type Logger } from '../log/logger.ts';
import { listenUnix } from '../rpc/listen.ts';
import { createRpcServer } from '../rpc/server.ts';
import { openStore, type Store } from '../store/index.ts';
import { BANGER_VERSION } from '../version.ts';
import { VmRuntime } from '../vm/runtime.ts';
import { ensureInstallKey, sshPaths } from '../vm/ssh.ts';
import type { DaemonConfig } from './config.ts';
import { Daemon } from './daemon.ts';
import { EngineInfo } from './engine-info.ts';
import { HelperLink } from './helper-link.ts';
import { OperationRegistry, type OperationSink } from './operations.ts';
import { DaemonServiceImpl } from './services/daemon.ts';
import { ImageServiceImpl } from './services/image.ts';
import { KernelServiceImpl } from './services/kernel.ts';
import { OpServiceImpl } from './services/op.ts';
import { VmServiceImpl } from './services/vm.ts';
import { createSpecials } from './specials.ts';

export interface StartOptions {
  socket: string;
  stateDir: string;
  config: DaemonConfig;
  helperSocket: string | undefined;
  logFile?: string;
  logStream?: Writable;
  /** Tests inject a fake VMM driver. */
  driver?: VmmDriver;
  /** How long a guest may take to become ready (default 300 s: TCG is slow). */
  readyTimeoutMs?: number;
  /** Called when a `shutdown` RPC or a signal stopped the daemon. */
  onStopped?: () => void;
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
  });
  const store = openStore(join(opts.stateDir, 'state.db'));
  for (const w of store.warnings) log.warn(w);
  const interrupted = store.operations.failInterrupted({
    code: 'operation_failed',
    message: 'interrupted by a daemon restart',
  });
  if (interrupted > 0)
    log.warn({ count: interrupted }, 'operations interrupted by the previous daemon marked failed');
  store.pruneOperations({ maxCount: 1000, maxAgeDays: 30 });

  const helper = new HelperLink(opts.helperSocket);
  const ops = new OperationRegistry(log, { sink: storeSink(store) });
  const startedAt = new Date();
  const engine = new EngineInfo(opts.config, store, opts.stateDir, log);
  const ssh = sshPaths(opts.stateDir);
  const installKey = ensureInstallKey(ssh);
  installKey.catch((err: unknown) => log.error({ err }, 'could not create the SSH key'));

  const images = new ImageServiceImpl({
    store,
    ops,
    log,
    stateDir: opts.stateDir,
    cacheDir: cacheDirFor(opts.config),
  });
  const kernels = new KernelServiceImpl({ store, log, stateDir: opts.stateDir });
  const exits: { vms?: VmServiceImpl } = {};
  const runtime = new VmRuntime(opts.driver ?? new QemuDriver({ logger: log }), log, (id, expected) =>
    exits.vms?.onVmmExit(id, expected),
  );
  const vms = new VmServiceImpl({
    store,
    ops,
    config: opts.config,
    log,
    stateDir: opts.stateDir,
    runtime,
    ssh,
    accel: () => engine.accel(),
    readyTimeoutMs: opts.readyTimeoutMs ?? 300_000,
    installPubKey: () => installKey,
    resolveImage: (name, o) => images.resolveForVm(name, o),
  });
  exits.vms = vms;
  await images.sweep();
  await vms.reconcile();

  let stopping: Promise<void> | undefined;
  const stop = (why: string): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      log.info({ why }, 'bangerd stopping; running VMs keep running');
      void runtime.releaseAll().finally(() => {
        server.close(() => {
          store.close();
          log.info('bangerd stopped');
          resolve();
          opts.onStopped?.();
        });
      });
    });
    return stopping;
  };
  const daemon = new Daemon(
    log,
    {
      daemon: new DaemonServiceImpl(
        { socket: opts.socket, stateDir: opts.stateDir, startedAt, engine: () => engine.status() },
        helper,
        ops,
      ),
      vm: vms,
      image: images,
      kernel: kernels,
      op: new OpServiceImpl(),
    },
    createSpecials(() => void stop('shutdown rpc'), vms, opts.stateDir),
  );
  const server = createRpcServer({ dispatcher: daemon, log, summaryPrefix: 'rpc' });
  await listenUnix(server, opts.socket, { dirMode: 0o700, socketMode: 0o600 });
  log.info({ socket: opts.socket, state_dir: opts.stateDir, version: BANGER_VERSION }, 'bangerd listening');
  return { daemon, server, log, store, stop };
}
