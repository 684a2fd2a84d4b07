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
import { DEFAULT_POOL, poolContext } from './validate.ts';

const USAGE = `usage: bangerd-root [--socket PATH] [--owner-uid UID] [--pool CIDR] [--log-file FILE]

  --socket     unix socket to serve (default ${DEFAULT_HELPER_SOCKET})
  --owner-uid  the daemon's uid, the only non-root uid served (default: owner_uid in ${INSTALL_TOML})
  --pool       address block every bridge subnet and guest address must lie in
               (default: network_pool in ${INSTALL_TOML}, else ${DEFAULT_POOL})
  --log-file   also append JSON logs here
`;

function readInstall(): { owner_uid?: unknown; network_pool?: unknown } {
  if (!existsSync(INSTALL_TOML)) return {};
  return parse(readFileSync(INSTALL_TOML, 'utf8')) as { owner_uid?: unknown; network_pool?: unknown };
}

function ownerFromInstall(): number | undefined {
  const t = readInstall();
  return typeof t.owner_uid === 'number' ? t.owner_uid : undefined;
}

function poolFromInstall(): string | undefined {
  const t = readInstall();
  return typeof t.network_pool === 'string' ? t.network_pool : undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: 'string' },
      'owner-uid': { type: 'string' },
      pool: { type: 'string' },
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
  const pool = values.pool ?? poolFromInstall() ?? DEFAULT_POOL;
  poolContext(pool); // refuse a bad pool before listening
  const log = createLogger({ name: 'bangerd-root', file: values['log-file'] });
  const testFailVerb = process.env.BANGER_TEST_FAIL_VERB;
  const helper = await startHelper({
    socket: resolve(values.socket ?? DEFAULT_HELPER_SOCKET),
    ownerUid,
    pool,
    log,
    ...(values['log-file'] ? { logFile: resolve(values['log-file']) } : {}),
    ...(testFailVerb ? { testFailVerb } : {}),
  });
  if (testFailVerb)
    log.warn({ verb: testFailVerb }, 'TEST-ONLY fault injection is on: this verb always fails');
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
