// The owner daemon: composition root for the services, and the dispatcher the RPC server calls.
import { rpcHandlers } from '../../generated/dispatch.gen.ts';
import type { DaemonHost, Services } from '../../generated/handlers.gen.ts';
import type { Logger } from '../log/logger.ts';
import type { RpcContext } from '../rpc/context.ts';
import { dispatchTable } from '../rpc/dispatch.ts';
import type { HandlerResponse, RequestEnvelope } from '../rpc/envelope.ts';
import type { Dispatcher } from '../rpc/server.ts';

export class Daemon implements Dispatcher, DaemonHost {
  readonly services: Services;
  readonly log: Logger;

  constructor(log: Logger, services: Services) {
    this.log = log;
    this.services = services;
  }

  dispatch(ctx: RpcContext, req: RequestEnvelope): Promise<HandlerResponse> {
    return dispatchTable(rpcHandlers, this, ctx, req);
  }
}
