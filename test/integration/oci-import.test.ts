// Import from an OCI image layout directory and from a `docker save` archive, both built here:
// the same config and layers as a pull, blobs verified into the shared cache, then flatten → ext4.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { layersToExt4 } from '../../src/image/oci/convert.ts';
import { layerInputs } from '../../src/image/oci/image.ts';
import { importDockerArchive, importOciLayout, parseLayoutArg } from '../../src/image/oci/import.ts';
import { catImage, listImage, statImage } from '../helpers/oci-debugfs.ts';
import { gzip, sha256, tarEntries, type TarSpec } from '../helpers/oci-tar.ts';

const L1: TarSpec[] = [
  { path: 'etc/', type: 'dir' },
  { path: 'etc/motd', body: 'from layer 1\n' },
  { path: 'usr/bin/', type: 'dir' },
  { path: 'usr/bin/sudo', mode: 0o4755, body: 'sudo' },
];
const L2: TarSpec[] = [
  { path: 'etc/.wh.motd' },
  { path: 'srv/', type: 'dir', uid: 33, gid: 33 },
  { path: 'srv/index.html', body: '<h1>hi</h1>', uid: 33, gid: 33 },
];

function config(diffIds: string[], architecture = 'amd64'): Buffer {
  return Buffer.from(
    JSON.stringify({
      os: 'linux',
      architecture,
      config: { Env: ['A=1'], WorkingDir: '/srv', Cmd: ['serve'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
}

describe('image import', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'oci-import-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const cacheDir = (): string => join(dir, 'cache');

  function writeLayout(): { layout: string; manifestDigest: string; indexDigest: string } {
    const layout = join(dir, 'layout');
    mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
    const put = (b: Buffer): { digest: string; size: number } => {
      const digest = sha256(b);
      writeFileSync(join(layout, 'blobs', 'sha256', digest.slice(7)), b);
      return { digest, size: b.length };
    };
    const tars = [tarEntries(L1), tarEntries(L2)];
    const layers = tars.map((t) => ({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      ...put(gzip(t)),
    }));
    const cfg = {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      ...put(config(tars.map((t) => sha256(t)))),
    };
    const man = put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: cfg,
          layers,
        }),
      ),
    );
    // A nested index (what `skopeo copy --all` or `docker buildx --output type=oci` write).
    const nested = put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.index.v1+json',
          manifests: [
            {
              mediaType: 'application/vnd.oci.image.manifest.v1+json',
              ...man,
              platform: { os: 'linux', architecture: 'amd64' },
            },
          ],
        }),
      ),
    );
    writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    writeFileSync(
      join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...man,
            annotations: { 'org.opencontainers.image.ref.name': 'v1' },
          },
          {
            mediaType: 'application/vnd.oci.image.index.v1+json',
            ...nested,
            annotations: { 'org.opencontainers.image.ref.name': 'multi' },
          },
        ],
      }),
    );
    return { layout, manifestDigest: man.digest, indexDigest: nested.digest };
  }

  it('OCI layout by tag (direct manifest and nested index), verified into the cache, then ext4', async () => {
    const { layout, manifestDigest, indexDigest } = writeLayout();
    expect(parseLayoutArg(`${layout}:v1`)).toEqual({ dir: layout, tag: 'v1' });
    expect(parseLayoutArg('/a:b/c')).toEqual({ dir: '/a:b/c' });
    const img = await importOciLayout(layout, { cacheDir: cacheDir(), tag: 'v1' });
    expect(img).toMatchObject({
      digest: manifestDigest,
      reference: 'v1',
      platform: { os: 'linux', architecture: 'amd64' },
    });
    expect(img.config).toMatchObject({ Env: ['A=1'], WorkingDir: '/srv', Cmd: ['serve'] });
    expect(img.layers.every((l) => l.path.startsWith(join(cacheDir(), 'sha256')))).toBe(true);
    const multi = await importOciLayout(layout, { cacheDir: cacheDir(), tag: 'multi' });
    expect(multi).toMatchObject({ digest: manifestDigest, indexDigest });

    const image = join(dir, 'root.ext4');
    await layersToExt4(layerInputs(img), {
      imagePath: image,
      workDir: dir,
      label: 'imp',
      headroomBytes: 1 << 20,
    });
    const [sudo, srv] = statImage(image, ['/usr/bin/sudo', '/srv/index.html']);
    expect(sudo).toMatchObject({ mode: 0o4755, uid: 0 });
    expect(srv).toMatchObject({ uid: 33, gid: 33, size: 11 });
    // Whited out by layer 2.
    expect(listImage(image)).toContain('/etc');
    expect(listImage(image)).not.toContain('/etc/motd');

    await expect(importOciLayout(layout, { cacheDir: cacheDir() })).rejects.toThrow(
      /holds 2 images: say which \(DIR:TAG; tags: v1, multi\)/,
    );
    await expect(importOciLayout(layout, { cacheDir: cacheDir(), tag: 'nope' })).rejects.toThrow(
      /no image tagged nope/,
    );
    await expect(
      importOciLayout(layout, { cacheDir: cacheDir(), tag: 'v1', platform: 'linux/arm64' }),
    ).rejects.toThrow(/the image is linux\/amd64, not linux\/arm64/);
  });

  it('a corrupted blob in a layout is refused and not cached', async () => {
    const { layout } = writeLayout();
    const l1 = sha256(gzip(tarEntries(L1)));
    writeFileSync(join(layout, 'blobs', 'sha256', l1.slice(7)), gzip(tarEntries(L2)));
    await expect(importOciLayout(layout, { cacheDir: join(dir, 'c2'), tag: 'v1' })).rejects.toThrow(
      /bytes, but the manifest says|content has digest/,
    );
  });

  it('a docker save archive, shared layers linked by symlink as docker writes them', async () => {
    const tars = [tarEntries(L1), tarEntries(L2)];
    const cfg = config(tars.map((t) => sha256(t)));
    const cfgName = `${sha256(cfg).slice(7)}.json`;
    const archive = tarEntries([
      { path: cfgName, body: cfg },
      { path: 'aaa/', type: 'dir' },
      { path: 'aaa/layer.tar', body: tars[0]! },
      { path: 'bbb/', type: 'dir' },
      { path: 'bbb/layer.tar', body: tars[1]! },
      // docker save links a layer shared by two images instead of storing it twice.
      { path: 'ccc/', type: 'dir' },
      { path: 'ccc/layer.tar', type: 'symlink', linkname: '../aaa/layer.tar' },
      {
        path: 'manifest.json',
        body: JSON.stringify([
          { Config: cfgName, RepoTags: ['example.com/web:1.0'], Layers: ['ccc/layer.tar', 'bbb/layer.tar'] },
        ]),
      },
    ]);
    const file = join(dir, 'saved.tar');
    writeFileSync(file, archive);
    const img = await importDockerArchive(file, { cacheDir: cacheDir() });
    expect(img).toMatchObject({
      digest: sha256(cfg),
      configDigest: sha256(cfg),
      reference: 'example.com/web:1.0',
    });
    expect(img.layers.map((l) => l.digest)).toEqual(tars.map((t) => sha256(t)));
    const image = join(dir, 'saved.ext4');
    await layersToExt4(layerInputs(img), {
      imagePath: image,
      workDir: dir,
      label: 'ds',
      headroomBytes: 1 << 20,
    });
    expect(catImage(image, '/srv/index.html').toString()).toBe('<h1>hi</h1>');
    expect(statImage(image, ['/usr/bin/sudo'])[0]).toMatchObject({ mode: 0o4755 });

    await expect(importDockerArchive(file, { cacheDir: cacheDir(), tag: 'other:2' })).rejects.toThrow(
      /no image tagged other:2 \(tags: example.com\/web:1.0\)/,
    );
    writeFileSync(join(dir, 'saved.tar.gz'), gzip(archive));
    await expect(importDockerArchive(join(dir, 'saved.tar.gz'), { cacheDir: cacheDir() })).rejects.toThrow(
      /gzip-compressed: decompress it first/,
    );
  });
});
