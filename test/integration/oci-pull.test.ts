// Pull against an in-process registry on 127.0.0.1: tags, digests, indexes, auth (bearer token
// with credentials from a docker config, basic), retries, resumable and verified blob downloads,
// the shared cache and its prune, and the pulled image through flatten → ext4.
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobCache } from '../../src/image/oci/blobs.ts';
import { layersToExt4 } from '../../src/image/oci/convert.ts';
import { dockerConfigCredentials } from '../../src/image/oci/credentials.ts';
import { layerInputs } from '../../src/image/oci/image.ts';
import { pullImage, type PullOptions, type PullProgress } from '../../src/image/oci/pull.ts';
import { catImage, statImage } from '../helpers/oci-debugfs.ts';
import { FakeRegistry } from '../helpers/oci-registry.ts';
import { gzip, sha256, tarEntries, zstd } from '../helpers/oci-tar.ts';

const FAST = { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 };
/**
 * A non-loopback address of this host, to show plain HTTP there needs `insecure`. Off unless
 * BANGER_TEST_HOST_ADDR=1: test traffic goes only to loopback or to addresses inside a network
 * namespace the test made, never to the host's own interface addresses.
 */
const OTHER_ADDR =
  process.env.BANGER_TEST_HOST_ADDR === '1'
    ? Object.values(networkInterfaces())
        .flat()
        .find((a) => a?.family === 'IPv4' && !a.internal)?.address
    : undefined;

function layer(entries: Parameters<typeof tarEntries>[0], compress: 'gzip' | 'zstd' | 'none' = 'gzip') {
  const tar = tarEntries(entries);
  const blob = compress === 'gzip' ? gzip(tar) : compress === 'zstd' ? zstd(tar) : tar;
  return {
    blob,
    diffId: sha256(tar),
    mediaType:
      compress === 'zstd'
        ? 'application/vnd.oci.image.layer.v1.tar+zstd'
        : compress === 'none'
          ? 'application/vnd.oci.image.layer.v1.tar'
          : 'application/vnd.oci.image.layer.v1.tar+gzip',
  };
}

const BASE = layer([
  { path: 'etc/', type: 'dir' },
  { path: 'etc/os-release', body: 'ID=test\n' },
  { path: 'bin/', type: 'dir' },
  { path: 'bin/sh', mode: 0o755, body: randomBytes(300_000) },
]);
const APP = layer(
  [
    { path: 'app/', type: 'dir', uid: 1000, gid: 1000 },
    { path: 'app/run', mode: 0o755, uid: 1000, gid: 1000, body: '#!/bin/sh\necho hi\n' },
  ],
  'zstd',
);

describe('pullImage', () => {
  let reg: FakeRegistry;
  let dir: string;
  let host: string;
  const opts = (ref: string, extra: Partial<PullOptions> = {}): PullOptions => ({
    ref: `${host}/${ref}`,
    cacheDir: join(dir, 'blobs'),
    credentials: undefined,
    retry: FAST,
    idleTimeoutMs: 2000,
    ...extra,
  });
  const cacheFiles = (): string[] =>
    existsSync(join(dir, 'blobs', 'sha256')) ? readdirSync(join(dir, 'blobs', 'sha256')).sort() : [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'oci-pull-'));
    reg = new FakeRegistry();
    host = await reg.start();
  });
  afterEach(async () => {
    await reg.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pulls by tag over plain HTTP on loopback, with progress per layer and overall, then converts', async () => {
    const img = reg.addImage('team/app', 'v1', [BASE, APP], {
      WorkingDir: '/app',
      User: '1000:1000',
      Entrypoint: ['/app/run'],
      Cmd: ['--verbose'],
    });
    const events: PullProgress[] = [];
    const pulled = await pullImage(opts('team/app:v1', { onProgress: (e) => events.push(e) }));
    expect(pulled.digest).toBe(img.digest);
    expect(pulled.reference).toBe(`${host}/team/app:v1`);
    expect(pulled.config).toMatchObject({
      WorkingDir: '/app',
      User: '1000:1000',
      Entrypoint: ['/app/run'],
      Cmd: ['--verbose'],
      Env: ['PATH=/usr/bin:/bin'],
    });
    expect(pulled.layers.map((l) => l.digest)).toEqual(img.layers);
    expect(pulled.blobs).toEqual(expect.arrayContaining([img.digest, img.config, ...img.layers]));
    expect(reg.requests('/manifests/v1')[0]?.accept).toContain('application/vnd.oci.image.index.v1+json');
    const resolved = events.find((e) => e.kind === 'resolved');
    expect(resolved).toMatchObject({ platform: 'linux/amd64' });
    const layerEvents = events.filter((e) => e.kind === 'layer');
    const last = layerEvents[layerEvents.length - 1];
    expect(last).toMatchObject({ overallDone: BASE.blob.length + APP.blob.length });
    expect(new Set(layerEvents.map((e) => (e.kind === 'layer' ? e.index : -1)))).toEqual(new Set([0, 1]));

    const image = join(dir, 'rootfs.ext4');
    await layersToExt4(layerInputs(pulled), {
      imagePath: image,
      workDir: dir,
      label: 'pulled',
      headroomBytes: 4 << 20,
    });
    const [run] = statImage(image, ['/app/run']);
    expect(run).toMatchObject({ uid: 1000, gid: 1000, mode: 0o755 });
    expect(catImage(image, '/app/run').toString()).toContain('echo hi');
  });

  it('pulls by digest, and a second image sharing a layer downloads only the new one', async () => {
    const a = reg.addImage('lib/a', 'latest', [BASE]);
    await pullImage(opts(`lib/a@${a.digest}`));
    expect(reg.requests(`/manifests/${a.digest}`)).toHaveLength(1);
    const b = reg.addImage('lib/b', 'latest', [BASE, APP]);
    const before = reg.log.length;
    await pullImage(opts('lib/b'));
    const blobGets = reg.log.slice(before).filter((r) => r.path.includes('/blobs/'));
    expect(blobGets.map((r) => r.path.split('/blobs/')[1])).toEqual(
      expect.arrayContaining([b.config, b.layers[1]]),
    );
    expect(blobGets.some((r) => r.path.endsWith(b.layers[0]!))).toBe(false);
  });

  it('picks the platform from an index and says which; an absent platform lists what there is', async () => {
    const amd = reg.addImage('multi', undefined, [BASE]);
    const arm = reg.addImage('multi', undefined, [APP], {}, { os: 'linux', architecture: 'arm64' });
    const desc = (d: { digest: string; size: number }, architecture: string, variant?: string) => ({
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      digest: d.digest,
      size: d.size,
      platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) },
    });
    const list = reg.addManifest(
      'multi',
      'latest',
      {
        schemaVersion: 2,
        mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
        manifests: [desc(arm, 'arm64', 'v8'), desc(amd, 'amd64')],
      },
      'application/vnd.docker.distribution.manifest.list.v2+json',
    );
    const events: PullProgress[] = [];
    const got = await pullImage(opts('multi', { onProgress: (e) => events.push(e) }));
    expect(got.digest).toBe(amd.digest);
    expect(got.indexDigest).toBe(list);
    const resolved = events.find((e) => e.kind === 'resolved');
    expect(resolved?.kind === 'resolved' && resolved.message).toContain(
      'picked linux/amd64 from a manifest list',
    );
    const armImg = await pullImage(opts('multi', { platform: 'linux/arm64' }));
    expect(armImg.digest).toBe(arm.digest);
    await expect(pullImage(opts('multi', { platform: 'linux/s390x' }))).rejects.toThrow(
      /no linux\/s390x image in the index; it has: linux\/arm64\/v8, linux\/amd64/,
    );
  });

  it('bearer auth: the token endpoint gets the docker config credentials; wrong ones give a clear error', async () => {
    reg.addImage('private/app', 'latest', [BASE]);
    reg.auth = { kind: 'bearer', user: 'alice', pass: 's3cret' };
    const cfg = join(dir, 'config.json');
    writeFileSync(
      cfg,
      JSON.stringify({ auths: { [host]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }),
    );
    const pulled = await pullImage(opts('private/app', { credentials: dockerConfigCredentials(cfg) }));
    expect(pulled.layers).toHaveLength(1);
    const tokenReq = reg.requests('/token')[0];
    expect(tokenReq?.auth).toBe(`Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    expect(tokenReq?.path).toContain('scope=repository%3Aprivate%2Fapp%3Apull');
    expect(reg.requests('/blobs/').every((r) => r.auth?.startsWith('Bearer tok-'))).toBe(true);

    writeFileSync(
      cfg,
      JSON.stringify({
        auths: { [`http://${host}`]: { auth: Buffer.from('alice:wrong').toString('base64') } },
      }),
    );
    await expect(
      pullImage(
        opts('private/app', { credentials: dockerConfigCredentials(cfg), cacheDir: join(dir, 'c2') }),
      ),
    ).rejects.toThrow(
      new RegExp(
        `registry ${host}: token endpoint 127.0.0.1:\\d+ refused \\(HTTP 401: DENIED: bad credentials\\)`,
      ),
    );
  });

  it('an identity token (docker login with a refresh token) is exchanged by POST; blob redirects drop credentials', async () => {
    const img = reg.addImage('idt/app', 'latest', [APP]);
    reg.auth = { kind: 'bearer', refreshToken: 'refresh-123' };
    reg.fault(img.layers[0]!, { kind: 'redirect' });
    const cfg = join(dir, 'config.json');
    writeFileSync(cfg, JSON.stringify({ auths: { [host]: { identitytoken: 'refresh-123' } } }));
    const pulled = await pullImage(opts('idt/app', { credentials: dockerConfigCredentials(cfg) }));
    expect(pulled.layers).toHaveLength(1);
    expect(reg.requests('/token').every((r) => r.method === 'POST')).toBe(true);
    const cdn = reg.requests('/cdn/');
    expect(cdn).toHaveLength(1);
    expect(cdn[0]?.auth).toBeUndefined();
    expect(reg.requests(`/v2/idt/app/blobs/${img.layers[0]}`)[0]?.auth).toMatch(/^Bearer tok-/);
  });

  it('two pulls of images sharing a layer at the same time download it once', async () => {
    reg.addImage('c/a', 'latest', [BASE]);
    reg.addImage('c/b', 'latest', [BASE, APP]);
    const [a, b] = await Promise.all([pullImage(opts('c/a')), pullImage(opts('c/b'))]);
    expect(a.layers[0]?.path).toBe(b.layers[0]?.path);
    expect(reg.requests(`/blobs/${a.layers[0]!.digest}`).filter((r) => !r.range)).toHaveLength(1);
  });

  it('basic auth with credentials, and a clear error without', async () => {
    reg.addImage('basic/app', 'latest', [APP]);
    reg.auth = { kind: 'basic', user: 'bob', pass: 'pw' };
    await expect(pullImage(opts('basic/app'))).rejects.toThrow(
      /requires a login \(Basic\) and there are no credentials/,
    );
    const pulled = await pullImage(opts('basic/app', { credentials: { username: 'bob', password: 'pw' } }));
    expect(pulled.layers).toHaveLength(1);
  });

  it('retries 5xx with backoff, then succeeds; persistent 5xx names the registry, request and status', async () => {
    const img = reg.addImage('flaky', 'latest', [BASE]);
    reg.fault('flaky:latest', { kind: 'status', status: 503 }, { kind: 'status', status: 500 });
    reg.fault(img.layers[0]!, { kind: 'status', status: 502 });
    const retries: PullProgress[] = [];
    await pullImage(opts('flaky', { onProgress: (e) => e.kind === 'retry' && retries.push(e) }));
    expect(reg.requests('/manifests/latest')).toHaveLength(3);
    expect(retries.length).toBeGreaterThanOrEqual(2);

    reg.fault(
      'flaky:latest',
      ...Array.from({ length: 10 }, () => ({ kind: 'status' as const, status: 500 })),
    );
    await expect(pullImage(opts('flaky'))).rejects.toThrow(
      new RegExp(
        `registry ${host}: manifest flaky:latest: HTTP 500 Internal Server Error .*\\(after 4 attempts\\)`,
      ),
    );
    await expect(pullImage(opts('flaky:nope'))).rejects.toThrow(
      /HTTP 404 Not Found \(MANIFEST_UNKNOWN: manifest unknown\)/,
    );
  });

  it('a corrupted blob is discarded (never cached) with a clear error; the next pull gets it right', async () => {
    const img = reg.addImage('bad', 'latest', [BASE]);
    reg.fault(img.layers[0]!, { kind: 'corrupt' });
    await expect(pullImage(opts('bad'))).rejects.toThrow(
      new RegExp(
        `blob ${img.layers[0]} from registry ${host}: content has digest sha256:[0-9a-f]{64}; discarded`,
      ),
    );
    const hex = img.layers[0]!.slice(7);
    expect(cacheFiles().filter((f) => f.startsWith(hex))).toEqual([]);
    const pulled = await pullImage(opts('bad'));
    expect(await new BlobCache(join(dir, 'blobs')).has(img.layers[0]!, BASE.blob.length)).toBe(
      pulled.layers[0]!.path,
    );
  });

  it('more bytes than the descriptor says are refused and not kept', async () => {
    const img = reg.addImage('extra', 'latest', [APP]);
    reg.fault(img.layers[0]!, { kind: 'extra' });
    await expect(pullImage(opts('extra'))).rejects.toThrow(
      /more bytes than the \d+ the manifest says; discarded/,
    );
    expect(cacheFiles().filter((f) => f.startsWith(img.layers[0]!.slice(7)))).toEqual([]);
  });

  it('a truncated download is resumed with a Range request (retry), or by the next pull', async () => {
    const img = reg.addImage('trunc', 'latest', [BASE]);
    const d = img.layers[0]!;
    reg.fault(d, { kind: 'truncate', at: 100_000 });
    const retries: PullProgress[] = [];
    await pullImage(opts('trunc', { onProgress: (e) => e.kind === 'retry' && retries.push(e) }));
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatchObject({ what: `layer 1/1 ${d.slice(0, 19)}`, attempt: 1 });
    const gets = reg.requests(`/blobs/${d}`);
    expect(gets).toHaveLength(2);
    expect(gets[1]?.range).toMatch(/^bytes=\d+-$/);
    expect(Number(/bytes=(\d+)-/.exec(gets[1]!.range!)![1])).toBeGreaterThan(0);

    // No retries left: the partial file stays, and the next pull resumes from it.
    const img2 = reg.addImage(
      'trunc2',
      'latest',
      [APP, BASE].map((l, i) => (i === 0 ? layer([{ path: 'x', body: randomBytes(250_000) }], 'none') : l)),
    );
    const d2 = img2.layers[0]!;
    reg.fault(d2, { kind: 'truncate', at: 120_000 });
    await expect(pullImage(opts('trunc2', { retry: { attempts: 1 } }))).rejects.toThrow(
      /truncated at \d+ of \d+ bytes|connection closed mid-response|aborted|at \d+ of \d+ bytes/,
    );
    expect(cacheFiles()).toContain(`${d2.slice(7)}.partial`);
    await pullImage(opts('trunc2'));
    expect(reg.requests(`/blobs/${d2}`).at(-1)?.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(cacheFiles()).not.toContain(`${d2.slice(7)}.partial`);
  });

  it('a registry that ignores Range makes the download start over (still verified)', async () => {
    const img = reg.addImage('norange', 'latest', [BASE]);
    const d = img.layers[0]!;
    reg.fault(d, { kind: 'truncate', at: 50_000 }, { kind: 'norange' });
    const pulled = await pullImage(opts('norange'));
    expect(reg.requests(`/blobs/${d}`)).toHaveLength(2);
    expect(pulled.layers[0]?.path).toBeTruthy();
  });

  it('a stalled transfer times out, is retried and resumed', async () => {
    const img = reg.addImage('stall', 'latest', [BASE]);
    reg.fault(img.layers[0]!, { kind: 'stall', after: 10_000 });
    const t0 = Date.now();
    await pullImage(opts('stall', { idleTimeoutMs: 300 }));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(reg.requests(`/blobs/${img.layers[0]}`).at(-1)?.range).toMatch(/^bytes=[1-9]\d*-$/);
  });

  it.skipIf(OTHER_ADDR === undefined)(
    'a plain-HTTP registry on a non-loopback address needs insecure (and then works)',
    async () => {
      const other = new FakeRegistry();
      const h = await other.start(OTHER_ADDR);
      try {
        other.addImage('far/app', 'latest', [APP]);
        const o = { cacheDir: join(dir, 'far'), credentials: undefined, retry: FAST, idleTimeoutMs: 2000 };
        await expect(pullImage({ ...o, ref: `${h}/far/app` })).rejects.toThrow(
          new RegExp(
            `registry ${h}: manifest far/app:latest: .*\\(TLS failed; .*needs the insecure option\\)`,
          ),
        );
        expect(other.log).toEqual([]); // https only: nothing reached the plain-HTTP server as HTTP
        const pulled = await pullImage({ ...o, ref: `${h}/far/app`, insecure: true });
        expect(pulled.layers).toHaveLength(1);
      } finally {
        await other.stop();
      }
    },
  );

  it('an abort stops a pull at once; the partial download stays and the next pull resumes it', async () => {
    const img = reg.addImage('ab', 'latest', [BASE]);
    const d = img.layers[0]!;
    reg.fault(d, { kind: 'stall', after: 50_000 });
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 300);
    await expect(pullImage(opts('ab', { signal: ac.signal, idleTimeoutMs: 10_000 }))).rejects.toThrow(
      /abort/i,
    );
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(cacheFiles()).toContain(`${d.slice(7)}.partial`);
    expect(cacheFiles().some((f) => f.endsWith('.lock'))).toBe(false);
    await pullImage(opts('ab'));
    expect(reg.requests(`/blobs/${d}`).at(-1)?.range).toBe('bytes=50000-');
  });

  it.skipIf(process.getuid?.() !== 0)(
    'disk full mid-download: a clear error, nothing under the digest, and a resume once there is room',
    async () => {
      const img = reg.addImage('full', 'latest', [BASE]);
      const d = img.layers[0]!;
      const small = join(dir, 'small');
      mkdirSync(small);
      // A 128 KiB tmpfs for the cache: the ~300 KB layer cannot fit.
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', small]);
      try {
        await expect(pullImage(opts('full', { cacheDir: small }))).rejects.toThrow(
          new RegExp(`blob ${d} from registry ${host}: cannot write .*\\(ENOSPC: .*bytes kept to resume`),
        );
        const files = readdirSync(join(small, 'sha256'));
        expect(files).toContain(`${d.slice(7)}.partial`);
        expect(files).not.toContain(d.slice(7));
        // Room again (the same tmpfs made bigger): the pull resumes from the partial file.
        execFileSync('mount', ['-o', 'remount,size=4m', small]);
        await pullImage(opts('full', { cacheDir: small }));
        expect(reg.requests(`/blobs/${d}`).at(-1)?.range).toMatch(/^bytes=[1-9]\d*-$/);
        expect(readdirSync(join(small, 'sha256'))).toContain(d.slice(7));
      } finally {
        execFileSync('umount', [small]);
      }
    },
  );

  it('prune removes what no image references (dry run first) and abandoned partials', async () => {
    const a = reg.addImage('p/a', 'latest', [BASE]);
    const b = reg.addImage('p/b', 'latest', [APP]);
    const pa = await pullImage(opts('p/a'));
    await pullImage(opts('p/b'));
    writeFileSync(join(dir, 'blobs', 'sha256', `${'e'.repeat(64)}.partial`), 'half');
    const cache = new BlobCache(join(dir, 'blobs'));
    const dry = await cache.prune(pa.blobs, { dryRun: true });
    expect(dry.removed.map((r) => r.digest).sort()).toEqual([b.digest, b.config, b.layers[0]].sort());
    expect(dry.partials).toEqual([`${'e'.repeat(64)}.partial`]);
    expect(await cache.has(b.layers[0]!)).toBeTruthy();
    const real = await cache.prune(pa.blobs);
    expect(real.removed).toHaveLength(3);
    expect(await cache.has(b.layers[0]!)).toBeUndefined();
    expect(await cache.has(a.layers[0]!)).toBeTruthy();
    expect(cacheFiles().some((f) => f.endsWith('.partial'))).toBe(false);
  });
});
