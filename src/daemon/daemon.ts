// The owner daemon: composition root for the services, and the dispatcher the RPC server calls.
import { rpcDeclaredErrors, rpcHandlers } from '../../generated/dispatch.daemon.gen.ts';
import type { DaemonHost, Services } from '../../generated/handlers.gen.ts';
import type { Logger } from '../log/logger.ts';
import type { RpcContext } from '../rpc/context.ts';
import { dispatchTable } from '../rpc/dispatch.ts';
import { dispatchChecked } from '../rpc/error-check.ts';
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
    return dispatchChecked(rpcDeclaredErrors, ctx, req, () => dispatchTable(rpcHandlers, this, ctx, req));
  }
}
