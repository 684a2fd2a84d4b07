// Table dispatch shared by the daemon and the root helper: version check, table lookup,
// invoke-or-unknown. Envelope framing, op ids and error mapping live in server.ts.
import { PROTOCOL_VERSION } from '../../generated/methods.gen.ts';
import type { Handler } from './adapters.ts';
import type { RpcContext } from './context.ts';
import type { HandlerResponse, RequestEnvelope } from './envelope.ts';
import { ErrorResponse } from './errors.ts';

export function dispatchTable<H>(
  table: Readonly<Record<string, Handler<H>>>,
  host: H,
  ctx: RpcContext,
  req: RequestEnvelope,
): Promise<HandlerResponse> {
  if (req.version !== PROTOCOL_VERSION) {
    throw new ErrorResponse(
      'bad_version',
      `protocol version ${req.version} is not supported (speaks ${PROTOCOL_VERSION})`,
    );
  }
  const handler = Object.hasOwn(table, req.method) ? table[req.method] : undefined;
  if (!handler) throw new ErrorResponse('unknown_method', `unknown method "${req.method}"`);
  return handler(ctx, host, req);
}
