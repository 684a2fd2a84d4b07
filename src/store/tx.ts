// Transactions on a DatabaseSync. Callbacks are synchronous (node:sqlite is synchronous); an
// async callback is refused, since its awaits would run outside the transaction.
import type { DatabaseSync } from 'node:sqlite';

let savepointSeq = 0;

/**
 * Run fn in a write transaction (BEGIN IMMEDIATE, so the write lock is taken up front and a busy
 * database waits busy_timeout instead of failing mid-way). COMMIT on return, ROLLBACK on throw.
 * Nested calls use a SAVEPOINT, so an inner failure undoes only the inner work.
 */
export function withTransaction<T>(db: DatabaseSync, fn: () => T): T {
  if (db.isTransaction) {
    const sp = `banger_sp_${++savepointSeq}`;
    db.exec(`SAVEPOINT ${sp}`);
    try {
      const result = refuseAsync(fn());
      db.exec(`RELEASE ${sp}`);
      return result;
    } catch (err) {
      db.exec(`ROLLBACK TO ${sp}`);
      db.exec(`RELEASE ${sp}`);
      throw err;
    }
  }
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = refuseAsync(fn());
    db.exec('COMMIT');
    return result;
  } catch (err) {
    // A failed COMMIT or some errors (e.g. SQLITE_FULL) may already have ended the transaction.
    if (db.isTransaction) db.exec('ROLLBACK');
    throw err;
  }
}

function refuseAsync<T>(result: T): T {
  if (
    result !== null &&
    typeof result === 'object' &&
    typeof (result as { then?: unknown }).then === 'function'
  ) {
    throw new TypeError('withTransaction: the callback must be synchronous (it returned a promise)');
  }
  return result;
}
