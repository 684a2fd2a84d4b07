// The engine's one error type. The daemon maps EngineError codes to wire codes at its single
// mapping point; the engine never imports the RPC layer.

export type EngineErrorCode =
  /** The launch spec is malformed (bad path, id, port, MAC, socket path too long, ...). */
  | 'invalid_spec'
  /** The driver cannot do what the spec asks (e.g. Firecracker with user-mode networking). */
  | 'unsupported'
  /** The VMM did not come up: it exited early, or never answered on its control socket. */
  | 'start_failed'
  /** A live VMM already owns this VM directory. */
  | 'already_running'
  /** The VMM process is gone. */
  | 'not_running'
  /** The process at the recorded pid is not the VMM we started. */
  | 'identity_mismatch'
  /** QMP answered with an error object. */
  | 'qmp_error'
  /** The QEMU guest agent (qemu-ga) answered with an error object. */
  | 'guest_agent'
  /** The control connection closed while a command was pending. */
  | 'control_closed'
  /** The Firecracker HTTP API answered with a non-2xx status. */
  | 'api_error'
  /** Something did not happen in time. */
  | 'timeout'
  /** The host filesystem is full (ENOSPC), e.g. while saving a VM's state. */
  | 'no_space';

export class EngineError extends Error {
  readonly code: EngineErrorCode;
  /** Structured context for logs and wire `data` (pid, stderr tail, QMP error class, ...). */
  readonly details: Record<string, unknown>;

  constructor(
    code: EngineErrorCode,
    message: string,
    opts: { details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : {});
    this.name = 'EngineError';
    this.code = code;
    this.details = opts.details ?? {};
  }
}

export function isEngineError(err: unknown, code?: EngineErrorCode): err is EngineError {
  return err instanceof EngineError && (code === undefined || err.code === code);
}

/** errno code of a Node system error, if any. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const c = (err as { code: unknown }).code;
    return typeof c === 'string' ? c : undefined;
  }
  return undefined;
}
