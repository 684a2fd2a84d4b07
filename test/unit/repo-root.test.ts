import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findRepoRoot } from '../../src/util/repo-root.ts';

describe('findRepoRoot', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'banger-root-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('finds this checkout from a folder inside it, and from its own default start', () => {
    const repo = resolve(import.meta.dirname, '..', '..');
    expect(findRepoRoot(join(repo, 'src', 'egress'))).toBe(repo);
    expect(findRepoRoot()).toBe(repo);
  });

  it('passes over a foreign and a malformed package.json on the way up', () => {
    const outer = join(tmp, 'outer');
    const foreign = join(outer, 'vendor', 'other');
    const broken = join(foreign, 'broken', 'deep');
    mkdirSync(broken, { recursive: true });
    writeFileSync(join(outer, 'package.json'), JSON.stringify({ name: 'banger' }));
    writeFileSync(join(foreign, 'package.json'), JSON.stringify({ name: 'other' }));
    writeFileSync(join(foreign, 'broken', 'package.json'), '{ not json');
    expect(findRepoRoot(broken)).toBe(outer);
  });

  it('is undefined where no banger package.json is above', () => {
    const lone = join(tmp, 'lone', 'a');
    mkdirSync(lone, { recursive: true });
    expect(findRepoRoot(lone)).toBeUndefined();
  });
});
