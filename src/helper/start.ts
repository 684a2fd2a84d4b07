import type { Server } from 'node:net';
import { helperDeclaredErrors, helperHandlers } from '../../generated/dispatch.helper.gen.ts';
import type { HelperHost, HelperServices } from '../../generated/handlers.gen.ts';
import type { Logger } from '../log/logger.ts';
import { dispatchTable } from '../rpc/dispatch.ts';
import { dispatchChecked } from '../rpc/error-check.ts';
import { listenUnix } from '../rpc/listen.ts';
import { peerCredOf } from '../rpc/peercred.ts';
import { createRpcServer } from '../rpc/server.ts';
import { BANGER_VERSION } from '../version.ts';
import { IpLinks, NftNat, ResolvedResolver, type Links, type Nat, type Resolver } from '../hostnet/index.ts';
import { NftEgress, type Egress } from '../hostnet/egress.ts';
import { noEgress } from '../hostnet/egress-fake.ts';
import { KmsgEgressLog, type EgressLogSource } from '../hostnet/egress-log.ts';
import { PrivServiceImpl } from './services/priv.ts';
import { DEFAULT_POOL, poolContext } from './validate.ts';

export interface HelperOptions {
  socket: string;
  ownerUid: number;
  log: Logger;
  /** Every bridge subnet and guest address must lie in this block (default 10.213.0.0/16). */
  pool?: string;
  /** Host networking seams; tests pass the recording fake. Default: iproute2, nftables, resolved. */
  hostnet?: { links: Links; nat: Nat; resolver: Resolver; egress?: Egress };
  /** Where egress denials come from (default: /dev/kmsg, followed from now on). */
  egressLog?: EgressLogSource & { error?: string | undefined };
  /** The JSON log file the helper writes (named by priv.ping, for op traces). */
  logFile?: string;
  /** TEST-ONLY fault injection: this priv.* verb always fails (env BANGER_TEST_FAIL_VERB). */
  testFailVerb?: string;
}

export async function startHelper(opts: HelperOptions): Promise<{ server: Server; host: HelperHost }> {
  const net = opts.hostnet ?? { links: new IpLinks(), nat: new NftNat(), resolver: new ResolvedResolver() };
  // Injected host networking without egress (older tests): never the real nftables.
  const egress = net.egress ?? (opts.hostnet ? noEgress : new NftEgress());
  const egressLog = opts.egressLog ?? new KmsgEgressLog();
  if (egressLog.error)
    opts.log.warn(
      { err: egressLog.error },
      'cannot follow the kernel log: egress denials will not be reported',
    );
  const services: HelperServices = {
    priv: new PrivServiceImpl({
      links: net.links,
      nat: net.nat,
      resolver: net.resolver,
      egress,
      egressLog,
      ownerUid: opts.ownerUid,
      vocabulary: poolContext(opts.pool ?? DEFAULT_POOL),
      ...(opts.logFile ? { logFile: opts.logFile } : {}),
      ...(opts.testFailVerb ? { testFailVerb: opts.testFailVerb } : {}),
    }),
  };
  const host: HelperHost = { services };
  const allowed = new Set([0, opts.ownerUid]);
  const server = createRpcServer({
    log: opts.log,
    summaryPrefix: 'helper rpc',
    dispatcher: {
      dispatch: (ctx, req) =>
        dispatchChecked(helperDeclaredErrors, ctx, req, () => dispatchTable(helperHandlers, host, ctx, req)),
    },
    authorize: (socket) => {
      let peer;
      try {
        peer = peerCredOf(socket);
      } catch (err) {
        // Fail closed: without credentials nobody is served.
        return {
          ok: false,
          reason: `cannot read peer credentials: ${err instanceof Error ? err.message : String(err)}`,
        };
      }
      if (!allowed.has(peer.uid)) {
        return {
          ok: false,
          reason: `peer uid ${peer.uid} is not allowed (serves uid ${opts.ownerUid} and root)`,
        };
      }
      return { ok: true, peer };
    },
  });
  // Root-owned directory that others may traverse; the socket itself belongs to the owner, 0600.
  await listenUnix(server, opts.socket, {
    dirMode: 0o711,
    socketMode: 0o600,
    owner: { uid: opts.ownerUid, gid: 0 },
  });
  opts.log.info(
    {
      socket: opts.socket,
      owner_uid: opts.ownerUid,
      pool: opts.pool ?? DEFAULT_POOL,
      version: BANGER_VERSION,
    },
    'bangerd-root listening',
  );
  return { server, host };
}
