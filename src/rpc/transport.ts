// Client side of the wire for banger's own processes: SocketTransport forwards the current op id
// from the async context, so a daemon RPC and the helper RPCs it triggers share one id. The
// socket work itself is client-socket.ts (shared with the SDK, which has no async context).
import { currentOpId } from './context.ts';
import { UnixSocketTransport, type CallOptions } from './client-socket.ts';

export { ConnectError, rawCall, type CallOptions } from './client-socket.ts';

/** UnixSocketTransport that falls back to the op id of the current async context. */
export class SocketTransport extends UnixSocketTransport {
  override call(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    const opId = options.opId ?? this.defaults.opId ?? currentOpId();
    return super.call(method, params, opId === undefined ? options : { ...options, opId });
  }
}
