// Replace a file whole: write a temporary file in the same directory (same filesystem), then
// rename it over the target, so a reader sees the old content or the new, never half of it, and a
// crash leaves at most the temporary file. With `fsync`, the data is on disk before the rename and
// the rename is on disk before the call returns (it survives a power cut, not just a crash).
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export interface AtomicWriteOptions {
  /** The new file's mode (default: writeFile's, 0o666 less the umask). */
  mode?: number;
  /** Flush the file before the rename and the directory after it. */
  fsync?: boolean;
  /**
   * The temporary file's path (in the target's directory): give it when a start-up sweep looks for
   * that name; it is overwritten if a crash left it. Default: `<path>.<pid>-<random>.tmp`, created
   * exclusively.
   */
  tmp?: string;
}

function tmpFor(path: string, o: AtomicWriteOptions): { tmp: string; flag: 'w' | 'wx' } {
  return o.tmp !== undefined
    ? { tmp: o.tmp, flag: 'w' }
    : { tmp: `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`, flag: 'wx' };
}

/** fsync a file or directory by path. */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function fsyncPathSync(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  o: AtomicWriteOptions = {},
): Promise<void> {
  const { tmp, flag } = tmpFor(path, o);
  try {
    await writeFile(tmp, data, { flag, ...(o.mode !== undefined ? { mode: o.mode } : {}) });
    if (o.fsync) await fsyncPath(tmp);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  if (o.fsync) await fsyncPath(dirname(path));
}

/** writeFileAtomic for synchronous callers (the CLI's small files). */
export function writeFileAtomicSync(
  path: string,
  data: string | Uint8Array,
  o: AtomicWriteOptions = {},
): void {
  const { tmp, flag } = tmpFor(path, o);
  try {
    writeFileSync(tmp, data, { flag, ...(o.mode !== undefined ? { mode: o.mode } : {}) });
    if (o.fsync) fsyncPathSync(tmp);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  if (o.fsync) fsyncPathSync(dirname(path));
}
