// Versioned schema migrations. Each migration runs in its own BEGIN IMMEDIATE transaction together
// with its schema_migrations row, so it is applied entirely or not at all. Ids applied by a newer
// banger (unknown here) are tolerated and reported as warnings, never rolled back.
import type { DatabaseSync } from 'node:sqlite';
import { StoreError } from './errors.ts';
import { RPC_LOG_SQL } from './rpclog.ts';
import { BASELINE_SQL } from './schema.ts';

export interface Migration {
  /** Positive, strictly increasing; never reused or renumbered once released. */
  id: number;
  name: string;
  /** Runs inside the migration's transaction; throw to abort (everything is rolled back). */
  up(db: DatabaseSync): void;
  /**
   * Run with foreign_keys=OFF (SQLite's table-rebuild procedure: create new, copy, drop, rename).
   * PRAGMA foreign_key_check must come back empty before commit.
   */
  disableForeignKeys?: boolean;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    id: 1,
    name: 'baseline',
    up(db) {
      db.exec(BASELINE_SQL);
    },
  },
  {
    id: 2,
    name: 'rpc_log',
    up(db) {
      db.exec(RPC_LOG_SQL);
    },
  },
  {
    id: 3,
    name: 'vm_warm_template',
    up(db) {
      // The warm template a VM was cloned from (its disk backs on the template's): the template
      // is kept while any VM names it. NULL for cold-booted VMs.
      db.exec('ALTER TABLE vms ADD COLUMN warm_template TEXT');
    },
  },
  {
    id: 4,
    name: 'vm_lifecycle',
    disableForeignKeys: true,
    up(db) {
      // The lifecycle owner (src/vm/lifecycle.ts): a `paused` state (QEMU stopped the guest, e.g.
      // on a host I/O error), why a VM is in its state (`state_reason`), and how its VMM last
      // ended when nobody asked (`last_exit`). SQLite cannot change a CHECK: rebuild the table.
      db.exec(`
CREATE TABLE vms_new (
  id              TEXT PRIMARY KEY,
  name            TEXT NOT NULL UNIQUE,
  image_id        TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
  state           TEXT NOT NULL
                  CHECK (state IN ('creating', 'stopped', 'starting', 'running', 'paused', 'stopping', 'error', 'deleting')),
  vcpus           INTEGER NOT NULL CHECK (vcpus BETWEEN 1 AND 64),
  memory_mib      INTEGER NOT NULL CHECK (memory_mib BETWEEN 64 AND 262144),
  disk_size_bytes INTEGER NOT NULL,
  network_mode    TEXT NOT NULL,
  guest_ip        TEXT,
  mac             TEXT NOT NULL,
  nat             INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1)),
  ssh_host_key    TEXT,
  workspace_json  TEXT,
  last_error      TEXT,
  boot_count      INTEGER NOT NULL DEFAULT 0,
  created_at      TEXT NOT NULL,
  updated_at      TEXT NOT NULL,
  last_started_at TEXT,
  warm_template   TEXT,
  state_reason    TEXT,
  last_exit       TEXT
) STRICT;
INSERT INTO vms_new (id, name, image_id, state, vcpus, memory_mib, disk_size_bytes, network_mode,
  guest_ip, mac, nat, ssh_host_key, workspace_json, last_error, boot_count, created_at, updated_at,
  last_started_at, warm_template)
SELECT id, name, image_id, state, vcpus, memory_mib, disk_size_bytes, network_mode, guest_ip, mac,
  nat, ssh_host_key, workspace_json, last_error, boot_count, created_at, updated_at,
  last_started_at, warm_template FROM vms;
DROP TABLE vms;
ALTER TABLE vms_new RENAME TO vms;
CREATE INDEX vms_image_id ON vms (image_id);
CREATE UNIQUE INDEX vms_guest_ip ON vms (guest_ip) WHERE guest_ip IS NOT NULL;
`);
    },
  },
  {
    id: 5,
    name: 'image_oci',
    disableForeignKeys: true,
    up(db) {
      // Images from OCI images (`oci`) and derived images (`derived`, made from a parent image):
      // the image digest, what was pulled, the config's run defaults (JSON), the cache blobs the
      // image was made from (JSON array; what `image cache prune` keeps) and the parent image.
      // SQLite cannot change a CHECK: rebuild the table (vms reference it; ids are kept).
      db.exec(`
CREATE TABLE images_new (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  kernel_id     TEXT NOT NULL REFERENCES kernels (id) ON DELETE RESTRICT,
  rootfs_path   TEXT NOT NULL,
  rootfs_format TEXT NOT NULL DEFAULT 'raw',
  size_bytes    INTEGER NOT NULL,
  recipe_hash   TEXT,
  source        TEXT NOT NULL CHECK (source IN ('built', 'imported', 'oci', 'derived')),
  is_default    INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
  created_at    TEXT NOT NULL,
  digest        TEXT,
  reference     TEXT,
  oci_config    TEXT,
  oci_blobs     TEXT,
  parent_id     TEXT REFERENCES images_new (id) ON DELETE RESTRICT
) STRICT;
INSERT INTO images_new (id, name, kernel_id, rootfs_path, rootfs_format, size_bytes, recipe_hash,
  source, is_default, created_at)
SELECT id, name, kernel_id, rootfs_path, rootfs_format, size_bytes, recipe_hash, source,
  is_default, created_at FROM images;
DROP TABLE images;
ALTER TABLE images_new RENAME TO images;
CREATE INDEX images_kernel_id ON images (kernel_id);
CREATE INDEX images_parent_id ON images (parent_id);
CREATE UNIQUE INDEX images_one_default ON images (is_default) WHERE is_default = 1;
`);
    },
  },
  {
    id: 6,
    name: 'vm_pause',
    disableForeignKeys: true,
    up(db) {
      // Pause to disk (src/vm/pause.ts): the transitional states `pausing` and `resuming`, and
      // `saved_state` (JSON: size and time of the state a VM paused to disk holds; NULL when it
      // holds none). Only the vms table is rebuilt: independent of migration 5 (images).
      db.exec(`
CREATE TABLE vms_new (
  id              TEXT PRIMARY KEY,
  name            TEXT NOT NULL UNIQUE,
  image_id        TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
  state           TEXT NOT NULL
                  CHECK (state IN ('creating', 'stopped', 'starting', 'running', 'pausing', 'paused', 'resuming', 'stopping', 'error', 'deleting')),
  vcpus           INTEGER NOT NULL CHECK (vcpus BETWEEN 1 AND 64),
  memory_mib      INTEGER NOT NULL CHECK (memory_mib BETWEEN 64 AND 262144),
  disk_size_bytes INTEGER NOT NULL,
  network_mode    TEXT NOT NULL,
  guest_ip        TEXT,
  mac             TEXT NOT NULL,
  nat             INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1)),
  ssh_host_key    TEXT,
  workspace_json  TEXT,
  last_error      TEXT,
  boot_count      INTEGER NOT NULL DEFAULT 0,
  created_at      TEXT NOT NULL,
  updated_at      TEXT NOT NULL,
  last_started_at TEXT,
  warm_template   TEXT,
  state_reason    TEXT,
  last_exit       TEXT,
  saved_state     TEXT
) STRICT;
INSERT INTO vms_new (id, name, image_id, state, vcpus, memory_mib, disk_size_bytes, network_mode,
  guest_ip, mac, nat, ssh_host_key, workspace_json, last_error, boot_count, created_at, updated_at,
  last_started_at, warm_template, state_reason, last_exit)
SELECT id, name, image_id, state, vcpus, memory_mib, disk_size_bytes, network_mode, guest_ip, mac,
  nat, ssh_host_key, workspace_json, last_error, boot_count, created_at, updated_at,
  last_started_at, warm_template, state_reason, last_exit FROM vms;
DROP TABLE vms;
ALTER TABLE vms_new RENAME TO vms;
CREATE INDEX vms_image_id ON vms (image_id);
CREATE UNIQUE INDEX vms_guest_ip ON vms (guest_ip) WHERE guest_ip IS NOT NULL;
`);
    },
  },
  {
    id: 8,
    name: 'vm_egress',
    up(db) {
      // Egress policy and secrets (issue 16, docs/egress.md): `egress` is the parsed policy as
      // JSON (src/egress/rules.ts; every VM made before it reached everything: `all`),
      // `secrets` the names and hosts of the secrets the VM may use (never values),
      // `egress_op_id` the op that set the policy (its create or the last vm.set), which every
      // egress log line of the VM carries.
      db.exec(`
ALTER TABLE vms ADD COLUMN egress TEXT NOT NULL DEFAULT '{"mode":"all","rules":[]}';
ALTER TABLE vms ADD COLUMN secrets TEXT NOT NULL DEFAULT '[]';
ALTER TABLE vms ADD COLUMN egress_op_id TEXT;
`);
    },
  },
  {
    id: 9,
    name: 'vm_idle',
    up(db) {
      // Idle pause (docs/snapshots.md "Idle pause", src/daemon/idle.ts): `idle_pause_after_ms`
      // the VM's own setting (NULL: the daemon's [vm_defaults] idle_pause_after; 0: never),
      // `last_used_at` when it was last used (kept across daemon restarts so the timer is not
      // reset by one), `idle_paused_at` set while the idle timer pauses it or holds it paused.
      db.exec(`
ALTER TABLE vms ADD COLUMN idle_pause_after_ms INTEGER CHECK (idle_pause_after_ms >= 0);
ALTER TABLE vms ADD COLUMN last_used_at TEXT;
ALTER TABLE vms ADD COLUMN idle_paused_at TEXT;
`);
    },
  },
];

export interface AppliedMigration {
  id: number;
  name: string;
  appliedAt: string;
}

export interface MigrationStatus {
  applied: AppliedMigration[];
  /** Known migrations not applied yet, in order. */
  pending: Migration[];
  /** Applied ids this banger does not know: the database was migrated by a newer banger. */
  unknown: AppliedMigration[];
}

export interface MigrationResult {
  /** Ids applied by this call, in order. */
  applied: number[];
  /** Human-readable warnings (e.g. the database was migrated by a newer banger). */
  warnings: string[];
}

export type MigrationCheck = 'ok' | 'pending' | 'newer';

const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS schema_migrations (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at TEXT NOT NULL
) STRICT`;

function validate(migrations: readonly Migration[]): void {
  let prev = 0;
  for (const m of migrations) {
    if (!Number.isSafeInteger(m.id) || m.id <= prev) {
      throw new Error(`migrations must have positive, strictly increasing ids (got ${m.id} after ${prev})`);
    }
    prev = m.id;
  }
}

function hasTable(db: DatabaseSync, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

function readApplied(db: DatabaseSync): AppliedMigration[] {
  if (!hasTable(db, 'schema_migrations')) return [];
  return db
    .prepare('SELECT id, name, applied_at FROM schema_migrations ORDER BY id')
    .all()
    .map((r) => ({ id: Number(r.id), name: String(r.name), appliedAt: String(r.applied_at) }));
}

/** What is applied, pending and unknown. Read-only: works on a database opened read-only. */
export function migrationStatus(
  db: DatabaseSync,
  migrations: readonly Migration[] = MIGRATIONS,
): MigrationStatus {
  validate(migrations);
  const applied = readApplied(db);
  const appliedIds = new Set(applied.map((a) => a.id));
  const knownIds = new Set(migrations.map((m) => m.id));
  return {
    applied,
    pending: migrations.filter((m) => !appliedIds.has(m.id)),
    unknown: applied.filter((a) => !knownIds.has(a.id)),
  };
}

/**
 * For `bangerd --check-migrations`: 'newer' if the database carries migrations this banger does
 * not know (it was written by a newer banger; takes precedence), 'pending' if opening it
 * read-write would migrate it, 'ok' if it is exactly current. Never writes.
 */
export function checkMigrations(
  db: DatabaseSync,
  migrations: readonly Migration[] = MIGRATIONS,
): MigrationCheck {
  const s = migrationStatus(db, migrations);
  if (s.unknown.length > 0) return 'newer';
  if (s.pending.length > 0) return 'pending';
  return 'ok';
}

export function newerSchemaWarning(unknown: readonly AppliedMigration[]): string {
  const list = unknown.map((u) => `${u.id} (${u.name})`).join(', ');
  return `the state database has migrations this banger does not know: ${list}; it was last used by a newer banger`;
}

/**
 * Apply every pending migration, each in its own transaction. Safe to call concurrently from two
 * processes: a migration another process applied meanwhile is skipped. Throws StoreError
 * 'migration_failed' (with the cause) on the first failure; earlier migrations stay applied.
 */
export function runMigrations(
  db: DatabaseSync,
  migrations: readonly Migration[] = MIGRATIONS,
  now: () => Date = () => new Date(),
): MigrationResult {
  validate(migrations);
  db.exec(CREATE_TABLE);
  const isApplied = db.prepare('SELECT 1 FROM schema_migrations WHERE id = ?');
  const record = db.prepare('INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)');
  const result: MigrationResult = { applied: [], warnings: [] };

  for (const m of migrations) {
    if (isApplied.get(m.id) !== undefined) continue;
    if (m.disableForeignKeys) db.exec('PRAGMA foreign_keys = OFF'); // a no-op inside a transaction
    try {
      db.exec('BEGIN IMMEDIATE');
      try {
        if (isApplied.get(m.id) === undefined) {
          m.up(db);
          if (m.disableForeignKeys) {
            const bad = db.prepare('PRAGMA foreign_key_check').all();
            if (bad.length > 0)
              throw new Error(`foreign key check failed: ${JSON.stringify(bad.slice(0, 5))}`);
          }
          record.run(m.id, m.name, now().toISOString());
          result.applied.push(m.id);
        }
        db.exec('COMMIT');
      } catch (err) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new StoreError('migration_failed', `migration ${m.id} (${m.name}) failed: ${msg}`, {
        cause: err,
      });
    } finally {
      if (m.disableForeignKeys) db.exec('PRAGMA foreign_keys = ON');
    }
  }

  const { unknown } = migrationStatus(db, migrations);
  if (unknown.length > 0) result.warnings.push(newerSchemaWarning(unknown));
  return result;
}
