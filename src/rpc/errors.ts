// One error type for the whole system. Services throw ErrorResponse (or anything else, which
// the dispatcher maps to operation_failed); clients reject with it. Its message ends with the
// op id, so a caller that just prints the error shows the id for free.
import { ERROR_CODES, type ErrorCode } from '../../generated/errors.gen.ts';
import type { WireError } from './envelope.ts';

export class ErrorResponse extends Error {
  readonly code: ErrorCode;
  readonly opId: string | undefined;
  readonly data: unknown;
  /** The message without the op id suffix. */
  readonly bareMessage: string;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { opId?: string; data?: unknown; cause?: unknown } = {},
  ) {
    super(
      opts.opId ? `${message} (${opts.opId})` : message,
      opts.cause !== undefined ? { cause: opts.cause } : {},
    );
    this.name = 'ErrorResponse';
    this.code = code;
    this.opId = opts.opId;
    this.data = opts.data;
    this.bareMessage = message;
  }

  /** The same error, stamped with an op id (if it has none yet). */
  withOpId(opId: string): ErrorResponse {
    if (this.opId) return this;
    const e = new ErrorResponse(this.code, this.bareMessage, { opId, data: this.data, cause: this.cause });
    e.stack = this.stack;
    return e;
  }

  toWire(): WireError {
    const w: WireError = { code: this.code, message: this.bareMessage };
    if (this.opId) w.op_id = this.opId;
    if (this.data !== undefined) w.data = this.data;
    return w;
  }

  static fromWire(w: WireError): ErrorResponse {
    const code: ErrorCode = isErrorCode(w.code) ? w.code : 'operation_failed';
    return new ErrorResponse(code, String(w.message ?? ''), { opId: w.op_id, data: w.data });
  }
}

/** Alias: services "throw an RpcError"; it is the same class. */
export { ErrorResponse as RpcError };

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && Object.hasOwn(ERROR_CODES, x);
}

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
