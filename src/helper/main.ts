// bangerd-root: the narrow root helper. Serves only the daemon's uid (and root), checked on every
// connection from SO_PEERCRED; speaks only the priv.* vocabulary of schema/methods.json.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parse } from 'smol-toml';
import { createLogger } from '../log/logger.ts';
import { DEFAULT_HELPER_SOCKET, INSTALL_TOML } from '../paths.ts';
import { BANGER_VERSION } from '../version.ts';
import { startHelper } from './start.ts';

const USAGE = `usage: bangerd-root [--socket PATH] [--owner-uid UID] [--log-file FILE]

  --socket     unix socket to serve (default ${DEFAULT_HELPER_SOCKET})
  --owner-uid  the daemon's uid, the only non-root uid served (default: owner_uid in ${INSTALL_TOML})
  --log-file   also append JSON logs here
`;

function ownerFromInstall(): number | undefined {
  if (!existsSync(INSTALL_TOML)) return undefined;
  const t = parse(readFileSync(INSTALL_TOML, 'utf8')) as { owner_uid?: unknown };
  return typeof t.owner_uid === 'number' ? t.owner_uid : undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      'owner-uid': { type: 'string' },
      'log-file': { type: 'string' },
      version: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return void process.stdout.write(USAGE);
  if (values.version) return void process.stdout.write(`bangerd-root ${BANGER_VERSION}\n`);
  const ownerArg = values['owner-uid'];
  const ownerUid = ownerArg !== undefined ? Number(ownerArg) : ownerFromInstall();
  if (ownerUid === undefined || !Number.isInteger(ownerUid) || ownerUid < 0 || ownerUid > 0xfffffffe) {
    throw new Error(
      `an owner uid is required: pass --owner-uid or run banger system install (${INSTALL_TOML})`,
    );
  }
  const log = createLogger({ name: 'bangerd-root', file: values['log-file'] });
  const helper = await startHelper({
    socket: resolve(values.socket ?? DEFAULT_HELPER_SOCKET),
    ownerUid,
    log,
  });
  const onSignal = (sig: string): void => {
    log.info({ signal: sig }, 'bangerd-root stopping');
    helper.server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`bangerd-root: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
