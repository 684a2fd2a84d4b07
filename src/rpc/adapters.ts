// Generic adapters the generated dispatcher table is built from. A handler receives the call's
// context, the host object that holds the services, and the decoded request envelope, and
// returns a response value. Errors thrown here are mapped once, by dispatch().
import type { ValidateFunction } from 'ajv';
import type { RpcContext } from './context.ts';
import type { HandlerResponse, RequestEnvelope } from './envelope.ts';
import { ErrorResponse } from './errors.ts';
import { describeAjvErrors } from './validation.ts';

export type Handler<H> = (ctx: RpcContext, host: H, req: RequestEnvelope) => Promise<HandlerResponse>;

/** Validate params (unknown fields rejected), call the service, encode its result. */
export function paramHandler<H, P, R>(
  validate: ValidateFunction<P>,
  call: (host: H, params: P, ctx: RpcContext) => Promise<R>,
): Handler<H> {
  return async (ctx, host, req) => {
    const params = req.params === undefined ? {} : req.params;
    if (!validate(params)) {
      throw new ErrorResponse(
        'bad_request',
        `invalid params for ${req.method}: ${describeAjvErrors(validate.errors)}`,
      );
    }
    const result = await call(host, params, ctx);
    return { ok: true, result: result ?? null, op_id: ctx.opId };
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
