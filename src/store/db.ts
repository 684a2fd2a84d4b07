// Opening the state database: pragmas, integrity check, private file permissions, migrations.
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { StoreError, sqliteErrcode } from './errors.ts';
import {
  MIGRATIONS,
  type Migration,
  migrationStatus,
  newerSchemaWarning,
  runMigrations,
} from './migrations.ts';
import type { Clock } from './rows.ts';
import { Store } from './store.ts';

export const BUSY_TIMEOUT_MS = 5000;

export interface OpenDatabaseOptions {
  /** Open read-only: the file must exist; nothing is created, chmod-ed or migrated. */
  readOnly?: boolean;
}

export interface OpenStoreOptions extends OpenDatabaseOptions {
  /** Clock for timestamps (tests). */
  now?: Clock;
  /** The migrations to apply (tests); defaults to MIGRATIONS. */
  migrations?: readonly Migration[];
}

const SQLITE_CORRUPT = 11;
const SQLITE_NOTADB = 26;

function isCorruptionError(err: unknown): boolean {
  const c = sqliteErrcode(err);
  return c !== undefined && ((c & 0xff) === SQLITE_CORRUPT || (c & 0xff) === SQLITE_NOTADB);
}

function corrupt(path: string, detail: string, cause?: unknown): StoreError {
  return new StoreError(
    'corrupt',
    `state database ${path} is corrupt or not a SQLite database (${detail}); ` +
      'move it aside (banger will start with an empty state) or restore a backup',
    cause === undefined ? {} : { cause },
  );
}

/** Create the parent directory (0700) and the file (0600) if missing; tighten a loose file to 0600. */
function preparePrivateFile(path: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(path, 'wx', 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = statSync(path);
  if (!st.isFile()) throw new StoreError('open_failed', `state database ${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) chmodSync(path, 0o600);
}

/**
 * Open the SQLite database at `path` (or ':memory:') with WAL journaling, foreign_keys=ON,
 * busy_timeout=5000 and synchronous=NORMAL, and verify it with PRAGMA quick_check. Does not
 * migrate. Throws StoreError 'missing' (read-only and no file), 'corrupt', or 'open_failed'.
 */
export function openDatabase(path: string, opts: OpenDatabaseOptions = {}): DatabaseSync {
  const readOnly = opts.readOnly ?? false;
  const memory = path === ':memory:';
  if (!memory) {
    if (readOnly) {
      if (!existsSync(path)) throw new StoreError('missing', `state database ${path} does not exist`);
    } else {
      preparePrivateFile(path);
    }
  }

  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { readOnly, timeout: BUSY_TIMEOUT_MS, enableForeignKeyConstraints: true });
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new StoreError('open_failed', `cannot open state database ${path}: ${msg}`, { cause: err });
  }

  try {
    db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.exec('PRAGMA foreign_keys = ON');
    if (!readOnly) {
      const mode = db.prepare('PRAGMA journal_mode = WAL').get()?.journal_mode;
      if (mode !== 'wal' && !memory)
        throw new Error(`could not enable WAL journaling (journal_mode=${String(mode)})`);
    }
    db.exec('PRAGMA synchronous = NORMAL');
    const problems = db
      .prepare('PRAGMA quick_check')
      .all()
      .map((r) => String(r.quick_check));
    if (problems.length !== 1 || problems[0] !== 'ok') {
      throw corrupt(path, `quick_check: ${problems.slice(0, 3).join('; ')}`);
    }
    return db;
  } catch (err) {
    db.close();
    if (err instanceof StoreError) throw err;
    if (isCorruptionError(err)) throw corrupt(path, err instanceof Error ? err.message : String(err), err);
    throw err;
  }
}

/**
 * Open the state store: openDatabase, then (read-write) apply pending migrations, each in its own
 * transaction. Migrations recorded by a newer banger are tolerated and reported in
 * store.warnings. A read-only open never migrates: it throws StoreError 'schema_outdated' if
 * migrations are pending.
 */
export function openStore(path: string, opts: OpenStoreOptions = {}): Store {
  const readOnly = opts.readOnly ?? false;
  const migrations = opts.migrations ?? MIGRATIONS;
  const db = openDatabase(path, { readOnly });
  try {
    let appliedMigrations: number[] = [];
    let warnings: string[] = [];
    if (readOnly) {
      const s = migrationStatus(db, migrations);
      if (s.pending.length > 0) {
        throw new StoreError(
          'schema_outdated',
          `state database ${path} needs migrations ${s.pending.map((m) => m.id).join(', ')}; ` +
            'open it read-write (start bangerd) to apply them',
        );
      }
      if (s.unknown.length > 0) warnings = [newerSchemaWarning(s.unknown)];
    } else {
      const r = runMigrations(db, migrations, opts.now);
      appliedMigrations = r.applied;
      warnings = r.warnings;
    }
    return new Store(db, { path, readOnly, now: opts.now, appliedMigrations, warnings });
  } catch (err) {
    db.close();
    throw err;
  }
}
