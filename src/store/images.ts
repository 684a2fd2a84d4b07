import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { StoreError } from './errors.ts';
import {
  type Clock,
  type Row,
  bool,
  int,
  iso,
  json,
  newId,
  oneOf,
  plural,
  str,
  strOrNull,
  toJson,
} from './rows.ts';
import { withTransaction } from './tx.ts';

/** Where an image came from (kernels are only built or imported). */
export const IMAGE_SOURCES = ['built', 'imported', 'oci', 'derived'] as const;
export type ImageSource = (typeof IMAGE_SOURCES)[number];

/** An OCI image config's run defaults (stored as JSON in images.oci_config). */
export interface OciRunConfig {
  env: string[];
  working_dir?: string;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

export interface ImageRow {
  id: string;
  name: string;
  kernelId: string;
  rootfsPath: string;
  rootfsFormat: string;
  sizeBytes: number;
  recipeHash: string | null;
  source: ImageSource;
  isDefault: boolean;
  createdAt: string;
  /** OCI images: the image digest (sha256:…). */
  digest: string | null;
  /** OCI images: what was pulled (canonical reference) or the tag an archive was read with. */
  reference: string | null;
  ociConfig: OciRunConfig | null;
  /** OCI images: the cache blobs (digests) the image was made from; prune keeps them. */
  ociBlobs: string[] | null;
  /** Derived images: the image it was made from. */
  parentId: string | null;
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
  source: ImageSource;
  digest?: string | null;
  reference?: string | null;
  ociConfig?: OciRunConfig | null;
  ociBlobs?: string[] | null;
  parentId?: string | null;
  /** Make it the default image (the previous default, if any, stops being default). */
  isDefault?: boolean;
  /** Defaults to now. */
  createdAt?: Date | string;
}

const COLS =
  'id, name, kernel_id, rootfs_path, rootfs_format, size_bytes, recipe_hash, source, is_default, created_at, ' +
  'digest, reference, oci_config, oci_blobs, parent_id';

function ociConfigOf(r: Row): OciRunConfig | null {
  const v = json(r, 'images', 'oci_config');
  if (v === null) return null;
  const o = v as Partial<OciRunConfig>;
  if (typeof v !== 'object' || Array.isArray(v) || !Array.isArray(o.env))
    throw new StoreError('bad_row', 'images.oci_config: expected an object with env');
  return v as OciRunConfig;
}

function blobsOf(r: Row): string[] | null {
  const v = json(r, 'images', 'oci_blobs');
  if (v === null) return null;
  if (!Array.isArray(v) || v.some((d) => typeof d !== 'string'))
    throw new StoreError('bad_row', 'images.oci_blobs: expected an array of digests');
  return v as string[];
}

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
    source: oneOf(r, t, 'source', IMAGE_SOURCES),
    isDefault: bool(r, t, 'is_default'),
    createdAt: str(r, t, 'created_at'),
    digest: strOrNull(r, t, 'digest'),
    reference: strOrNull(r, t, 'reference'),
    ociConfig: ociConfigOf(r),
    ociBlobs: blobsOf(r),
    parentId: strOrNull(r, t, 'parent_id'),
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
  readonly #children: StatementSync;
  readonly #delete: StatementSync;

  constructor(db: DatabaseSync, now: Clock) {
    this.#db = db;
    this.#now = now;
    this.#insert = db.prepare(
      `INSERT INTO images (${COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ${COLS}`,
    );
    this.#getById = db.prepare(`SELECT ${COLS} FROM images WHERE id = ?`);
    this.#getByName = db.prepare(`SELECT ${COLS} FROM images WHERE name = ?`);
    this.#getDefault = db.prepare(`SELECT ${COLS} FROM images WHERE is_default = 1`);
    this.#clearDefault = db.prepare('UPDATE images SET is_default = 0 WHERE is_default = 1');
    this.#setDefault = db.prepare(`UPDATE images SET is_default = 1 WHERE id = ? RETURNING ${COLS}`);
    this.#list = db.prepare(`SELECT ${COLS} FROM images ORDER BY name`);
    this.#usedBy = db.prepare('SELECT name FROM vms WHERE image_id = ? ORDER BY name');
    this.#children = db.prepare('SELECT name FROM images WHERE parent_id = ? ORDER BY name');
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
        img.digest ?? null,
        img.reference ?? null,
        toJson(img.ociConfig),
        toJson(img.ociBlobs),
        img.parentId ?? null,
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
   * Delete an image. Throws StoreError 'in_use' (naming the VMs or the derived images) if a VM
   * uses it or another image was derived from it.
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
      const children = this.#children.all(id).map((r) => str(r, 'images', 'name'));
      if (children.length > 0) {
        const name = this.getById(id)?.name ?? id;
        throw new StoreError(
          'in_use',
          `image ${name} is the base of ${plural(children.length, 'derived image')} ${children.join(', ')}`,
        );
      }
      return Number(this.#delete.run(id).changes) > 0;
    });
  }
}
