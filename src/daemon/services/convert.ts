// Store rows -> wire objects (schema $defs Image and Kernel). Pure: callers look up the related
// rows (an image's kernel, who uses what) and pass them in.
import type { Image, Kernel } from '../../../generated/types.gen.ts';
import type { ImageRow, KernelRow } from '../../store/index.ts';

/** An ISO 8601 UTC timestamp as the schema wants it (rows already hold one; normalize anyway). */
export function isoTimestamp(s: string): string {
  const t = Date.parse(s);
  return Number.isNaN(t) ? s : new Date(t).toISOString();
}

/**
 * `parent`: the name of a derived image's base (callers look it up by row.parentId; a missing
 * one is left out).
 */
export function imageToWire(
  row: ImageRow,
  kernel: KernelRow,
  usedBy: readonly string[],
  parent?: string,
): Image {
  const img: Image = {
    id: row.id,
    name: row.name,
    kernel: kernel.name,
    kernel_version: kernel.version,
    rootfs_path: row.rootfsPath,
    size_bytes: row.sizeBytes,
    source: row.source,
    default: row.isDefault,
    created_at: isoTimestamp(row.createdAt),
    used_by: [...usedBy],
  };
  if (row.recipeHash !== null) img.recipe_hash = row.recipeHash;
  if (row.digest !== null) img.digest = row.digest;
  if (row.reference !== null) img.reference = row.reference;
  if (row.ociConfig !== null) img.oci_config = structuredClone(row.ociConfig);
  if (parent !== undefined) img.parent = parent;
  return img;
}

export function kernelToWire(row: KernelRow, usedBy: readonly string[]): Kernel {
  const k: Kernel = {
    id: row.id,
    name: row.name,
    version: row.version,
    kernel_path: row.kernelPath,
    source: row.source,
    created_at: isoTimestamp(row.createdAt),
    used_by: [...usedBy],
  };
  if (row.initrdPath !== null) k.initrd_path = row.initrdPath;
  return k;
}

/** name lists keyed by the id they reference, each sorted by name. */
export function namesBy<T extends { name: string }>(
  rows: readonly T[],
  key: (r: T) => string,
): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const r of rows) {
    const k = key(r);
    const list = m.get(k);
    if (list) list.push(r.name);
    else m.set(k, [r.name]);
  }
  for (const list of m.values()) list.sort();
  return m;
}
