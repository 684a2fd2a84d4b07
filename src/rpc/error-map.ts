// The one table from domain errors to wire codes (incus' SmartError, containerd's errdefs): domain
// modules throw their own errors (StoreError, EngineError, HostnetError, ...), and toErrorResponse
// (errors.ts) turns whatever reached the dispatcher into an ErrorResponse through this table.
//
// Keyed by the error's `name` (each domain class sets it), not by `instanceof`: src/rpc is loaded
// by bangerd-root too, which must not reach the store or the engine (test/unit/import-boundary);
// test/unit/error-map.test.ts checks the table against the real classes and their code unions.
import type { ErrorCode } from '../../generated/errors.gen.ts';
import { ErrorResponse } from './client-errors.ts';

/** What the table decides for one error: its wire code, a human message, and optional data. */
export interface MappedError {
  code: ErrorCode;
  message: string;
  data?: unknown;
}

/** Errors that carry their own reason code: class name → its code → wire code. */
export const DOMAIN_CODES = {
  // src/store/errors.ts
  StoreError: {
    not_found: 'not_found',
    in_use: 'conflict',
    exhausted: 'operation_failed',
    corrupt: 'operation_failed',
    missing: 'operation_failed',
    open_failed: 'operation_failed',
    schema_outdated: 'operation_failed',
    migration_failed: 'operation_failed',
    bad_row: 'operation_failed',
  },
  // src/engine/errors.ts
  EngineError: {
    invalid_spec: 'bad_request',
    unsupported: 'bad_request',
    already_running: 'conflict',
    not_running: 'not_running',
    start_failed: 'operation_failed',
    identity_mismatch: 'operation_failed',
    qmp_error: 'operation_failed',
    guest_agent: 'operation_failed',
    control_closed: 'operation_failed',
    api_error: 'operation_failed',
    timeout: 'operation_failed',
    no_space: 'operation_failed',
  },
  // src/vm/errors.ts: the VM layer's kinds.
  VmError: {
    invalid: 'bad_request',
    not_found: 'not_found',
    exists: 'already_exists',
    not_running: 'not_running',
    conflict: 'conflict',
    canceled: 'canceled',
    failed: 'operation_failed',
  },
  // src/ops/errors.ts: operations and traces.
  OpError: { not_found: 'not_found', conflict: 'conflict', canceled: 'canceled' },
  // src/daemon/helper-link.ts: the root helper answered with an error. The daemon's caller did
  // not talk to the helper, so its codes are not theirs: only a cancellation stays one.
  HelperError: {
    canceled: 'canceled',
  },
} as const satisfies Record<string, Readonly<Record<string, ErrorCode>>>;

/** Errors with one wire code whatever their content: class name → wire code. */
export const CLASS_CODES = {
  /** A refused VM state transition (src/vm/states.ts): the VM is in the wrong state. */
  TransitionError: 'conflict',
  /** iproute2 / nftables / resolvectl failed (src/hostnet/exec.ts); the message names the step. */
  HostnetError: 'operation_failed',
  /** A child process failed (src/image/exec.ts); the message holds its stderr tail. */
  CommandError: 'operation_failed',
  /** The guest's re-identification script failed (src/vm/reidentify.ts). */
  ReidentifyError: 'operation_failed',
  /** A socket could not be reached (src/rpc/client-socket.ts), e.g. the root helper's. */
  ConnectError: 'operation_failed',
  /** AbortSignal.timeout() fired. */
  TimeoutError: 'operation_failed',
  /** An AbortSignal fired (the caller hung up, a cancel, a shutdown) and nobody said why. */
  AbortError: 'canceled',
} as const satisfies Record<string, ErrorCode>;

/** Wire code of a domain code that is not in the table (a code added to a union, unmapped). */
const UNMAPPED: ErrorCode = 'operation_failed';

// SQLite extended result codes of node:sqlite errors that escaped the store untranslated
// (https://sqlite.org/rescode.html; the same constants as src/store/errors.ts).
const SQLITE_CODES: Readonly<Record<number, ErrorCode>> = {
  2067: 'already_exists', // SQLITE_CONSTRAINT_UNIQUE
  1555: 'already_exists', // SQLITE_CONSTRAINT_PRIMARYKEY
  787: 'conflict', // SQLITE_CONSTRAINT_FOREIGNKEY
  275: 'bad_request', // SQLITE_CONSTRAINT_CHECK
};

function sqliteMessage(code: ErrorCode, message: string): string {
  // "UNIQUE constraint failed: vms.name" → "a vm with this name already exists".
  const m = /UNIQUE constraint failed: (\w+)s\.(\w+)/.exec(message);
  if (code === 'already_exists' && m)
    return `a ${m[1]} with this ${m[2]!.replaceAll('_', ' ')} already exists`;
  return message;
}

function fieldOf(err: object, key: string): unknown {
  return (err as Record<string, unknown>)[key];
}

/** The wire code and message for anything thrown that is not already an ErrorResponse. */
export function mapDomainError(err: unknown): MappedError {
  if (!(err instanceof Error)) return { code: 'operation_failed', message: String(err) };
  if (err instanceof ErrorResponse) {
    return {
      code: err.code,
      message: err.bareMessage,
      ...(err.data !== undefined ? { data: err.data } : {}),
    };
  }
  const { name, message } = err;
  // An abort that carries its reason (signal.abort(reason), AbortSignal.timeout()): the reason
  // says what happened, e.g. a TimeoutError is a failure, not a cancellation.
  if (name === 'AbortError' && err.cause instanceof Error && err.cause.name !== 'AbortError') {
    return mapDomainError(err.cause);
  }
  const code = fieldOf(err, 'code');
  if (Object.hasOwn(DOMAIN_CODES, name)) {
    const table: Readonly<Record<string, ErrorCode>> = DOMAIN_CODES[name as keyof typeof DOMAIN_CODES];
    const wire = typeof code === 'string' && Object.hasOwn(table, code) ? table[code] : undefined;
    const out: MappedError = { code: wire ?? UNMAPPED, message };
    const details = fieldOf(err, 'details');
    if (details && typeof details === 'object' && Object.keys(details).length > 0) out.data = details;
    return out;
  }
  if (Object.hasOwn(CLASS_CODES, name)) {
    const wire: ErrorCode = CLASS_CODES[name as keyof typeof CLASS_CODES];
    return { code: wire, message: message || (wire === 'canceled' ? 'the operation was canceled' : name) };
  }
  const errcode = fieldOf(err, 'errcode');
  if (code === 'ERR_SQLITE_ERROR' && typeof errcode === 'number') {
    const wire = SQLITE_CODES[errcode] ?? 'operation_failed';
    return { code: wire, message: sqliteMessage(wire, message) };
  }
  return { code: 'operation_failed', message };
}
