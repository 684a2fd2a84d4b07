// The daemon's typed link to the root helper. The transport forwards the current op id, so the
// helper's log lines carry the id of the daemon RPC that caused them.
import { existsSync } from 'node:fs';
import { HelperClient } from '../../generated/client.gen.ts';
import type { DaemonStatusResult } from '../../generated/types.gen.ts';
import { ErrorResponse } from '../rpc/errors.ts';
import { SocketTransport, type CallOptions } from '../rpc/transport.ts';

/**
 * The root helper answered a call with an error. The daemon's own caller never spoke to the
 * helper, so its code is not relayed as theirs (a helper `unauthorized` or `bad_request` is the
 * daemon's failure): src/rpc/error-map.ts maps it to operation_failed, a cancellation to canceled.
 */
export class HelperError extends Error {
  /** The helper's wire code. */
  readonly code: ErrorResponse['code'];
  readonly method: string;
  constructor(method: string, e: ErrorResponse) {
    // The client's own timeout message already starts with the method.
    const what = e.bareMessage.startsWith(`${method}:`) ? e.bareMessage : `${method}: ${e.bareMessage}`;
    super(`root helper: ${what}`, { cause: e });
    this.name = 'HelperError';
    this.code = e.code;
    this.method = method;
  }
}

/** SocketTransport whose wire errors become HelperError. */
class HelperTransport extends SocketTransport {
  override async call(method: string, params?: unknown, options?: CallOptions): Promise<unknown> {
    try {
      return await super.call(method, params, options);
    } catch (err) {
      throw err instanceof ErrorResponse ? new HelperError(method, err) : err;
    }
  }
}

export class HelperLink {
  readonly socketPath: string | undefined;
  readonly client: HelperClient | undefined;

  constructor(socketPath: string | undefined) {
    this.socketPath = socketPath;
    this.client = socketPath
      ? new HelperClient(new HelperTransport(socketPath, { timeoutMs: 30_000 }))
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
      const e = err instanceof HelperError ? err.cause : err;
      const msg =
        e instanceof ErrorResponse
          ? `${e.code}: ${e.bareMessage}`
          : e instanceof Error
            ? e.message
            : String(e);
      return { ...base, reachable: false, error: msg };
    }
  }
}
