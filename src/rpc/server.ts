// NDJSON over a unix socket: one request line per connection, one response line (or a stream of
// frames ending in a final line), then close. Owns framing, limits, op ids and the one summary
// log line per call; what a method means is the dispatcher's business.
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import {
  adoptOrMintOpId,
  mintOpId,
  opContext,
  type OpStore,
  type PeerCred,
  type RpcContext,
} from './context.ts';
import {
  isStreamResponse,
  MAX_REQUEST_BYTES,
  type HandlerResponse,
  type RequestEnvelope,
  type ResponseEnvelope,
} from './envelope.ts';
import { ErrorResponse, toErrorResponse } from './errors.ts';

export interface Dispatcher {
  dispatch(ctx: RpcContext, req: RequestEnvelope): Promise<HandlerResponse>;
}

export interface RpcServerOptions {
  dispatcher: Dispatcher;
  log: Logger;
  /** Prefix of the summary line: "rpc" gives "rpc completed" / "rpc failed". */
  summaryPrefix: string;
  /** Check a peer before dispatch: serve it (with its credentials) or refuse it with a reason. */
  authorize?: (socket: Socket) => { ok: true; peer: PeerCred } | { ok: false; reason: string };
  /** How long a client may take to send its request line. */
  requestTimeoutMs?: number;
  /** Called after a response was written (e.g. to shut down after `shutdown`). */
  onResponded?: (method: string, ok: boolean) => void;
  /** Called once per call after its summary line, with what the line says (op records). */
  onFinished?: (summary: RpcFinished) => void;
}

/** One served call, as its summary line describes it. Times are epoch ms. */
export interface RpcFinished {
  opId: string;
  /** Empty when the envelope could not be decoded. */
  method: string;
  startedAt: number;
  endedAt: number;
  durationMs: number;
  ok: boolean;
  code?: string;
  message?: string;
  /** The decoded params (untrusted when the call failed validation). */
  params?: unknown;
  /** The VM the call noted it touched (noteOpVm). */
  vm?: string;
}

export function createRpcServer(opts: RpcServerOptions): Server {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    void serveConnection(socket, opts).catch((err: unknown) => {
      opts.log.error({ err }, 'connection handler crashed');
      socket.destroy();
    });
  });
  return server;
}

type ReadResult = { line: string } | { error: ErrorResponse };

function readRequestLine(socket: Socket, timeoutMs: number): Promise<ReadResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: ReadResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onEnd);
      socket.pause();
      resolve(r);
    };
    const timer = setTimeout(
      () =>
        finish({
          error: new ErrorResponse('bad_request', `no complete request line within ${timeoutMs} ms`),
        }),
      timeoutMs,
    );
    const onData = (buf: Buffer): void => {
      const nl = buf.indexOf(0x0a);
      const take = nl === -1 ? buf : buf.subarray(0, nl);
      size += take.length;
      if (size > MAX_REQUEST_BYTES) {
        finish({ error: new ErrorResponse('bad_request', `request larger than ${MAX_REQUEST_BYTES} bytes`) });
        return;
      }
      chunks.push(take);
      if (nl !== -1) finish({ line: Buffer.concat(chunks).toString('utf8') });
    };
    const onEnd = (): void => {
      if (size === 0)
        finish({ error: new ErrorResponse('bad_request', 'connection closed before a request') });
      else finish({ line: Buffer.concat(chunks).toString('utf8') });
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onEnd);
  });
}

/** Decode one request line into an envelope, or say precisely why it is malformed. */
export function decodeEnvelope(line: string): RequestEnvelope | ErrorResponse {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return new ErrorResponse('bad_request', 'malformed request: not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    return new ErrorResponse('bad_request', 'malformed request: not a JSON object');
  }
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!['version', 'method', 'params', 'op_id'].includes(k)) {
      return new ErrorResponse('bad_request', `malformed request: unknown field "${k}"`);
    }
  }
  if (typeof o.version !== 'number' || !Number.isInteger(o.version)) {
    return new ErrorResponse('bad_request', 'malformed request: "version" must be an integer');
  }
  if (typeof o.method !== 'string' || o.method.length === 0 || o.method.length > 128) {
    return new ErrorResponse('bad_request', 'malformed request: "method" must be a non-empty string');
  }
  if (
    o.params !== undefined &&
    o.params !== null &&
    (typeof o.params !== 'object' || Array.isArray(o.params))
  ) {
    return new ErrorResponse('bad_request', 'malformed request: "params" must be an object');
  }
  if (o.op_id !== undefined && typeof o.op_id !== 'string') {
    return new ErrorResponse('bad_request', 'malformed request: "op_id" must be a string');
  }
  const env: RequestEnvelope = { version: o.version, method: o.method };
  if (o.params !== undefined && o.params !== null) env.params = o.params;
  if (typeof o.op_id === 'string') env.op_id = o.op_id;
  return env;
}

function write(socket: Socket, obj: unknown): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed || !socket.writable) return resolve();
    socket.write(`${JSON.stringify(obj)}\n`, () => resolve());
  });
}

async function serveConnection(socket: Socket, opts: RpcServerOptions): Promise<void> {
  socket.on('error', () => undefined);
  const startedAt = Date.now();
  const read = await readRequestLine(socket, opts.requestTimeoutMs ?? 10_000);
  let env: RequestEnvelope | ErrorResponse = 'error' in read ? read.error : decodeEnvelope(read.line);
  // Adopt the caller's id when we can read one, even from an envelope we then refuse.
  const opId = env instanceof ErrorResponse ? mintOpId() : adoptOrMintOpId(env.op_id);
  const method = env instanceof ErrorResponse ? '' : env.method;
  let peer: PeerCred | undefined;
  if (!(env instanceof ErrorResponse) && opts.authorize) {
    const verdict = opts.authorize(socket);
    if (verdict.ok) peer = verdict.peer;
    else env = new ErrorResponse('unauthorized', verdict.reason);
  }
  const abort = new AbortController();
  let responded = false;
  socket.on('close', () => {
    if (!responded) abort.abort();
  });
  const store: OpStore = { opId, method, startedAt };
  await opContext.run(store, async () => {
    const ctx: RpcContext = { ...store, signal: abort.signal, log: opts.log };
    if (peer) ctx.peer = peer;
    let response: HandlerResponse;
    try {
      if (env instanceof ErrorResponse) throw env;
      response = await opts.dispatcher.dispatch(ctx, env);
    } catch (err) {
      response = errorEnvelope(toErrorResponse(err, opId));
    }
    let final: ResponseEnvelope;
    if (isStreamResponse(response)) {
      try {
        for await (const frame of response.stream) {
          if (socket.destroyed) break;
          await write(socket, { ok: true, frame, op_id: opId });
        }
        final = { ok: true, result: response.final() ?? null, op_id: opId };
        (final as { final?: boolean }).final = true;
      } catch (err) {
        final = errorEnvelope(toErrorResponse(err, opId));
      }
    } else {
      final = response;
    }
    responded = true;
    await write(socket, final);
    socket.end();
    const duration_ms = Date.now() - startedAt;
    if (final.ok) {
      opts.log.info({ method, duration_ms }, `${opts.summaryPrefix} completed`);
    } else {
      const e = final.error;
      opts.log.warn({ method, duration_ms, code: e.code, error: e.message }, `${opts.summaryPrefix} failed`);
    }
    if (opts.onFinished) {
      const f: RpcFinished = {
        opId,
        method,
        startedAt,
        endedAt: startedAt + duration_ms,
        durationMs: duration_ms,
        ok: final.ok,
      };
      if (!final.ok) {
        f.code = final.error.code;
        f.message = final.error.message;
      }
      if (!(env instanceof ErrorResponse) && env.params !== undefined) f.params = env.params;
      if (store.vm !== undefined) f.vm = store.vm;
      try {
        opts.onFinished(f);
      } catch (err) {
        opts.log.error({ err }, 'recording the call failed');
      }
    }
    opts.onResponded?.(method, final.ok);
  });
}

function errorEnvelope(e: ErrorResponse): ResponseEnvelope {
  return { ok: false, error: e.toWire() };
}
