// Compare generated text with what is on disk (the --check drift gate), and write it.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { GENERATED_DIR } from './generate.ts';

export interface Drift {
  /** On disk, but with different content. */
  changed: string[];
  /** Generated, but not on disk. */
  missing: string[];
  /** Under generated/ on disk, but no longer generated. */
  orphans: string[];
}

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

export function compareWithDisk(root: string, files: ReadonlyMap<string, string>): Drift {
  const drift: Drift = { changed: [], missing: [], orphans: [] };
  for (const [path, text] of files) {
    const abs = join(root, path);
    if (!existsSync(abs)) drift.missing.push(path);
    else if (readFileSync(abs, 'utf8') !== text) drift.changed.push(path);
  }
  for (const abs of listFiles(join(root, GENERATED_DIR))) {
    const path = relative(root, abs).split('\\').join('/');
    if (!files.has(path)) drift.orphans.push(path);
  }
  drift.orphans.sort();
  return drift;
}

export function isClean(d: Drift): boolean {
  return d.changed.length + d.missing.length + d.orphans.length === 0;
}

/** Write what differs and delete orphans; returns the drift that was fixed. */
export function writeGenerated(root: string, files: ReadonlyMap<string, string>): Drift {
  const drift = compareWithDisk(root, files);
  for (const path of [...drift.changed, ...drift.missing]) {
    const abs = join(root, path);
    mkdirSync(dirname(abs), { recursive: true });
    writeFileSync(abs, files.get(path) as string);
  }
  for (const path of drift.orphans) rmSync(join(root, path));
  return drift;
}
