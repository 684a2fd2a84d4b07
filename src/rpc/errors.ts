// One error type for the whole system. Services throw ErrorResponse (or anything else, which
// the dispatcher maps to operation_failed); clients reject with it. Its message ends with the
// op id, so a caller that just prints the error shows the id for free.
import { ErrorResponse } from './client-errors.ts';

// The class lives in client-errors.ts so the client SDK can use it without this module's mapping.
export { ErrorResponse, isErrorCode } from './client-errors.ts';

/** Alias: services "throw an RpcError"; it is the same class. */
export { ErrorResponse as RpcError };

/** The one mapping point from anything thrown to a wire error code. */
export function toErrorResponse(err: unknown, opId: string): ErrorResponse {
  if (err instanceof ErrorResponse) return err.withOpId(opId);
  if (isAbortError(err)) return new ErrorResponse('canceled', 'the operation was canceled', { opId });
  const message = err instanceof Error ? err.message : String(err);
  return new ErrorResponse('operation_failed', message, { opId, cause: err });
}

function isAbortError(err: unknown): boolean {
  return err instanceof Error && err.name === 'AbortError';
}

export const notFound = (what: string): ErrorResponse => new ErrorResponse('not_found', `${what} not found`);
export const badRequest = (message: string): ErrorResponse => new ErrorResponse('bad_request', message);
export const conflict = (message: string): ErrorResponse => new ErrorResponse('conflict', message);
