// Errors raised by the state store, and recognizers for the SQLite constraint errors that
// node:sqlite throws (plain Errors with code 'ERR_SQLITE_ERROR' and an extended `errcode`).

export type StoreErrorCode =
  /** The database file is damaged or is not a SQLite database. */
  | 'corrupt'
  /** A read-only open of a database that does not exist. */
  | 'missing'
  /** SQLite could not open the file (permissions, a directory, ...). */
  | 'open_failed'
  /** The schema needs migrations this process will not apply (read-only open). */
  | 'schema_outdated'
  /** A migration failed; it was rolled back. */
  | 'migration_failed'
  /** The row to update, or to make default, does not exist. */
  | 'not_found'
  /** Deletion refused: other rows reference this one. */
  | 'in_use'
  /** No free address left in a guest network. */
  | 'exhausted'
  /** A column held a value of the wrong type (hand-edited or foreign database). */
  | 'bad_row';

export class StoreError extends Error {
  readonly code: StoreErrorCode;

  constructor(code: StoreErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : {});
    this.name = 'StoreError';
    this.code = code;
  }
}

export function isStoreError(err: unknown, code?: StoreErrorCode): err is StoreError {
  return err instanceof StoreError && (code === undefined || err.code === code);
}

// SQLite extended result codes (https://sqlite.org/rescode.html).
const SQLITE_CONSTRAINT = 19;
const SQLITE_CONSTRAINT_CHECK = 275;
const SQLITE_CONSTRAINT_FOREIGNKEY = 787;
const SQLITE_CONSTRAINT_NOTNULL = 1299;
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;
const SQLITE_CONSTRAINT_UNIQUE = 2067;

/** The extended SQLite result code of an error thrown by node:sqlite, if it is one. */
export function sqliteErrcode(err: unknown): number | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as Error & { code?: unknown; errcode?: unknown };
  return e.code === 'ERR_SQLITE_ERROR' && typeof e.errcode === 'number' ? e.errcode : undefined;
}

/** A UNIQUE (or PRIMARY KEY) constraint failed: a duplicate name, guest IP, second default image... */
export function isUniqueViolation(err: unknown): boolean {
  const c = sqliteErrcode(err);
  return c === SQLITE_CONSTRAINT_UNIQUE || c === SQLITE_CONSTRAINT_PRIMARYKEY;
}

/** A FOREIGN KEY constraint failed (a reference to a missing row, or deleting a referenced one). */
export function isForeignKeyViolation(err: unknown): boolean {
  const c = sqliteErrcode(err);
  if (c === SQLITE_CONSTRAINT_FOREIGNKEY) return true;
  // ON DELETE RESTRICT is enforced by an internal trigger: SQLITE_CONSTRAINT_TRIGGER, same message.
  return (
    c !== undefined &&
    (c & 0xff) === SQLITE_CONSTRAINT &&
    /FOREIGN KEY constraint failed/.test((err as Error).message)
  );
}

/** A CHECK constraint failed (e.g. vcpus out of range, unknown state). */
export function isCheckViolation(err: unknown): boolean {
  return sqliteErrcode(err) === SQLITE_CONSTRAINT_CHECK;
}

export function isNotNullViolation(err: unknown): boolean {
  return sqliteErrcode(err) === SQLITE_CONSTRAINT_NOTNULL;
}

/**
 * The columns named by a UNIQUE violation, e.g. ['vms.name'] or ['vms.guest_ip'], so a caller can
 * tell a duplicate name from a duplicate address. Empty if err is not a UNIQUE violation.
 */
export function uniqueViolationColumns(err: unknown): string[] {
  if (!isUniqueViolation(err) || !(err instanceof Error)) return [];
  const m = /constraint failed: (.+)$/.exec(err.message);
  return m?.[1] ? m[1].split(',').map((s) => s.trim()) : [];
}
