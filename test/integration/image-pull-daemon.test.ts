// image.pull.* and image.cache.prune through a real daemon's RPC, against an in-process registry
// on 127.0.0.1 (test/helpers/oci-registry.ts), with the real flatten → ext4 and a fake `bootable`
// step (the real one boots a prepare VM; the smoke tests run it). The recorded row, the steps and
// their progress, a name conflict, a failing download and a failing or canceled bootable step
// leaving nothing behind, an OCI layout import, and what a cache prune keeps.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BangerClient } from '../../generated/client.gen.ts';
import type { ImagePullStatusResult } from '../../generated/types.gen.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import type { BootableOptions, BootableResult } from '../../src/daemon/services/image-bootable.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { openStore } from '../../src/store/index.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { FakeRegistry } from '../helpers/oci-registry.ts';
import { gzip, sha256, tarEntries } from '../helpers/oci-tar.ts';
import { shortTempDir } from '../helpers/tmp.ts';

function layer(entries: Parameters<typeof tarEntries>[0]): { blob: Buffer; diffId: string } {
  const tar = tarEntries(entries);
  return { blob: gzip(tar), diffId: sha256(tar) };
}

const BASE = layer([
  { path: 'etc/', type: 'dir' },
  { path: 'etc/os-release', body: 'ID=debian\nVERSION_ID=12\n' },
  { path: 'bin/', type: 'dir' },
  { path: 'bin/sh', mode: 0o755, body: Buffer.alloc(200_000, 7) },
]);
const APP = layer([
  { path: 'srv/', type: 'dir', uid: 1000, gid: 1000 },
  { path: 'srv/app', mode: 0o755, uid: 1000, gid: 1000, body: '#!/bin/sh\necho hi\n' },
]);
const OTHER = layer([{ path: 'opt/other', body: 'another image' }]);
const CFG = { Env: ['PATH=/usr/bin:/bin', 'APP=1'], WorkingDir: '/srv', User: '1000', Cmd: ['/srv/app'] };

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BANGER = join(ROOT, 'bin', 'banger');
const built = existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'));

/** Run bin/banger without blocking this process (the daemon lives here). */
function banger(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(BANGER, args, {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function rejection(p: Promise<unknown>): Promise<ErrorResponse> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ErrorResponse) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

/** Whether a file starts as an ext4 filesystem (superblock magic 0xEF53 at byte 1080). */
async function isExt4(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(2);
    await fh.read(b, 0, 2, 1080);
    return b.readUInt16LE(0) === 0xef53;
  } finally {
    await fh.close();
  }
}

describe('image.pull through the daemon', () => {
  const tmp = shortTempDir('ip');
  const stateDir = join(tmp.dir, 'state');
  const cacheDir = join(tmp.dir, 'cache');
  const blobs = join(cacheDir, 'oci', 'blobs', 'sha256');
  const reg = new FakeRegistry();
  let host = '';
  let daemon: RunningDaemon;
  let client: BangerClient;
  /** What the fake bootable step does next: succeed, fail, or wait until canceled. */
  let bootMode: 'ok' | 'fail' | 'hang' = 'ok';
  const bootCalls: BootableOptions[] = [];

  const bootable = async (o: BootableOptions): Promise<BootableResult> => {
    bootCalls.push(o);
    if (!(await isExt4(o.rootfsPath))) throw new Error('not an ext4 filesystem');
    o.onProgress?.('debian 12: installing openssh-server');
    if (bootMode === 'fail') throw new Error('apt-get failed: E: Unable to locate package openssh-server');
    if (bootMode === 'hang') {
      await new Promise<void>((_, reject) =>
        o.signal?.addEventListener('abort', () => reject(new Error('prepare VM stopped')), { once: true }),
      );
    }
    return { family: 'debian', installed: ['openssh-server'], log: 'ok\n' };
  };

  async function settled(opId: string, seen?: string[]): Promise<ImagePullStatusResult> {
    const end = Date.now() + 60_000;
    for (;;) {
      const r = await client.image.pull.status({ operation_id: opId });
      for (const s of r.operation.steps)
        if (s.detail && seen && !seen.includes(s.detail)) seen.push(s.detail);
      if (r.operation.state !== 'running') return r;
      if (Date.now() > end) throw new Error(`operation ${opId} still running`);
      await sleep(20);
    }
  }

  const leftovers = (): string[] => readdirSync(join(stateDir, 'images')).filter((n) => n.startsWith('.'));

  beforeAll(async () => {
    host = await reg.start();
    reg.addImage('test/minbase', 'bookworm', [BASE, APP], CFG);
    // The default image's kernel is what OCI images boot: record one so no image build runs.
    mkdirSync(stateDir, { recursive: true });
    const store = openStore(join(stateDir, 'state.db'));
    const k = store.kernels.insert({
      name: 'debian-bookworm',
      version: '6.1.0-28-cloud-amd64',
      kernelPath: join(tmp.dir, 'vmlinuz'),
      initrdPath: join(tmp.dir, 'initrd.cpio.gz'),
      source: 'built',
    });
    store.images.insert({
      name: 'debian-bookworm',
      kernelId: k.id,
      rootfsPath: join(tmp.dir, 'rootfs.ext4'),
      sizeBytes: 1,
      source: 'built',
      isDefault: true,
    });
    store.close();
    daemon = await startDaemon({
      socket: join(tmp.dir, 'd.sock'),
      stateDir,
      config: { ...DEFAULT_CONFIG, image_cache_dir: cacheDir, dns_port: 0 },
      helperSocket: undefined,
      logStream: new MemoryLog(),
      ociBootable: bootable,
    });
    client = new BangerClient(new SocketTransport(join(tmp.dir, 'd.sock')));
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop('test');
    await reg.stop();
    tmp.cleanup();
  });

  it('pulls by tag: steps, progress, the row with digest, reference and config, the files', async () => {
    bootMode = 'ok';
    const ref = `${host}/test/minbase:bookworm`;
    const begun = await client.image.pull.begin({ reference: ref });
    expect(begun.name).toBe('minbase-bookworm');
    const seen: string[] = [];
    const r = await settled(begun.operation_id, seen);
    expect(r.operation.state).toBe('succeeded');
    expect(r.operation.steps.map((s) => `${s.name}:${s.state}`)).toEqual([
      'resolve:done',
      'download:done',
      'flatten:done',
      'ext4:done',
      'bootable:done',
      'record:done',
    ]);
    const step = (n: string): string | undefined => r.operation.steps.find((s) => s.name === n)?.detail;
    expect(step('resolve')).toMatch(/single-platform manifest, 2 layers; sha256:[0-9a-f]{64}$/);
    expect(step('download')).toMatch(/^2 layers, \d+\.\d MiB$/);
    expect(step('bootable')).toBe('debian: installed openssh-server; kernel debian-bookworm');
    const manifest = [...reg.manifests.entries()].find(([k]) => k === 'test/minbase:bookworm')![1];
    const digest = `sha256:${createHash('sha256').update(manifest.body).digest('hex')}`;
    expect(r.image).toMatchObject({
      name: 'minbase-bookworm',
      source: 'oci',
      kernel: 'debian-bookworm',
      digest,
      reference: ref,
      oci_config: {
        env: ['PATH=/usr/bin:/bin', 'APP=1'],
        working_dir: '/srv',
        user: '1000',
        cmd: ['/srv/app'],
      },
      default: false,
    });
    // At least 1 GiB of room beyond the content, sparse.
    expect(r.image!.size_bytes).toBeGreaterThan(1024 ** 3);
    expect(await isExt4(r.image!.rootfs_path)).toBe(true);
    const shown = await client.image.show({ name: 'minbase-bookworm' });
    expect(shown.image.digest).toBe(digest);
    expect(leftovers()).toEqual([]);
    // The layers are in the shared cache, under their digests.
    for (const b of [BASE.blob, APP.blob]) expect(existsSync(join(blobs, sha256(b).slice(7)))).toBe(true);
  }, 120_000);

  it('refuses the same name again (already_exists) unless --name differs', async () => {
    const e = await rejection(client.image.pull.begin({ reference: `${host}/test/minbase:bookworm` }));
    expect(e.code).toBe('already_exists');
    expect(e.message).toMatch(/image minbase-bookworm already exists \(choose another name with --name\)/);
  });

  it('a layer the registry does not have fails the download: no row, no directory', async () => {
    const img = reg.addImage('test/broken', 'v1', [BASE, OTHER]);
    reg.blobs.delete(img.layers[1]!);
    const begun = await client.image.pull.begin({ reference: `${host}/test/broken:v1` });
    const r = await settled(begun.operation_id);
    expect(r.operation.state).toBe('failed');
    expect(r.operation.steps.find((s) => s.state === 'failed')?.name).toBe('download');
    expect(r.operation.error?.message).toMatch(/404/);
    expect((await client.image.list()).images.map((i) => i.name)).not.toContain('broken-v1');
    expect(existsSync(join(stateDir, 'images', 'broken-v1'))).toBe(false);
    expect(leftovers()).toEqual([]);
    reg.addBlob(OTHER.blob);
  }, 60_000);

  it('a failing bootable step leaves nothing; its layers stay cached and a prune removes them', async () => {
    bootMode = 'fail';
    reg.addImage('test/other', 'v1', [BASE, OTHER]);
    const begun = await client.image.pull.begin({ reference: `${host}/test/other:v1`, name: 'other' });
    const r = await settled(begun.operation_id);
    expect(r.operation.state).toBe('failed');
    expect(r.operation.steps.find((s) => s.state === 'failed')?.name).toBe('bootable');
    expect(r.operation.error?.message).toMatch(/Unable to locate package openssh-server/);
    expect(existsSync(join(stateDir, 'images', 'other'))).toBe(false);
    expect(leftovers()).toEqual([]);
    const otherBlob = sha256(OTHER.blob);
    expect(existsSync(join(blobs, otherBlob.slice(7)))).toBe(true);

    const dry = await client.image.cache.prune({ dry_run: true });
    expect(dry.dry_run).toBe(true);
    expect(dry.removed.map((b) => b.digest)).toContain(otherBlob);
    // BASE is used by the recorded image: kept.
    expect(dry.removed.map((b) => b.digest)).not.toContain(sha256(BASE.blob));
    expect(existsSync(join(blobs, otherBlob.slice(7)))).toBe(true);
    const real = await client.image.cache.prune({});
    expect(real.removed.map((b) => b.digest)).toEqual(dry.removed.map((b) => b.digest));
    expect(real.bytes).toBeGreaterThan(0);
    expect(existsSync(join(blobs, otherBlob.slice(7)))).toBe(false);
    expect(existsSync(join(blobs, sha256(BASE.blob).slice(7)))).toBe(true);
    expect(real.kept).toBe(4);
    // The recorded image's blobs stay; a second prune has nothing to do.
    expect((await client.image.cache.prune({})).removed).toEqual([]);
  }, 60_000);

  it('cancel while the bootable step runs: canceled, nothing recorded', async () => {
    bootMode = 'hang';
    const begun = await client.image.pull.begin({ reference: `${host}/test/other:v1`, name: 'other2' });
    const end = Date.now() + 30_000;
    let detail: string | undefined;
    for (;;) {
      const s = await client.image.pull.status({ operation_id: begun.operation_id });
      detail = s.operation.steps.find((x) => x.name === 'bootable' && x.state === 'running')?.detail;
      if (detail) break;
      if (Date.now() > end) throw new Error('bootable never started');
      await sleep(20);
    }
    // Progress of the running step reaches status.
    expect(detail).toBe('debian 12: installing openssh-server');
    const e = await rejection(client.image.cache.prune({}));
    expect(e.code).toBe('conflict');
    const r = await client.image.pull.cancel({ operation_id: begun.operation_id });
    expect(r.operation.state).toBe('canceled');
    expect(existsSync(join(stateDir, 'images', 'other2'))).toBe(false);
    expect(leftovers()).toEqual([]);
    expect((await client.image.list()).images.map((i) => i.name)).not.toContain('other2');
  }, 60_000);

  it('imports an OCI image layout (same pipeline; download skipped)', async () => {
    bootMode = 'ok';
    const layout = join(tmp.dir, 'layout');
    mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
    const put = (b: Buffer): { digest: string; size: number } => {
      const d = sha256(b);
      writeFileSync(join(layout, 'blobs', 'sha256', d.slice(7)), b);
      return { digest: d, size: b.length };
    };
    const cfg = put(
      Buffer.from(
        JSON.stringify({
          os: 'linux',
          architecture: 'amd64',
          config: { Env: ['PATH=/bin'] },
          rootfs: { type: 'layers', diff_ids: [BASE.diffId] },
        }),
      ),
    );
    const l = put(BASE.blob);
    const m = put(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
          layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l }],
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
            ...m,
            annotations: { 'org.opencontainers.image.ref.name': 'v2' },
          },
        ],
      }),
    );
    const begun = await client.image.pull.begin({ oci_layout: layout, tag: 'v2' });
    expect(begun.name).toBe('layout-v2');
    const r = await settled(begun.operation_id);
    expect(r.operation.state).toBe('succeeded');
    expect(r.operation.steps.find((s) => s.name === 'download')?.state).toBe('skipped');
    expect(r.image).toMatchObject({ source: 'oci', digest: m.digest, oci_config: { env: ['PATH=/bin'] } });
    const missing = await rejection(client.image.pull.begin({ oci_layout: join(tmp.dir, 'nope') }));
    expect(missing.code).toBe('not_found');
  }, 120_000);
  it.skipIf(!built)(
    'bin/banger image pull / import --docker-archive / cache prune, human and --json',
    async () => {
      bootMode = 'ok';
      const sock = ['--socket', join(tmp.dir, 'd.sock')];
      // Same layers under another tag: nothing new to download.
      reg.addImage('test/minbase', 'again', [BASE, APP], CFG);
      const pulled = await banger(['image', 'pull', `${host}/test/minbase:again`, ...sock]);
      expect(pulled.code).toBe(0);
      expect(pulled.stdout).toMatch(
        /✓ image minbase-again ready in .*: .* root filesystem from 127\.0\.0\.1:\d+\/test\/minbase:again/,
      );
      expect(pulled.stderr).toMatch(/download/);
      const again = await banger(['image', 'pull', `${host}/test/minbase:again`, ...sock]);
      expect(again.code).toBe(4);
      expect(again.stderr).toMatch(/image minbase-again already exists \(choose another name with --name\)/);

      // What docker save writes: manifest.json, the config, each layer as an uncompressed tar.
      const layerTar = tarEntries([{ path: 'etc/hostname', body: 'from-archive\n' }]);
      const configBody = JSON.stringify({
        os: 'linux',
        architecture: 'amd64',
        config: { Env: ['PATH=/bin'], WorkingDir: '/work' },
        rootfs: { type: 'layers', diff_ids: [sha256(layerTar)] },
      });
      const cfgName = `${sha256(configBody).slice(7)}.json`;
      const archive = join(tmp.dir, 'saved.tar');
      writeFileSync(
        archive,
        tarEntries([
          {
            path: 'manifest.json',
            body: JSON.stringify([
              { Config: cfgName, RepoTags: ['tools/saved:1.0'], Layers: ['l1/layer.tar'] },
            ]),
          },
          { path: cfgName, body: configBody },
          { path: 'l1/', type: 'dir' },
          { path: 'l1/layer.tar', body: layerTar },
        ]),
      );
      const imported = await banger([
        'image',
        'import',
        '--docker-archive',
        `${archive}:tools/saved:1.0`,
        '--json',
        ...sock,
      ]);
      expect(imported.code).toBe(0);
      const out = JSON.parse(imported.stdout) as ImagePullStatusResult;
      expect(out.operation.state).toBe('succeeded');
      expect(out.image).toMatchObject({
        name: 'saved-1.0',
        source: 'oci',
        digest: sha256(configBody),
        oci_config: { env: ['PATH=/bin'], working_dir: '/work' },
      });

      const usage = await banger(['image', 'import', '--oci-layout', tmp.dir, '--kernel', archive, ...sock]);
      expect(usage.code).toBe(2);
      // The canceled pull's manifest and config are still cached (no recorded image uses them).
      const dry = await banger(['image', 'cache', 'prune', '--dry-run', '--json', ...sock]);
      expect(dry.code).toBe(0);
      const listed = JSON.parse(dry.stdout) as { dry_run: boolean; removed: { digest: string }[] };
      expect(listed.dry_run).toBe(true);
      expect(listed.removed.length).toBeGreaterThan(0);
      const human = await banger(['image', 'cache', 'prune', ...sock]);
      expect(human.code).toBe(0);
      for (const b of listed.removed) expect(human.stdout).toContain(`removed ${b.digest}`);
      expect(human.stdout).toMatch(/^freed .* \(\d+ files?\); \d+ blobs in use kept$/m);
      const none = await banger(['image', 'cache', 'prune', ...sock]);
      expect(none.stdout).toMatch(/^nothing to remove; \d+ blobs in use$/m);
    },
    120_000,
  );
});
