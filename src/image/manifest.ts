// manifest.json of a built image, delivering a cached image into an output directory, and the
// lock that keeps two builders of the same recipe hash from racing.
import { chmod, link, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive, run } from './exec.ts';
import type { BuildMode } from './rootfs.ts';

export const MANIFEST_FORMAT = 1;

export const IMAGE_FILES = {
  kernel: 'vmlinuz',
  initrd: 'initrd.cpio.gz',
  rootfs: 'rootfs.ext4',
} as const;

export interface ImageManifest {
  format: number;
  recipe_hash: string;
  recipe_name: string;
  builder_version: string;
  /** Kernel release (uname -r in the guest). */
  kernel_version: string;
  kernel_package: { name: string; version: string };
  /** File names relative to the image directory. */
  files: { kernel: string; initrd: string; rootfs: string };
  /** Bytes; rootfs is the apparent size of the sparse file, rootfs_allocated what it occupies. */
  sizes: { kernel: number; initrd: number; rootfs: number; rootfs_allocated: number };
  root_label: string;
  seed_label: string;
  initramfs_modules: string[];
  created_at: string;
  build_mode: BuildMode;
  build_duration_ms: number;
  stage_durations_ms: Record<string, number>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Shape check of a parsed manifest.json (written by this code, so a light check suffices). */
export function parseManifest(text: string): ImageManifest | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(v) || v.format !== MANIFEST_FORMAT || typeof v.recipe_hash !== 'string') return undefined;
  if (typeof v.kernel_version !== 'string' || !isRecord(v.files) || !isRecord(v.sizes)) return undefined;
  for (const k of ['kernel', 'initrd', 'rootfs'] as const) {
    if (typeof v.files[k] !== 'string' || typeof v.sizes[k] !== 'number') return undefined;
  }
  return v as unknown as ImageManifest;
}

/** The manifest of an image directory, if it is complete (files present with recorded sizes). */
export async function readManifest(dir: string): Promise<ImageManifest | undefined> {
  const text = await readFile(join(dir, 'manifest.json'), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const m = parseManifest(text);
  if (!m) return undefined;
  for (const k of ['kernel', 'initrd', 'rootfs'] as const) {
    const st = await stat(join(dir, m.files[k])).catch(() => undefined);
    if (!st || st.size !== m.sizes[k]) return undefined;
  }
  return m;
}

/** Make the image files read-only: they are shared bases (hard links, qcow2 backing files). */
export async function sealImage(dir: string): Promise<void> {
  for (const f of [...Object.values(IMAGE_FILES), 'manifest.json']) await chmod(join(dir, f), 0o444);
}

/**
 * Put the image in `src` at `dest`: hard links (the files are read-only bases, VMs write to
 * qcow2 overlays), or a sparse copy across filesystems. The new directory is assembled beside
 * dest and renamed over it.
 */
export async function materialize(src: string, dest: string): Promise<void> {
  if (resolve(src) === resolve(dest)) return;
  await mkdir(dirname(resolve(dest)), { recursive: true });
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = `${dest}.tmp-${suffix}`;
  await mkdir(tmp);
  try {
    for (const f of [...Object.values(IMAGE_FILES), 'manifest.json']) {
      try {
        await link(join(src, f), join(tmp, f));
      } catch {
        await run(['cp', '--sparse=always', '--preserve=mode,timestamps', join(src, f), join(tmp, f)]);
      }
    }
    const old = `${dest}.old-${suffix}`;
    let moved = false;
    try {
      await rename(dest, old);
      moved = true;
    } catch {
      // no previous image
    }
    await rename(tmp, dest);
    if (moved) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Run fn holding an exclusive lock file (pid inside); a lock whose process is gone is taken over. */
export async function withBuildLock<T>(
  path: string,
  signal: AbortSignal | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  for (;;) {
    signal?.throwIfAborted();
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      const fresh = Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? 0) < 10_000;
      // An empty lock is one being written right now, unless it has been empty for a while.
      if ((!Number.isInteger(pid) || pid <= 0) && !fresh) {
        await rm(path, { force: true });
        continue;
      }
      if (Number.isInteger(pid) && pid > 0 && !processAlive(pid)) {
        await rm(path, { force: true });
        continue;
      }
      await sleep(250, undefined, { signal });
    }
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}
