import type { Server } from 'node:net';
import { helperHandlers } from '../../generated/dispatch.gen.ts';
import type { HelperHost, HelperServices } from '../../generated/handlers.gen.ts';
import type { Logger } from '../log/logger.ts';
import { dispatchTable } from '../rpc/dispatch.ts';
import { listenUnix } from '../rpc/listen.ts';
import { peerCredOf } from '../rpc/peercred.ts';
import { createRpcServer } from '../rpc/server.ts';
import { BANGER_VERSION } from '../version.ts';
import { PrivServiceImpl } from './services/priv.ts';

export interface HelperOptions {
  socket: string;
  ownerUid: number;
  log: Logger;
}

export async function startHelper(opts: HelperOptions): Promise<{ server: Server; host: HelperHost }> {
  const services: HelperServices = { priv: new PrivServiceImpl() };
  const host: HelperHost = { services };
  const allowed = new Set([0, opts.ownerUid]);
  const server = createRpcServer({
    log: opts.log,
    summaryPrefix: 'helper rpc',
    dispatcher: { dispatch: (ctx, req) => dispatchTable(helperHandlers, host, ctx, req) },
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
    { socket: opts.socket, owner_uid: opts.ownerUid, version: BANGER_VERSION },
    'bangerd-root listening',
  );
  return { server, host };
}
