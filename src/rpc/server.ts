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
import { endAndClose, hungUp, readRequestLine, writeLine } from './connection.ts';
import {
  isStreamResponse,
  type FinalResponse,
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
  /**
   * After the last line is flushed: how long a client that has not ended its side may keep the
   * connection (to finish writing, read the answer) before it is destroyed regardless.
   */
  lingerMs?: number;
  /** How long the last line may take to reach a client that does not read it. */
  flushTimeoutMs?: number;
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
  // Half-open allowed: a client may end its side right after the request line and still read
  // the answer. endAndClose() is what guarantees every socket is destroyed in the end.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    void serveConnection(socket, opts).catch((err: unknown) => {
      opts.log.error({ err }, 'connection handler crashed');
      socket.destroy();
    });
  });
  return server;
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
  // A plain call is canceled only when the connection is gone: a client may half-close after
  // its request and still wait for a long answer. A stream also ends on the client's EOF below.
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
        final = await pump(socket, response, opId, abort);
      } catch (err) {
        final = errorEnvelope(toErrorResponse(err, opId));
      }
    } else {
      final = response;
    }
    responded = true;
    await endAndClose(socket, `${JSON.stringify(final)}\n`, {
      lingerMs: opts.lingerMs ?? 2_000,
      flushTimeoutMs: opts.flushTimeoutMs ?? 30_000,
    });
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

/**
 * Send a stream's frames until it ends or the client hangs up. The hang-up is watched on its
 * own, not learned from a failed write: it aborts the call's signal at once, so the producer
 * stops its work (a follow that has nothing to write would otherwise run until the VM stops),
 * and the loop stops waiting for a frame or for a write the client will never read.
 */
async function pump(
  socket: Socket,
  response: { stream: AsyncIterable<unknown>; final: () => unknown },
  opId: string,
  abort: AbortController,
): Promise<ResponseEnvelope> {
  let streaming = true;
  const gone = hungUp(socket).then(() => {
    if (streaming) abort.abort();
    return 'gone' as const;
  });
  const it = response.stream[Symbol.asyncIterator]();
  try {
    for (;;) {
      const pending = it.next();
      // Raced against the hang-up: a producer that fails after we stopped listening is no error.
      pending.catch(() => undefined);
      const next = await Promise.race([pending, gone]);
      if (next === 'gone') break;
      if (next.done) return finalOf(response, opId);
      const frame = `${JSON.stringify({ ok: true, frame: next.value, op_id: opId })}\n`;
      if ((await Promise.race([writeLine(socket, frame), gone])) === 'gone') break;
    }
  } finally {
    streaming = false;
  }
  // The client hung up: let the producer wind down in the background (the signal told it to).
  Promise.resolve(it.return?.()).catch(() => undefined);
  return finalOf(response, opId);
}

function finalOf(response: { final: () => unknown }, opId: string): ResponseEnvelope {
  const final: FinalResponse = { ok: true, result: response.final() ?? null, op_id: opId, final: true };
  return final;
}

function errorEnvelope(e: ErrorResponse): ResponseEnvelope {
  return { ok: false, error: e.toWire() };
}
