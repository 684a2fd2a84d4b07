// Scratch space for a conversion: spilled layer contents and the staging tree mkfs.ext4 -d reads.
// On tmpfs when the image fits in a share of the free memory: tens of thousands of small files are
// then written, renamed, chmod'ed and read back at memory speed, and the disk sees one write, the
// ext4 image itself (npm run bench -- --parts pull). Directories are private (mkdtemp, 0700) and
// named after our pid, so the leftovers of a daemon that died mid-conversion (memory, until
// reboot) are swept by the next conversion.
import { spawn } from 'node:child_process';
import { freemem } from 'node:os';
import { lstat, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from '../exec.ts';

const TMPFS_MAGIC = 0x01021994;
const PREFIX = 'banger-oci-';

export interface MemoryScratch {
  /** The tmpfs directory scratch directories are made in. */
  dir: string;
  /** Prefix for mkdtemp (carries our pid). */
  prefix: string;
  /** Decompressed bytes a conversion may put there before it must go to disk instead. */
  limit: number;
}

/** Thrown by flatten when the scratch limit is passed; the caller starts again on disk. */
export class ScratchFullError extends Error {
  constructor(limit: number) {
    super(`the image does not fit in ${Math.round(limit / 2 ** 20)} MiB of memory scratch`);
    this.name = 'ScratchFullError';
  }
}

/** Less memory scratch than this is not worth using: an image's scratch outgrows it at once. */
export const MIN_MEMORY_SCRATCH = 64 * 2 ** 20;

/**
 * Memory scratch in `dir` when it is a tmpfs: half of what is free there and half of the free
 * memory (tmpfs pages are memory; the other half is left to everyone else), or undefined when
 * that is less than `minBytes`.
 */
export async function memoryScratch(
  dir: string,
  minBytes: number = MIN_MEMORY_SCRATCH,
): Promise<MemoryScratch | undefined> {
  let fs;
  try {
    fs = await statfs(dir);
  } catch {
    return undefined;
  }
  if (fs.type !== TMPFS_MAGIC) return undefined;
  // Earlier conversions' scratch still being removed holds memory: let it go first.
  await scratchSettled();
  await sweepDead(dir);
  const limit = Math.floor(Math.min(fs.bavail * fs.bsize, freemem()) / 2);
  if (limit < minBytes) return undefined;
  return { dir, prefix: `${PREFIX}${process.pid}-`, limit };
}

/** Remove scratch directories of ours left by processes that no longer exist. */
async function sweepDead(dir: string): Promise<void> {
  const uid = process.getuid?.();
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^banger-oci-(\d+)-/.exec(name);
    if (!m || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
    const path = join(dir, name);
    const st = await lstat(path).catch(() => undefined);
    if (st?.isDirectory() && st.uid === uid) await removeTree(path);
  }
}

/**
 * rm -rf of a directory of ours: the C tool removes 26 000 files several times faster than
 * fs.rm's one promise per entry; fs.rm when it cannot be spawned or fails.
 */
export async function removeTree(path: string): Promise<void> {
  const ok = await new Promise<boolean>((resolve) => {
    const child = spawn('rm', ['-rf', '--one-file-system', '--', path], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
  if (!ok) await rm(path, { recursive: true, force: true });
}

const removing = new Set<Promise<void>>();

/**
 * Remove memory scratch in the background: the image is done, and 26 000 files on tmpfs take a
 * few hundred milliseconds to unlink. The next conversion waits for it (scratchSettled); if the
 * process dies first, sweepDead removes it later.
 */
export function removeLater(path: string): void {
  const p: Promise<void> = removeTree(path)
    .catch(() => undefined)
    .finally(() => removing.delete(p));
  removing.add(p);
}

/** Resolves once every removeLater() so far is done. */
export async function scratchSettled(): Promise<void> {
  while (removing.size > 0) await Promise.all([...removing]);
}
