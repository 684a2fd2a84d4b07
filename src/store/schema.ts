// Migration 1, the baseline schema. Released migrations are frozen: change the schema by adding
// a migration, never by editing this text. Tables are STRICT (column types enforced); timestamps
// are ISO 8601 UTC strings (new Date().toISOString()), which sort chronologically as text.

export const BASELINE_SQL = `
CREATE TABLE kernels (
  id          TEXT PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  version     TEXT NOT NULL,
  kernel_path TEXT NOT NULL,
  initrd_path TEXT,
  modules_dir TEXT,
  source      TEXT NOT NULL CHECK (source IN ('built', 'imported')),
  created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE images (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  kernel_id     TEXT NOT NULL REFERENCES kernels (id) ON DELETE RESTRICT,
  rootfs_path   TEXT NOT NULL,
  rootfs_format TEXT NOT NULL DEFAULT 'raw',
  size_bytes    INTEGER NOT NULL,
  recipe_hash   TEXT,
  source        TEXT NOT NULL CHECK (source IN ('built', 'imported')),
  is_default    INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
  created_at    TEXT NOT NULL
) STRICT;
CREATE INDEX images_kernel_id ON images (kernel_id);
-- At most one default image.
CREATE UNIQUE INDEX images_one_default ON images (is_default) WHERE is_default = 1;

CREATE TABLE vms (
  id              TEXT PRIMARY KEY,
  name            TEXT NOT NULL UNIQUE,
  image_id        TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
  state           TEXT NOT NULL
                  CHECK (state IN ('creating', 'stopped', 'starting', 'running', 'stopping', 'error', 'deleting')),
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
  last_started_at TEXT
) STRICT;
CREATE INDEX vms_image_id ON vms (image_id);
CREATE UNIQUE INDEX vms_guest_ip ON vms (guest_ip) WHERE guest_ip IS NOT NULL;

CREATE TABLE operations (
  id         TEXT PRIMARY KEY, -- the op id
  kind       TEXT NOT NULL,
  method     TEXT NOT NULL,
  state      TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'canceled')),
  vm_id      TEXT,
  vm_name    TEXT,
  image_name TEXT,
  started_at TEXT NOT NULL,
  ended_at   TEXT,
  steps_json TEXT NOT NULL DEFAULT '[]',
  error_json TEXT,
  result_json TEXT
) STRICT;
CREATE INDEX operations_started_at ON operations (started_at);

CREATE TABLE settings (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
`;
