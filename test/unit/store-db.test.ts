import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, openStore } from '../../src/store/db.ts';
import { isStoreError, StoreError } from '../../src/store/errors.ts';
import { checkMigrations } from '../../src/store/migrations.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-store-db-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function pragma(db: ReturnType<typeof openDatabase>, name: string, column = name): unknown {
  return db.prepare(`PRAGMA ${name}`).get()?.[column];
}

describe('openDatabase / openStore', () => {
  it('creates a private parent dir (0700) and file (0600) with the expected pragmas', () => {
    const path = join(dir, 'state', 'nested', 'banger.db');
    const store = openStore(path);
    try {
      expect(statSync(join(dir, 'state')).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir, 'state', 'nested')).mode & 0o777).toBe(0o700);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(pragma(store.db, 'journal_mode')).toBe('wal');
      expect(pragma(store.db, 'foreign_keys')).toBe(1);
      expect(pragma(store.db, 'busy_timeout', 'timeout')).toBe(5000);
      expect(pragma(store.db, 'synchronous')).toBe(1); // NORMAL
      store.settings.set('x', 'y'); // force the WAL file into existence
      expect(statSync(`${path}-wal`).mode & 0o777).toBe(0o600);
    } finally {
      store.close();
    }
  });

  it('tightens an existing world-readable file to 0600', () => {
    const path = join(dir, 'banger.db');
    writeFileSync(path, '', { mode: 0o644 });
    openStore(path).close();
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('refuses a file of garbage with a clear corrupt error, and leaves it untouched', () => {
    const path = join(dir, 'banger.db');
    const garbage = Buffer.from('this is not a sqlite database, only garbage\n'.repeat(100));
    writeFileSync(path, garbage);
    let err: unknown;
    try {
      openStore(path);
    } catch (e) {
      err = e;
    }
    expect(isStoreError(err, 'corrupt')).toBe(true);
    expect((err as StoreError).message).toMatch(/banger\.db is corrupt or not a SQLite database/);
    expect(readFileSync(path).equals(garbage)).toBe(true);
    expect(() => openDatabase(path, { readOnly: true })).toThrow(/corrupt/);
  });

  it('refuses a database whose pages are damaged (quick_check)', () => {
    const path = join(dir, 'banger.db');
    const store = openStore(path);
    store.transaction(() => {
      for (let i = 0; i < 500; i++) store.settings.set(`key-${i}`, 'v'.repeat(100));
    });
    store.db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
    store.close();
    const pageSize = 4096;
    expect(statSync(path).size).toBeGreaterThan(pageSize * 8);
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(pageSize, 0x41), 0, pageSize, pageSize * 5);
    closeSync(fd);
    expect(() => openStore(path)).toThrow(StoreError);
    expect(() => openStore(path)).toThrow(/corrupt/);
  });

  it('refuses a read-only open of a missing database, creating nothing', () => {
    const path = join(dir, 'state', 'banger.db');
    let err: unknown;
    try {
      openStore(path, { readOnly: true });
    } catch (e) {
      err = e;
    }
    expect(isStoreError(err, 'missing')).toBe(true);
    expect((err as Error).message).toMatch(/does not exist/);
    expect(existsSync(join(dir, 'state'))).toBe(false);
    expect(() => openDatabase(path, { readOnly: true })).toThrow(/does not exist/);
  });

  it('opens an existing database read-only: reads work, writes fail', () => {
    const path = join(dir, 'banger.db');
    const rw = openStore(path);
    rw.settings.set('k', 'v');
    rw.close();
    const ro = openStore(path, { readOnly: true });
    try {
      expect(ro.readOnly).toBe(true);
      expect(ro.settings.get('k')).toBe('v');
      expect(checkMigrations(ro.db)).toBe('ok');
      expect(() => ro.settings.set('k', 'w')).toThrow(/readonly/i);
    } finally {
      ro.close();
    }
  });

  it('a read-only open of an unmigrated database is refused as schema_outdated', () => {
    const path = join(dir, 'banger.db');
    openDatabase(path).close(); // an empty, never-migrated database
    const db = openDatabase(path, { readOnly: true });
    expect(checkMigrations(db)).toBe('pending');
    db.close();
    let err: unknown;
    try {
      openStore(path, { readOnly: true });
    } catch (e) {
      err = e;
    }
    expect(isStoreError(err, 'schema_outdated')).toBe(true);
  });

  it('reports a path that is not a regular file as open_failed, without touching it', () => {
    const sub = join(dir, 'sub');
    mkdirSync(sub, { mode: 0o755 });
    for (const readOnly of [false, true]) {
      let err: unknown;
      try {
        openStore(sub, { readOnly });
      } catch (e) {
        err = e;
      }
      expect(isStoreError(err, 'open_failed')).toBe(true);
    }
    expect(statSync(sub).mode & 0o777).toBe(0o755);
  });
});
