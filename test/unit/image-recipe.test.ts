import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  canonicalJson,
  DEFAULT_RECIPE,
  findGuestDir,
  recipeHash,
  sourcesList,
  type ImageRecipe,
} from '../../src/image/recipe.ts';

const guestDir = findGuestDir();
const copy = mkdtempSync(join(tmpdir(), 'bg-guest-'));
cpSync(guestDir, copy, { recursive: true });
afterAll(() => rmSync(copy, { recursive: true, force: true }));

const clone = (): ImageRecipe => structuredClone(DEFAULT_RECIPE);

describe('recipeHash', () => {
  it('is a stable sha256 for the same recipe and guest files', () => {
    const a = recipeHash();
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(recipeHash()).toBe(a);
    expect(recipeHash(clone(), { guestDir: copy })).toBe(a);
  });

  it('does not depend on object key order', () => {
    const reordered = Object.fromEntries(Object.entries(clone()).reverse()) as unknown as ImageRecipe;
    expect(recipeHash(reordered, { guestDir })).toBe(recipeHash(DEFAULT_RECIPE, { guestDir }));
  });

  it('changes with the package list, units, labels and size', () => {
    const base = recipeHash(DEFAULT_RECIPE, { guestDir });
    const variants: Array<(r: ImageRecipe) => void> = [
      (r) => r.packages.push('vim-tiny'),
      (r) => r.maskUnits.pop(),
      (r) => (r.rootLabel = 'other-root'),
      (r) => (r.rootfsSizeMiB += 1),
      (r) => (r.serialGetty = true),
      (r) => (r.guestFiles[0]!.mode = 0o700),
    ];
    const seen = new Set([base]);
    for (const change of variants) {
      const r = clone();
      change(r);
      const h = recipeHash(r, { guestDir });
      expect(seen.has(h)).toBe(false);
      seen.add(h);
    }
  });

  it('changes with the content of a guest file and with the builder version', () => {
    const base = recipeHash(DEFAULT_RECIPE, { guestDir: copy });
    expect(recipeHash(DEFAULT_RECIPE, { guestDir: copy, builderVersion: 'x' })).not.toBe(base);
    writeFileSync(join(copy, 'ssh', 'banger.conf'), '# changed\n');
    expect(recipeHash(DEFAULT_RECIPE, { guestDir: copy })).not.toBe(base);
  });
});

describe('canonicalJson / sourcesList', () => {
  it('sorts keys at every level and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 2 }], c: undefined } })).toBe(
      '{"a":{"d":[2,{"y":2,"z":1}]},"b":1}',
    );
  });

  it('writes signed-by deb lines for every source', () => {
    const text = sourcesList(DEFAULT_RECIPE);
    expect(text.trim().split('\n')).toHaveLength(DEFAULT_RECIPE.sources.length);
    expect(text).toContain(
      'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main',
    );
  });

  it('lists every guest file that exists in guest/', () => {
    for (const f of DEFAULT_RECIPE.guestFiles)
      expect(() => recipeHash(DEFAULT_RECIPE, { guestDir })).not.toThrow(f.src);
  });
});
