import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { StoreError } from './errors.ts';
import { withTransaction } from './tx.ts';
import { type Clock, type Row, iso, newId, oneOf, plural, str, strOrNull } from './rows.ts';

export const ARTIFACT_SOURCES = ['built', 'imported'] as const;
export type ArtifactSource = (typeof ARTIFACT_SOURCES)[number];

export interface KernelRow {
  id: string;
  name: string;
  version: string;
  kernelPath: string;
  initrdPath: string | null;
  modulesDir: string | null;
  source: ArtifactSource;
  createdAt: string;
}

export interface NewKernel {
  /** Generated with newId() when omitted. */
  id?: string;
  name: string;
  version: string;
  kernelPath: string;
  initrdPath?: string | null;
  modulesDir?: string | null;
  source: ArtifactSource;
  /** Defaults to now. */
  createdAt?: Date | string;
}

const COLS = 'id, name, version, kernel_path, initrd_path, modules_dir, source, created_at';

function toKernel(r: Row): KernelRow {
  const t = 'kernels';
  return {
    id: str(r, t, 'id'),
    name: str(r, t, 'name'),
    version: str(r, t, 'version'),
    kernelPath: str(r, t, 'kernel_path'),
    initrdPath: strOrNull(r, t, 'initrd_path'),
    modulesDir: strOrNull(r, t, 'modules_dir'),
    source: oneOf(r, t, 'source', ARTIFACT_SOURCES),
    createdAt: str(r, t, 'created_at'),
  };
}

export class KernelsRepo {
  readonly #db: DatabaseSync;
  readonly #now: Clock;
  readonly #insert: StatementSync;
  readonly #getById: StatementSync;
  readonly #getByName: StatementSync;
  readonly #list: StatementSync;
  readonly #usedBy: StatementSync;
  readonly #delete: StatementSync;

  constructor(db: DatabaseSync, now: Clock) {
    this.#db = db;
    this.#now = now;
    this.#insert = db.prepare(
      `INSERT INTO kernels (${COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING ${COLS}`,
    );
    this.#getById = db.prepare(`SELECT ${COLS} FROM kernels WHERE id = ?`);
    this.#getByName = db.prepare(`SELECT ${COLS} FROM kernels WHERE name = ?`);
    this.#list = db.prepare(`SELECT ${COLS} FROM kernels ORDER BY name`);
    this.#usedBy = db.prepare('SELECT name FROM images WHERE kernel_id = ? ORDER BY name');
    this.#delete = db.prepare('DELETE FROM kernels WHERE id = ?');
  }

  /** Throws a UNIQUE violation (isUniqueViolation) on a duplicate name or id. */
  insert(k: NewKernel): KernelRow {
    const row = this.#insert.get(
      k.id ?? newId(),
      k.name,
      k.version,
      k.kernelPath,
      k.initrdPath ?? null,
      k.modulesDir ?? null,
      k.source,
      iso(k.createdAt ?? this.#now()),
    );
    if (!row) throw new Error('kernels insert returned no row');
    return toKernel(row);
  }

  getById(id: string): KernelRow | undefined {
    const r = this.#getById.get(id);
    return r ? toKernel(r) : undefined;
  }

  getByName(name: string): KernelRow | undefined {
    const r = this.#getByName.get(name);
    return r ? toKernel(r) : undefined;
  }

  /** By name. */
  list(): KernelRow[] {
    return this.#list.all().map(toKernel);
  }

  /**
   * Delete a kernel. Throws StoreError 'in_use' (naming the images) if an image uses it.
   * Returns false if there was no such kernel.
   */
  delete(id: string): boolean {
    return withTransaction(this.#db, () => {
      const users = this.#usedBy.all(id).map((r) => str(r, 'images', 'name'));
      if (users.length > 0) {
        const name = this.getById(id)?.name ?? id;
        throw new StoreError(
          'in_use',
          `kernel ${name} is used by ${plural(users.length, 'image')} ${users.join(', ')}`,
        );
      }
      return Number(this.#delete.run(id).changes) > 0;
    });
  }
}
