// The operations layer's own error: operations and traces say what went wrong by kind; the one
// table in src/rpc/error-map.ts gives the wire code (OpError's kinds → wire codes).

export type OpErrorKind = 'not_found' | 'conflict' | 'canceled';

export class OpError extends Error {
  readonly code: OpErrorKind;
  constructor(code: OpErrorKind, message: string) {
    super(message);
    this.name = 'OpError';
    this.code = code;
  }
}
