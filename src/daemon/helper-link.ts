// The daemon's typed link to the root helper. The transport forwards the current op id, so the
// helper's log lines carry the id of the daemon RPC that caused them.
import { existsSync } from 'node:fs';
import { HelperClient } from '../../generated/client.gen.ts';
import type { DaemonStatusResult } from '../../generated/types.gen.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import { SocketTransport } from '../rpc/transport.ts';

export class HelperLink {
  readonly socketPath: string | undefined;
  readonly client: HelperClient | undefined;

  constructor(socketPath: string | undefined) {
    this.socketPath = socketPath;
    this.client = socketPath
      ? new HelperClient(new SocketTransport(socketPath, { timeoutMs: 30_000 }))
      : undefined;
  }

  /** Health as reported by daemon.status: never throws. */
  async health(): Promise<DaemonStatusResult['helper']> {
    if (!this.client || !this.socketPath) return { configured: false, reachable: false };
    const base = { configured: true, socket: this.socketPath };
    if (!existsSync(this.socketPath))
      return { ...base, reachable: false, error: 'helper socket does not exist' };
    try {
      const r = await this.client.priv.ping(undefined, { timeoutMs: 3000 });
      return { ...base, reachable: true, version: r.version, uid: r.uid };
    } catch (err) {
      const msg =
        err instanceof ErrorResponse
          ? `${err.code}: ${err.bareMessage}`
          : err instanceof Error
            ? err.message
            : String(err);
      return { ...base, reachable: false, error: msg };
    }
  }
}
