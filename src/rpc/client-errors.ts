// The wire error as a client (and the services) see it. Kept apart from errors.ts, which maps
// anything a service throws to a code, so the client SDK's module graph holds nothing but this
// class and the generated ERROR_CODES table. Its message ends with the op id, so a caller that
// just prints the error shows the id for free.
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
    opts: { opId?: string | undefined; data?: unknown; cause?: unknown } = {},
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

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && Object.hasOwn(ERROR_CODES, x);
}
