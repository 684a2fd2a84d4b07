// Assemble and start a daemon: used by bangerd's main and by in-process integration tests.
import { mkdirSync } from 'node:fs';
import type { Server } from 'node:net';
import type { Writable } from 'node:stream';
import { createLogger, type Logger } from '../log/logger.ts';
import { listenUnix } from '../rpc/listen.ts';
import { createRpcServer } from '../rpc/server.ts';
import { BANGER_VERSION } from '../version.ts';
import type { DaemonConfig } from './config.ts';
import { Daemon } from './daemon.ts';
import { HelperLink } from './helper-link.ts';
import { OperationRegistry } from './operations.ts';
import { DaemonServiceImpl } from './services/daemon.ts';
import { createSpecials } from './specials.ts';

export interface StartOptions {
  socket: string;
  stateDir: string;
  config: DaemonConfig;
  helperSocket: string | undefined;
  logFile?: string;
  logStream?: Writable;
  /** Called when a `shutdown` RPC or a signal stopped the daemon. */
  onStopped?: () => void;
}

export interface RunningDaemon {
  daemon: Daemon;
  server: Server;
  log: Logger;
  stop(why: string): Promise<void>;
}

export async function startDaemon(opts: StartOptions): Promise<RunningDaemon> {
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const log = createLogger({
    name: 'bangerd',
    level: opts.config.log_level,
    file: opts.logFile,
    stream: opts.logStream,
  });
  const helper = new HelperLink(opts.helperSocket);
  const ops = new OperationRegistry(log);
  const startedAt = new Date();

  let stopping: Promise<void> | undefined;
  const stop = (why: string): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      log.info({ why }, 'bangerd stopping; running VMs keep running');
      server.close(() => {
        log.info('bangerd stopped');
        resolve();
        opts.onStopped?.();
      });
    });
    return stopping;
  };
  const daemon = new Daemon(
    log,
    {
      daemon: new DaemonServiceImpl({ socket: opts.socket, stateDir: opts.stateDir, startedAt }, helper, ops),
    },
    createSpecials(() => void stop('shutdown rpc')),
  );
  const server = createRpcServer({ dispatcher: daemon, log, summaryPrefix: 'rpc' });
  await listenUnix(server, opts.socket, { dirMode: 0o700, socketMode: 0o600 });
  log.info({ socket: opts.socket, state_dir: opts.stateDir, version: BANGER_VERSION }, 'bangerd listening');
  return { daemon, server, log, stop };
}
