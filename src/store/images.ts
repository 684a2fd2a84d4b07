import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { StoreError } from './errors.ts';
import { ARTIFACT_SOURCES, type ArtifactSource } from './kernels.ts';
import { type Clock, type Row, bool, int, iso, newId, oneOf, plural, str, strOrNull } from './rows.ts';
import { withTransaction } from './tx.ts';

export interface ImageRow {
  id: string;
  name: string;
  kernelId: string;
  rootfsPath: string;
  rootfsFormat: string;
  sizeBytes: number;
  recipeHash: string | null;
  source: ArtifactSource;
  isDefault: boolean;
  createdAt: string;
}

export interface NewImage {
  /** Generated with newId() when omitted. */
  id?: string;
  name: string;
  kernelId: string;
  rootfsPath: string;
  /** Defaults to 'raw'. */
  rootfsFormat?: string;
  sizeBytes: number;
  recipeHash?: string | null;
  source: ArtifactSource;
  /** Make it the default image (the previous default, if any, stops being default). */
  isDefault?: boolean;
  /** Defaults to now. */
  createdAt?: Date | string;
}

const COLS =
  'id, name, kernel_id, rootfs_path, rootfs_format, size_bytes, recipe_hash, source, is_default, created_at';

function toImage(r: Row): ImageRow {
  const t = 'images';
  return {
    id: str(r, t, 'id'),
    name: str(r, t, 'name'),
    kernelId: str(r, t, 'kernel_id'),
    rootfsPath: str(r, t, 'rootfs_path'),
    rootfsFormat: str(r, t, 'rootfs_format'),
    sizeBytes: int(r, t, 'size_bytes'),
    recipeHash: strOrNull(r, t, 'recipe_hash'),
    source: oneOf(r, t, 'source', ARTIFACT_SOURCES),
    isDefault: bool(r, t, 'is_default'),
    createdAt: str(r, t, 'created_at'),
  };
}

export class ImagesRepo {
  readonly #db: DatabaseSync;
  readonly #now: Clock;
  readonly #insert: StatementSync;
  readonly #getById: StatementSync;
  readonly #getByName: StatementSync;
  readonly #getDefault: StatementSync;
  readonly #clearDefault: StatementSync;
  readonly #setDefault: StatementSync;
  readonly #list: StatementSync;
  readonly #usedBy: StatementSync;
  readonly #delete: StatementSync;

  constructor(db: DatabaseSync, now: Clock) {
    this.#db = db;
    this.#now = now;
    this.#insert = db.prepare(
      `INSERT INTO images (${COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ${COLS}`,
    );
    this.#getById = db.prepare(`SELECT ${COLS} FROM images WHERE id = ?`);
    this.#getByName = db.prepare(`SELECT ${COLS} FROM images WHERE name = ?`);
    this.#getDefault = db.prepare(`SELECT ${COLS} FROM images WHERE is_default = 1`);
    this.#clearDefault = db.prepare('UPDATE images SET is_default = 0 WHERE is_default = 1');
    this.#setDefault = db.prepare(`UPDATE images SET is_default = 1 WHERE id = ? RETURNING ${COLS}`);
    this.#list = db.prepare(`SELECT ${COLS} FROM images ORDER BY name`);
    this.#usedBy = db.prepare('SELECT name FROM vms WHERE image_id = ? ORDER BY name');
    this.#delete = db.prepare('DELETE FROM images WHERE id = ?');
  }

  /**
   * Throws a UNIQUE violation (isUniqueViolation) on a duplicate name or id, a FOREIGN KEY
   * violation (isForeignKeyViolation) if kernelId does not exist.
   */
  insert(img: NewImage): ImageRow {
    return withTransaction(this.#db, () => {
      if (img.isDefault) this.#clearDefault.run();
      const row = this.#insert.get(
        img.id ?? newId(),
        img.name,
        img.kernelId,
        img.rootfsPath,
        img.rootfsFormat ?? 'raw',
        img.sizeBytes,
        img.recipeHash ?? null,
        img.source,
        img.isDefault ? 1 : 0,
        iso(img.createdAt ?? this.#now()),
      );
      if (!row) throw new Error('images insert returned no row');
      return toImage(row);
    });
  }

  getById(id: string): ImageRow | undefined {
    const r = this.#getById.get(id);
    return r ? toImage(r) : undefined;
  }

  getByName(name: string): ImageRow | undefined {
    const r = this.#getByName.get(name);
    return r ? toImage(r) : undefined;
  }

  /** The default image, if one is set. */
  getDefault(): ImageRow | undefined {
    const r = this.#getDefault.get();
    return r ? toImage(r) : undefined;
  }

  /** Make image `id` the default (in one transaction: clear the old default, set the new one). */
  setDefault(id: string): ImageRow {
    return withTransaction(this.#db, () => {
      this.#clearDefault.run();
      const r = this.#setDefault.get(id);
      if (!r) throw new StoreError('not_found', `no image with id ${id}`);
      return toImage(r);
    });
  }

  /** Leave no image default. */
  clearDefault(): void {
    this.#clearDefault.run();
  }

  /** By name. */
  list(): ImageRow[] {
    return this.#list.all().map(toImage);
  }

  /**
   * Delete an image. Throws StoreError 'in_use' (naming the VMs) if a VM uses it.
   * Returns false if there was no such image.
   */
  delete(id: string): boolean {
    return withTransaction(this.#db, () => {
      const users = this.#usedBy.all(id).map((r) => str(r, 'vms', 'name'));
      if (users.length > 0) {
        const name = this.getById(id)?.name ?? id;
        throw new StoreError(
          'in_use',
          `image ${name} is used by ${plural(users.length, 'VM')} ${users.join(', ')}`,
        );
      }
      return Number(this.#delete.run(id).changes) > 0;
    });
  }
}
