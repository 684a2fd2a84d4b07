// Client side of the wire for banger's own processes: SocketTransport forwards the current op id
// from the async context, so a daemon RPC and the helper RPCs it triggers share one id. The
// socket work itself is client-socket.ts (shared with the SDK, which has no async context).
import { currentOpId } from './context.ts';
import { rawCall, requestEnvelope, type CallOptions } from './client-socket.ts';

export { ConnectError, rawCall, type CallOptions } from './client-socket.ts';

export class SocketTransport {
  readonly socketPath: string;
  private readonly defaults: CallOptions;

  constructor(socketPath: string, defaults: CallOptions = {}) {
    this.socketPath = socketPath;
    this.defaults = defaults;
  }

  call(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    const opts = { ...this.defaults, ...options };
    return rawCall(this.socketPath, requestEnvelope(method, params, opts.opId ?? currentOpId()), opts);
  }
}
