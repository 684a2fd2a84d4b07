import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileAtomic, writeFileAtomicSync } from '../../src/util/atomic-write.ts';

describe('writeFileAtomic', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'banger-atomic-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  for (const [kind, write] of [
    ['async', writeFileAtomic],
    ['sync', async (...a: Parameters<typeof writeFileAtomicSync>) => writeFileAtomicSync(...a)],
  ] as const) {
    it(`${kind}: replaces the file whole, with the mode asked for, and leaves no temporary file`, async () => {
      const f = join(dir, 'f.json');
      writeFileSync(f, 'old', { mode: 0o644 });
      await write(f, 'new\n', { mode: 0o600 });
      expect(readFileSync(f, 'utf8')).toBe('new\n');
      // rename replaces the inode: the new file has the temporary file's mode, not the old one's.
      expect(statSync(f).mode & 0o777).toBe(0o600);
      expect(readdirSync(dir)).toEqual(['f.json']);
      await write(f, Buffer.from('bytes'), { fsync: true });
      expect(readFileSync(f, 'utf8')).toBe('bytes');
      expect(readdirSync(dir)).toEqual(['f.json']);
    });

    it(`${kind}: writes through a given temporary name (what a sweep looks for), over a crash's leftover`, async () => {
      const f = join(dir, 'manifest.json');
      writeFileSync(`${f}.tmp`, 'left by a crash');
      await write(f, '{}', { tmp: `${f}.tmp`, fsync: true });
      expect(readFileSync(f, 'utf8')).toBe('{}');
      expect(readdirSync(dir)).toEqual(['manifest.json']);
    });

    it(`${kind}: a failed rename keeps the old file and removes the temporary one`, async () => {
      const f = join(dir, 'target');
      // A directory in the way: the rename fails (EISDIR), after the temporary file was written.
      mkdirSync(f);
      writeFileSync(join(f, 'keep'), 'x');
      await expect(write(f, 'data')).rejects.toThrow();
      expect(readdirSync(dir)).toEqual(['target']);
      expect(readFileSync(join(f, 'keep'), 'utf8')).toBe('x');
    });
  }
});
