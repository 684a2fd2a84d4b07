// One wire error type for the whole system. Domain code throws its own errors (StoreError,
// EngineError, HostnetError, ...); toErrorResponse maps them to wire codes through the one table in
// error-map.ts. Services may still throw ErrorResponse for a refusal only they can phrase (a name
// already taken, a VM busy). Clients reject with it; its message ends with the op id, so a caller
// that just prints the error shows the id for free.
import { ErrorResponse } from './client-errors.ts';
import { mapDomainError } from './error-map.ts';

// The class lives in client-errors.ts so the client SDK can use it without this module's mapping.
export { ErrorResponse, isErrorCode } from './client-errors.ts';

/** Alias: services "throw an RpcError"; it is the same class. */
export { ErrorResponse as RpcError };

/** The one mapping point from anything thrown to a wire error, stamped with the op id. */
export function toErrorResponse(err: unknown, opId: string): ErrorResponse {
  if (err instanceof ErrorResponse) return err.withOpId(opId);
  const m = mapDomainError(err);
  return new ErrorResponse(m.code, m.message, {
    opId,
    cause: err,
    ...(m.data !== undefined ? { data: m.data } : {}),
  });
}

export const notFound = (what: string): ErrorResponse => new ErrorResponse('not_found', `${what} not found`);
export const badRequest = (message: string): ErrorResponse => new ErrorResponse('bad_request', message);
export const conflict = (message: string): ErrorResponse => new ErrorResponse('conflict', message);
