// bangerd: the owner daemon. Runs as the user, never as root.
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultConfigFile, defaultDaemonSocket, defaultStateDir, DEFAULT_HELPER_SOCKET } from '../paths.ts';
import { BANGER_VERSION } from '../version.ts';
import { loadConfig } from './config.ts';
import { startDaemon } from './start.ts';

const USAGE = `usage: bangerd [--socket PATH] [--state-dir DIR] [--log-file FILE] [--quiet] [--config FILE] [--helper-socket PATH|none]

  --socket         unix socket to serve (default ${defaultDaemonSocket()})
  --state-dir      state directory: database, images, VMs (default ${defaultStateDir()})
  --log-file       also append JSON logs here (default STATE_DIR/bangerd.log)
  --quiet          JSON logs to the log file only, not also to stderr (for stderr redirected to a
                   file: start-up failures still go to stderr)
  --config         TOML config file (default ${defaultConfigFile()})
  --helper-socket  root helper socket, or "none" for rootless use (default: config, then ${DEFAULT_HELPER_SOCKET})
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      'state-dir': { type: 'string' },
      'log-file': { type: 'string' },
      quiet: { type: 'boolean' },
      config: { type: 'string' },
      'helper-socket': { type: 'string' },
      version: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return void process.stdout.write(USAGE);
  if (values.version) return void process.stdout.write(`bangerd ${BANGER_VERSION}\n`);
  const config = loadConfig(values.config ?? defaultConfigFile());
  const stateDir = resolve(values['state-dir'] ?? defaultStateDir());
  const helperArg = values['helper-socket'] ?? config.helper_socket ?? DEFAULT_HELPER_SOCKET;
  const running = await startDaemon({
    socket: resolve(values.socket ?? defaultDaemonSocket()),
    stateDir,
    config,
    helperSocket: helperArg === 'none' ? undefined : helperArg,
    logFile: values['log-file'] ?? join(stateDir, 'bangerd.log'),
    quietStderr: values.quiet === true,
    onStopped: () => process.exit(0),
  });
  if (process.getuid?.() === 0) {
    // The owner daemon needs no root; root work belongs to bangerd-root. Allowed for development.
    running.log.warn(
      'bangerd is running as root; a real install runs it as the owner user (banger system install)',
    );
  }
  const onSignal = (sig: string): void => {
    void running.stop(sig);
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`bangerd: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
