import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, openStore } from '../../src/store/db.ts';
import { isStoreError, type StoreError } from '../../src/store/errors.ts';
import {
  MIGRATIONS,
  type Migration,
  checkMigrations,
  migrationStatus,
  runMigrations,
} from '../../src/store/migrations.ts';

let dir: string;
let path: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-store-mig-'));
  path = join(dir, 'banger.db');
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function tables(db: DatabaseSync): string[] {
  return db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    .all()
    .map((r) => String(r.name));
}

function appliedIds(db: DatabaseSync): number[] {
  return db
    .prepare('SELECT id FROM schema_migrations ORDER BY id')
    .all()
    .map((r) => Number(r.id));
}

// The shipped migrations, and the next free id for the test migrations below.
const ALL_IDS = MIGRATIONS.map((m) => m.id);
const NEXT = ALL_IDS.at(-1)! + 1;

const addNotes: Migration = {
  id: NEXT,
  name: 'notes',
  up(db) {
    db.exec('CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL) STRICT');
  },
};

describe('migrations', () => {
  it('applies the baseline once; opening again is a no-op', () => {
    const first = openStore(path);
    expect(first.appliedMigrations).toEqual(ALL_IDS);
    expect(first.warnings).toEqual([]);
    expect(tables(first.db)).toEqual(
      expect.arrayContaining(['kernels', 'images', 'vms', 'operations', 'settings', 'schema_migrations']),
    );
    first.settings.set('keep', 'me');
    first.close();

    const second = openStore(path);
    expect(second.appliedMigrations).toEqual([]);
    expect(second.settings.get('keep')).toBe('me');
    expect(appliedIds(second.db)).toEqual(ALL_IDS);
    expect(checkMigrations(second.db)).toBe('ok');
    second.close();
  });

  it('records id, name and applied_at', () => {
    const store = openStore(path, { now: () => new Date('2025-02-03T04:05:06.000Z') });
    const s = migrationStatus(store.db);
    expect(s.applied).toEqual(
      MIGRATIONS.map((m) => ({ id: m.id, name: m.name, appliedAt: '2025-02-03T04:05:06.000Z' })),
    );
    expect(s.pending).toEqual([]);
    expect(s.unknown).toEqual([]);
    store.close();
  });

  it('reports pending on a fresh database and applies later migrations on the next open', () => {
    const db = openDatabase(path);
    expect(checkMigrations(db)).toBe('pending'); // no schema_migrations table at all
    db.close();

    openStore(path).close();
    const db2 = openDatabase(path);
    expect(checkMigrations(db2, [...MIGRATIONS, addNotes])).toBe('pending');
    expect(migrationStatus(db2, [...MIGRATIONS, addNotes]).pending.map((m) => m.id)).toEqual([NEXT]);
    db2.close();

    const store = openStore(path, { migrations: [...MIGRATIONS, addNotes] });
    expect(store.appliedMigrations).toEqual([NEXT]);
    expect(tables(store.db)).toContain('notes');
    expect(checkMigrations(store.db, [...MIGRATIONS, addNotes])).toBe('ok');
    store.close();
  });

  it('rolls a failing migration back entirely: nothing half-applied, earlier ones kept', () => {
    const bad: Migration = {
      id: NEXT,
      name: 'half-done',
      up(db) {
        db.exec('CREATE TABLE half (x INTEGER) STRICT');
        db.exec("INSERT INTO half VALUES (1); INSERT INTO settings (key, value) VALUES ('touched', 'yes')");
        db.exec('ALTER TABLE vms ADD COLUMN extra TEXT');
        db.exec('THIS IS NOT SQL');
      },
    };
    let err: unknown;
    try {
      openStore(path, { migrations: [...MIGRATIONS, bad] });
    } catch (e) {
      err = e;
    }
    expect(isStoreError(err, 'migration_failed')).toBe(true);
    expect((err as StoreError).message).toMatch(new RegExp(`^migration ${NEXT} \\(half-done\\) failed: `));

    const db = openDatabase(path);
    expect(appliedIds(db)).toEqual(ALL_IDS); // earlier migrations committed in their own transactions
    expect(tables(db)).not.toContain('half');
    expect(db.prepare("SELECT 1 FROM settings WHERE key = 'touched'").get()).toBeUndefined();
    const vmCols = db
      .prepare('PRAGMA table_info(vms)')
      .all()
      .map((r) => String(r.name));
    expect(vmCols).not.toContain('extra');
    expect(db.isTransaction).toBe(false);
    expect(checkMigrations(db, [...MIGRATIONS, bad])).toBe('pending');
    db.close();

    // The fixed migration applies cleanly afterwards.
    const store = openStore(path, { migrations: [...MIGRATIONS, addNotes] });
    expect(store.appliedMigrations).toEqual([NEXT]);
    store.close();
  });

  it('rolls back a migration that throws from JavaScript', () => {
    const throws: Migration = {
      id: 1,
      name: 'baseline-then-throw',
      up(db) {
        MIGRATIONS[0]!.up(db);
        throw new Error('boom');
      },
    };
    expect(() => openStore(path, { migrations: [throws] })).toThrow(
      /migration 1 \(baseline-then-throw\) failed: boom/,
    );
    const db = openDatabase(path);
    expect(tables(db)).toEqual(['schema_migrations']);
    db.close();
  });

  it('tolerates ids applied by a newer banger, with a warning; checkMigrations says newer', () => {
    // One past the last known id: stays "from the future" as migrations are added.
    const FUTURE = (MIGRATIONS.at(-1)?.id ?? 0) + 1;
    openStore(path, {
      migrations: [...MIGRATIONS, { ...addNotes, id: FUTURE, name: 'from-the-future' }],
    }).close();

    const db = openDatabase(path, { readOnly: true });
    expect(checkMigrations(db)).toBe('newer');
    expect(migrationStatus(db).unknown.map((u) => u.id)).toEqual([FUTURE]);
    db.close();

    const store = openStore(path); // this (older) banger does not know migration FUTURE
    expect(store.appliedMigrations).toEqual([]);
    expect(store.warnings).toHaveLength(1);
    expect(store.warnings[0]).toMatch(new RegExp(`${FUTURE} \\(from-the-future\\).*newer banger`));
    expect(appliedIds(store.db)).toEqual([...ALL_IDS, FUTURE]); // nothing undone
    store.settings.set('still', 'works');
    store.close();

    const ro = openStore(path, { readOnly: true });
    expect(ro.warnings[0]).toMatch(/newer banger/);
    ro.close();
  });

  it('runMigrations returns the warning to the caller and applies nothing twice', () => {
    const db = openDatabase(path);
    expect(runMigrations(db)).toEqual({ applied: ALL_IDS, warnings: [] });
    expect(runMigrations(db)).toEqual({ applied: [], warnings: [] });
    db.prepare('INSERT INTO schema_migrations (id, name, applied_at) VALUES (99, ?, ?)').run('x', 'y');
    const r = runMigrations(db);
    expect(r.applied).toEqual([]);
    expect(r.warnings[0]).toMatch(/99 \(x\)/);
    db.close();
  });

  it('refuses a migration list that is not strictly increasing', () => {
    const db = openDatabase(path);
    expect(() => runMigrations(db, [addNotes, MIGRATIONS[0]!])).toThrow(/strictly increasing/);
    expect(() => runMigrations(db, [MIGRATIONS[0]!, { ...addNotes, id: 1 }])).toThrow(/strictly increasing/);
    db.close();
  });

  it('runs a disableForeignKeys migration with FKs off and restores them after', () => {
    const seen: number[] = [];
    const rebuild: Migration = {
      id: NEXT,
      name: 'rebuild',
      disableForeignKeys: true,
      up(db) {
        seen.push(Number(db.prepare('PRAGMA foreign_keys').get()?.foreign_keys));
      },
    };
    const store = openStore(path, { migrations: [...MIGRATIONS, rebuild] });
    expect(seen).toEqual([0]);
    expect(store.db.prepare('PRAGMA foreign_keys').get()?.foreign_keys).toBe(1);
    store.close();
  });
});

describe('migration 5 (image_oci)', () => {
  it('rebuilds images keeping every row, the VMs that use them and the one-default rule', () => {
    const upTo4 = MIGRATIONS.filter((m) => m.id <= 4);
    // Raw: the repositories of this banger prepare statements for the new columns.
    const old = openDatabase(path);
    runMigrations(old, upTo4);
    old.exec(`INSERT INTO kernels (id, name, version, kernel_path, source, created_at)
      VALUES ('k1', 'k', '6.1', '/k', 'built', '2025-01-01T00:00:00.000Z')`);
    old.exec(`INSERT INTO images (id, name, kernel_id, rootfs_path, size_bytes, recipe_hash, source, is_default, created_at)
      VALUES ('i1', 'debian', 'k1', '/i/rootfs.ext4', 1024, 'abc', 'built', 1, '2025-01-01T00:00:00.000Z')`);
    old.exec(`INSERT INTO vms (id, name, image_id, state, vcpus, memory_mib, disk_size_bytes, network_mode, mac, created_at, updated_at)
      VALUES ('v1', 'calm-otter', 'i1', 'stopped', 2, 1024, 4096, 'user', '52:54:00:00:00:01', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')`);
    old.close();

    const store = openStore(path);
    expect(store.appliedMigrations).toContain(5);
    expect(store.images.getById('i1')).toMatchObject({
      name: 'debian',
      recipeHash: 'abc',
      source: 'built',
      isDefault: true,
      digest: null,
      ociBlobs: null,
      parentId: null,
    });
    expect(store.vms.getById('v1')?.imageId).toBe('i1');
    expect(store.db.prepare('PRAGMA foreign_key_check').all()).toEqual([]);
    // Still at most one default image, and the images a VM uses still cannot go.
    expect(() =>
      store.images.insert({
        name: 'x',
        kernelId: 'k1',
        rootfsPath: '/x',
        sizeBytes: 1,
        source: 'oci',
        isDefault: true,
      }),
    ).not.toThrow();
    expect(
      store.images
        .list()
        .filter((i) => i.isDefault)
        .map((i) => i.name),
    ).toEqual(['x']);
    expect(() => store.db.prepare("DELETE FROM images WHERE id = 'i1'").run()).toThrow(/FOREIGN KEY/);
    store.close();
  });
});
