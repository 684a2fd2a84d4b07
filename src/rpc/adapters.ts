// Generic adapters the generated dispatcher table is built from. A handler receives the call's
// context, the host object that holds the services, and the decoded request envelope, and
// returns a response value. Errors thrown here are mapped once, by dispatch().
import type { ValidateFunction } from 'ajv';
import type { RpcContext } from './context.ts';
import type { HandlerResponse, RequestEnvelope } from './envelope.ts';
import { ErrorResponse } from './errors.ts';
import { describeAjvErrors } from './validation.ts';

export type Handler<H> = (ctx: RpcContext, host: H, req: RequestEnvelope) => Promise<HandlerResponse>;

/**
 * What the service of a kind "stream" method returns: its result, alone (a plain response), or
 * after the frames (each sent as a frame line, then the result as the final line). The frames
 * are the service's to end when the call's signal (ctx.signal) aborts: the client hung up.
 */
export interface StreamReply<F, R> {
  frames?: AsyncIterable<F>;
  /** Read once the frames have ended, so a producer may still settle it while streaming. */
  result: R;
}

/** The params of a request, checked against the method's schema (unknown fields rejected). */
function validated<P>(validate: ValidateFunction<P>, req: RequestEnvelope): P {
  const params = req.params === undefined ? {} : req.params;
  if (!validate(params)) {
    throw new ErrorResponse(
      'bad_request',
      `invalid params for ${req.method}: ${describeAjvErrors(validate.errors)}`,
    );
  }
  return params;
}

/** Validate params (unknown fields rejected), call the service, encode its result. */
export function paramHandler<H, P, R>(
  validate: ValidateFunction<P>,
  call: (host: H, params: P, ctx: RpcContext) => Promise<R>,
): Handler<H> {
  return async (ctx, host, req) => {
    const result = await call(host, validated(validate, req), ctx);
    return { ok: true, result: result ?? null, op_id: ctx.opId };
  };
}

/**
 * A kind "stream" method: validate params, call the service with the call's context (whose
 * signal the server aborts when the client hangs up, which ends the frames), then answer with its
 * result alone or stream its frames before it. Framing, the final line and the hang-up watch are
 * the server's (src/rpc/server.ts).
 */
export function streamHandler<H, P, F, R>(
  validate: ValidateFunction<P>,
  call: (host: H, params: P, ctx: RpcContext) => Promise<StreamReply<F, R>>,
): Handler<H> {
  return async (ctx, host, req) => {
    const reply = await call(host, validated(validate, req), ctx);
    if (!reply.frames) return { ok: true, result: reply.result ?? null, op_id: ctx.opId };
    return { stream: reply.frames, final: () => reply.result };
  };
}

/** A method without params: any params other than absent, null or {} are refused. */
export function noParamHandler<H, R>(call: (host: H, ctx: RpcContext) => Promise<R>): Handler<H> {
  return async (ctx, host, req) => {
    const p = req.params;
    const empty =
      p === undefined ||
      p === null ||
      (typeof p === 'object' && !Array.isArray(p) && Object.keys(p as object).length === 0);
    if (!empty) throw new ErrorResponse('bad_request', `${req.method} takes no params`);
    const result = await call(host, ctx);
    return { ok: true, result: result ?? null, op_id: ctx.opId };
  };
}
