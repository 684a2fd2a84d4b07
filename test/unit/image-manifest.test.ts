import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  IMAGE_FILES,
  MANIFEST_FORMAT,
  materialize,
  parseManifest,
  readManifest,
  withBuildLock,
  type ImageManifest,
} from '../../src/image/manifest.ts';

const tmp = mkdtempSync(join(tmpdir(), 'bg-manifest-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function fakeImage(dir: string, hash: string): ImageManifest {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, IMAGE_FILES.kernel), 'k');
  writeFileSync(join(dir, IMAGE_FILES.initrd), 'ii');
  writeFileSync(join(dir, IMAGE_FILES.rootfs), 'rrr');
  const m: ImageManifest = {
    format: MANIFEST_FORMAT,
    recipe_hash: hash,
    recipe_name: 'default',
    builder_version: '1',
    kernel_version: '6.1.0-56-cloud-amd64',
    kernel_package: { name: 'linux-image-6.1.0-56-cloud-amd64', version: '6.1.192-2' },
    files: { ...IMAGE_FILES },
    sizes: { kernel: 1, initrd: 2, rootfs: 3, rootfs_allocated: 4096 },
    root_label: 'banger-root',
    seed_label: 'banger-seed',
    initramfs_modules: [],
    created_at: new Date(0).toISOString(),
    build_mode: 'unshare',
    build_duration_ms: 1,
    stage_durations_ms: {},
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
  return m;
}

describe('manifest', () => {
  it('reads a complete image and rejects incomplete ones', async () => {
    const dir = join(tmp, 'a');
    fakeImage(dir, 'h1');
    expect((await readManifest(dir))?.recipe_hash).toBe('h1');
    writeFileSync(join(dir, IMAGE_FILES.rootfs), 'truncated-or-grown');
    expect(await readManifest(dir)).toBeUndefined();
    expect(await readManifest(join(tmp, 'nope'))).toBeUndefined();
    expect(parseManifest('{')).toBeUndefined();
    expect(parseManifest('{"format":99}')).toBeUndefined();
  });

  it('materializes by hard link and replaces an older image', async () => {
    const src = join(tmp, 'cache', 'h2');
    fakeImage(src, 'h2');
    const out = join(tmp, 'out', 'image');
    fakeImage(out, 'old');
    await materialize(src, out);
    expect((await readManifest(out))?.recipe_hash).toBe('h2');
    expect(statSync(join(out, IMAGE_FILES.rootfs)).ino).toBe(statSync(join(src, IMAGE_FILES.rootfs)).ino);
    expect(readFileSync(join(out, IMAGE_FILES.kernel), 'utf8')).toBe('k');
    const leftovers = (await import('node:fs')).readdirSync(join(tmp, 'out'));
    expect(leftovers).toEqual(['image']);
  });
});

describe('withBuildLock', () => {
  it('serialises holders and takes over a dead holder’s lock', async () => {
    const lock = join(tmp, 'x.lock');
    writeFileSync(lock, '999999999\n'); // no such pid
    const order: string[] = [];
    const a = withBuildLock(lock, undefined, async () => {
      order.push('a-start');
      await new Promise((r) => setTimeout(r, 50));
      order.push('a-end');
    });
    await new Promise((r) => setTimeout(r, 10));
    const b = withBuildLock(lock, undefined, async () => {
      order.push('b');
    });
    await Promise.all([a, b]);
    expect(order).toEqual(['a-start', 'a-end', 'b']);
    expect(existsSync(lock)).toBe(false);
  });
});
