// Client side of the wire, with nothing but node:net: one connection per call, frames of a
// streaming method handed to onFrame, wire errors rejected as ErrorResponse. No async context and
// no op-id minting: the SDK (src/sdk.ts) is built on this alone, and transport.ts adds the op-id
// forwarding the daemon and the CLI need.
import { connect } from 'node:net';
import { PROTOCOL_VERSION } from '../../generated/methods.gen.ts';
import { ErrorResponse } from './client-errors.ts';
import type { RequestEnvelope, WireError } from './envelope.ts';

export interface CallOptions {
  /** Give up after this long (default: no limit for daemon calls, which may be long). */
  timeoutMs?: number;
  /** Use this op id instead of the one in the async context. */
  opId?: string;
  signal?: AbortSignal;
  /** Receives each frame of a streaming method. */
  onFrame?: (frame: unknown) => void;
}

/** The socket could not be reached at all: no daemon listening, or no permission. */
export class ConnectError extends Error {
  readonly socketPath: string;
  readonly errno: string | undefined;
  constructor(socketPath: string, cause: NodeJS.ErrnoException) {
    const why =
      cause.code === 'ENOENT' || cause.code === 'ECONNREFUSED'
        ? 'nothing is listening there'
        : cause.code === 'EACCES'
          ? 'permission denied'
          : cause.message;
    super(`cannot reach ${socketPath}: ${why}`, { cause });
    this.name = 'ConnectError';
    this.socketPath = socketPath;
    this.errno = cause.code;
  }
}

/** One request envelope of the current protocol version (params and op id only when given). */
export function requestEnvelope(method: string, params: unknown, opId: string | undefined): RequestEnvelope {
  const req: RequestEnvelope = { version: PROTOCOL_VERSION, method };
  if (params !== undefined) req.params = params;
  if (opId !== undefined) req.op_id = opId;
  return req;
}

/** A Transport over the daemon's unix socket that sends the caller's op id only when given one. */
export class UnixSocketTransport {
  readonly socketPath: string;
  protected readonly defaults: CallOptions;

  constructor(socketPath: string, defaults: CallOptions = {}) {
    this.socketPath = socketPath;
    this.defaults = defaults;
  }

  call(method: string, params?: unknown, options: CallOptions = {}): Promise<unknown> {
    const opts = { ...this.defaults, ...options };
    return rawCall(this.socketPath, requestEnvelope(method, params, opts.opId), opts);
  }
}

/** Send one envelope, collect frames, resolve with the final result or reject with ErrorResponse. */
export function rawCall(socketPath: string, req: RequestEnvelope, opts: CallOptions = {}): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    let settled = false;
    let connected = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      fn();
    };
    const onAbort = (): void =>
      settle(() => reject(new ErrorResponse('canceled', 'call canceled', { opId: req.op_id })));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = opts.timeoutMs
      ? setTimeout(
          () =>
            settle(() =>
              reject(
                new ErrorResponse(
                  'operation_failed',
                  `${req.method}: no answer within ${opts.timeoutMs} ms`,
                  { opId: req.op_id },
                ),
              ),
            ),
          opts.timeoutMs,
        )
      : undefined;
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      sock.write(`${JSON.stringify(req)}\n`);
    });
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        let msg: { ok?: boolean; result?: unknown; frame?: unknown; error?: WireError };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          settle(() => reject(new ErrorResponse('operation_failed', `malformed response to ${req.method}`)));
          return;
        }
        if (msg.ok === false && msg.error) {
          const e = ErrorResponse.fromWire(msg.error);
          settle(() => reject(e));
          return;
        }
        if ('frame' in msg) {
          opts.onFrame?.(msg.frame);
          continue;
        }
        settle(() => resolve(msg.result));
        return;
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected) settle(() => reject(new ConnectError(socketPath, err)));
      else
        settle(() =>
          reject(
            new ErrorResponse('operation_failed', `${req.method}: connection error: ${err.message}`, {
              opId: req.op_id,
            }),
          ),
        );
    });
    sock.on('close', () =>
      settle(() =>
        reject(
          new ErrorResponse('operation_failed', `${req.method}: connection closed without an answer`, {
            opId: req.op_id,
          }),
        ),
      ),
    );
  });
}
