// The client SDK, published as `banger/client`: the generated typed client on a unix-socket
// transport, plus what only a library user needs (the default socket, error narrowing, a waiter
// for any operation id). Its module graph is this file, generated/{client,methods,errors,types}.gen.ts,
// src/paths.ts and src/rpc/client-*.ts: node builtins only, nothing of the daemon (the SDK test
// checks it), so installing the package and importing this costs no daemon code.
import {
  BangerClient as GeneratedBangerClient,
  OPERATION_KINDS,
  type ErrorCodeOf,
  type OperationStatusMap,
  type Transport,
} from '../generated/client.gen.ts';
import { UNIVERSAL_ERROR_CODES } from '../generated/errors.gen.ts';
import { METHODS, type MethodMap } from '../generated/methods.gen.ts';
import { resolveDaemonSocket } from './paths.ts';
import { ErrorResponse } from './rpc/client-errors.ts';
import { UnixSocketTransport } from './rpc/client-socket.ts';
import { waitForOperation, type WaitOptions } from './rpc/client-wait.ts';

export * from '../generated/client.gen.ts';
export type * from '../generated/types.gen.ts';
export { ERROR_CODES, type ErrorCode } from '../generated/errors.gen.ts';
export { METHODS, PROTOCOL_VERSION, type MethodMap, type MethodName } from '../generated/methods.gen.ts';
export { ErrorResponse, isErrorCode } from './rpc/client-errors.ts';
export { ConnectError, UnixSocketTransport, type CallOptions } from './rpc/client-socket.ts';
export type { FrameStream } from './rpc/client-stream.ts';
export { operationError, type WaitOptions } from './rpc/client-wait.ts';

export interface BangerClientOptions {
  /** The daemon's socket. Default: $BANGER_SOCKET, then the CLI's default (as `banger --socket`). */
  socket?: string | undefined;
  /** Send requests through this instead of a unix socket (`socket` is then ignored). */
  transport?: Transport | undefined;
  /** Give up on any call after this long (per call: `{ timeoutMs }`). Default: no limit. */
  timeoutMs?: number | undefined;
}

/** Any operation's status: the result of its `<kind>.status` method. */
export type OperationStatus = OperationStatusMap[keyof OperationStatusMap];

/** An ErrorResponse from a call of `M`, its code narrowed to what `M` may reject with. */
export type MethodError<M extends keyof MethodMap> = ErrorResponse & { readonly code: ErrorCodeOf<M> };

/**
 * Whether `err` is a wire error with a code `method` may reject with (its declared codes, the
 * universal ones, or `canceled`); narrows `err.code` to that union.
 */
export function isMethodError<M extends keyof MethodMap>(err: unknown, method: M): err is MethodError<M> {
  if (!(err instanceof ErrorResponse)) return false;
  const declared: readonly string[] = METHODS[method].errors;
  return declared.includes(err.code) || UNIVERSAL_ERROR_CODES.includes(err.code) || err.code === 'canceled';
}

export interface OperationsApi {
  /**
   * Wait for the operation an op id began (the `operation_id` of any `*.begin` result): learns its
   * kind from `op.show`, then polls `<kind>.status` like `client.vm.create.wait(id)` does.
   */
  wait(operationId: string, options?: WaitOptions<OperationStatus>): Promise<OperationStatus>;
}

/** The daemon's typed client: `await new BangerClient().daemon.status()`. */
export class BangerClient extends GeneratedBangerClient {
  /** The socket calls go to; undefined with a custom transport. */
  readonly socket: string | undefined;
  readonly operations: OperationsApi;

  constructor(options: BangerClientOptions = {}) {
    const socket = options.transport ? undefined : (options.socket ?? resolveDaemonSocket(undefined));
    const defaults = options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {};
    super(options.transport ?? new UnixSocketTransport(socket as string, defaults));
    this.socket = socket;
    this.operations = {
      wait: async (operationId, waitOptions = {}) => {
        const signal = waitOptions.signal;
        const shown = await this.op.show({ op_id: operationId }, signal ? { signal } : undefined);
        const kind = OPERATION_KINDS.find((k) => k === shown.operation?.kind);
        if (kind === undefined) {
          throw new ErrorResponse(
            'not_found',
            `${operationId} did not begin an operation this client can wait for`,
            {
              opId: operationId,
            },
          );
        }
        const status = `${kind}.status` as const;
        return waitForOperation<OperationStatus>(
          (s) => this.call(status, { operation_id: operationId }, s ? { signal: s } : undefined),
          waitOptions,
        );
      },
    };
  }
}
