// kernel.catalog and kernel.pull through a real daemon's RPC against a fake Debian archive on
// 127.0.0.1 (tiny .debs built here with dpkg-deb): the catalog's filtering and latest marks, a
// pull's streamed steps, its files and row, the flavour alias, already_exists/force, not_found
// with close matches, a checksum mismatch and an unreachable archive leaving nothing behind.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BangerClient } from '../../generated/client.gen.ts';
import type { KernelPullFrame } from '../../generated/types.gen.ts';
import { DEFAULT_CONFIG } from '../../src/daemon/config.ts';
import { startDaemon, type RunningDaemon } from '../../src/daemon/start.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';
import { SocketTransport } from '../../src/rpc/transport.ts';
import { BUSYBOX_DEB, FakeDebianArchive, kernelDeb, type FakeDeb } from '../helpers/fake-debian-archive.ts';
import { MemoryLog } from '../helpers/logs.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const NEW = kernelDeb('6.1.0-99-cloud-amd64', '6.1.999-1');
const OLD = kernelDeb('6.1.0-9-cloud-amd64', '6.1.99-1');
const FULL = kernelDeb('6.1.0-99-amd64', '6.1.999-1');
const DBG: FakeDeb = { package: 'linux-image-6.1.0-99-cloud-amd64-dbg', version: '6.1.999-1' };
const UNSIGNED = {
  ...kernelDeb('6.1.0-99-amd64', '6.1.999-1'),
  package: 'linux-image-6.1.0-99-amd64-unsigned',
};
const META: FakeDeb = {
  package: 'linux-image-cloud-amd64',
  version: '6.1.999-1',
  depends: 'linux-image-6.1.0-99-cloud-amd64 (= 6.1.999-1)',
};
const SERIES = kernelDeb('6.12.9+deb12-cloud-amd64', '6.12.9-1~deb12u1');
const SERIES_META: FakeDeb = {
  package: 'linux-image-6.12-cloud-amd64',
  version: '6.12.9-1~deb12u1',
  depends: 'linux-image-6.12.9+deb12-cloud-amd64 (= 6.12.9-1~deb12u1)',
};
const ALL = [NEW, OLD, FULL, DBG, UNSIGNED, META, SERIES, SERIES_META, BUSYBOX_DEB];

async function rejection(p: Promise<unknown>): Promise<ErrorResponse> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ErrorResponse) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

describe('kernel.catalog / kernel.pull against a loopback archive', () => {
  const tmp = shortTempDir('kp');
  const archive = new FakeDebianArchive(join(tmp.dir, 'archive'));
  const stateDir = join(tmp.dir, 'state');
  const cacheDir = join(tmp.dir, 'cache');
  let daemon: RunningDaemon;
  let client: BangerClient;

  beforeAll(async () => {
    archive.publish(ALL);
    const sources = await archive.start();
    daemon = await startDaemon({
      socket: join(tmp.dir, 'd.sock'),
      stateDir,
      config: { ...DEFAULT_CONFIG, image_cache_dir: cacheDir, dns_port: 0 },
      helperSocket: undefined,
      logStream: new MemoryLog(),
      kernelAptSources: sources,
    });
    client = new BangerClient(new SocketTransport(join(tmp.dir, 'd.sock')));
  }, 60_000);
  afterAll(async () => {
    await daemon?.stop('test');
    await archive.stop();
    tmp.cleanup();
  });

  it('lists the real kernels: no -dbg, no -unsigned twin, no meta; latest from the meta package', async () => {
    const r = await client.kernel.catalog();
    expect(r.archive).toEqual([archive.sourcesLine().trim()]);
    expect(r.kernels.map((k) => [k.name, k.flavour, k.version, k.latest, k.aliases, k.pulled])).toEqual([
      ['6.1.0-99-amd64', 'amd64', '6.1.999-1', true, ['amd64'], false],
      ['6.12.9+deb12-cloud-amd64', 'cloud-amd64', '6.12.9-1~deb12u1', false, ['6.12-cloud-amd64'], false],
      ['6.1.0-99-cloud-amd64', 'cloud-amd64', '6.1.999-1', true, ['cloud-amd64'], false],
      ['6.1.0-9-cloud-amd64', 'cloud-amd64', '6.1.99-1', false, [], false],
    ]);
    const cloud = r.kernels[2]!;
    expect(cloud.package).toBe('linux-image-6.1.0-99-cloud-amd64');
    expect(cloud.size_bytes).toBeGreaterThan(100);
  });

  it('pulls by flavour: streamed steps, files in STATE/kernels/<release>/, a row, catalog says pulled', async () => {
    const frames: KernelPullFrame[] = [];
    const r = await client.kernel.pull(
      { name: 'cloud-amd64' },
      { onFrame: (f) => frames.push(f as KernelPullFrame) },
    );
    expect(r.package).toBe('linux-image-6.1.0-99-cloud-amd64');
    expect(r.version).toBe('6.1.999-1');
    expect(r.cached).toBe(false);
    const done = frames.filter((f) => f.phase === 'done').map((f) => f.step);
    expect(done).toEqual(['resolve', 'download', 'verify', 'extract', 'initramfs', 'record']);
    expect(frames.find((f) => f.step === 'resolve' && f.phase === 'done')?.detail).toContain(
      'cloud-amd64 → linux-image-6.1.0-99-cloud-amd64 6.1.999-1',
    );

    const dir = join(stateDir, 'kernels', '6.1.0-99-cloud-amd64');
    expect(r.kernel).toMatchObject({
      name: '6.1.0-99-cloud-amd64',
      version: '6.1.0-99-cloud-amd64',
      source: 'built',
      kernel_path: join(dir, 'vmlinuz'),
      initrd_path: join(dir, 'initrd.img'),
    });
    expect(readFileSync(join(dir, 'vmlinuz')).subarray(0, 14).toString()).toBe('MZ fake kernel');
    // The initramfs is banger's: a gzip'd newc cpio with /init and busybox from the archive.
    const cpio = gunzipSync(readFileSync(join(dir, 'initrd.img'))).toString('latin1');
    expect(cpio).toContain('070701');
    expect(cpio).toContain('echo fake busybox');
    expect(cpio).toContain('banger-root');
    expect(existsSync(join(dir, 'modules', 'modules.dep'))).toBe(true);
    expect(readdirSync(join(stateDir, 'kernels')).filter((n) => n.startsWith('.'))).toEqual([]);

    const { kernel } = await client.kernel.show({ name: '6.1.0-99-cloud-amd64' });
    expect(kernel.initrd_path).toBe(join(dir, 'initrd.img'));
    const cat = await client.kernel.catalog();
    expect(cat.kernels.find((k) => k.name === '6.1.0-99-cloud-amd64')).toMatchObject({
      pulled: true,
      kernels: ['6.1.0-99-cloud-amd64'],
    });
    // The operation is recorded with its steps (op show / daemon.operations.list).
    const ops = await client.daemon.operations.list({});
    const op = ops.operations.find((o) => o.kind === 'kernel.pull');
    expect(op?.state).toBe('succeeded');
    expect(op?.steps.map((s) => s.name)).toEqual(done);
  });

  it('refuses an existing name (already_exists); --force replaces it from the .deb cache', async () => {
    const e = await rejection(client.kernel.pull({ name: '6.1.0-99-cloud-amd64' }));
    expect(e.code).toBe('already_exists');
    const r = await client.kernel.pull({ name: 'linux-image-6.1.0-99-cloud-amd64', force: true });
    expect(r.cached).toBe(true);
    expect(r.kernel.name).toBe('6.1.0-99-cloud-amd64');
    const r2 = await client.kernel.pull({ name: '6.1.0-9-cloud-amd64', as: 'old-cloud' });
    expect(r2.kernel).toMatchObject({ name: 'old-cloud', version: '6.1.0-9-cloud-amd64' });
    // A series alias; the release's `+` is not allowed in a name, so the default name has `-`.
    const r3 = await client.kernel.pull({ name: '6.12-cloud-amd64' });
    expect(r3.kernel).toMatchObject({
      name: '6.12.9-deb12-cloud-amd64',
      version: '6.12.9+deb12-cloud-amd64',
    });
    expect((await client.kernel.list()).kernels.map((k) => k.name).sort()).toEqual([
      '6.1.0-99-cloud-amd64',
      '6.12.9-deb12-cloud-amd64',
      'old-cloud',
    ]);
    const cat = await client.kernel.catalog();
    expect(cat.kernels.find((k) => k.release === '6.12.9+deb12-cloud-amd64')?.kernels).toEqual([
      '6.12.9-deb12-cloud-amd64',
    ]);
  });

  it('an unknown name is not_found with close matches', async () => {
    const e = await rejection(client.kernel.pull({ name: '6.1.0-98-cloud-amd64' }));
    expect(e.code).toBe('not_found');
    expect(e.message).toContain('close matches: 6.1.0-99-cloud-amd64');
    expect(e.message).toContain(`http://127.0.0.1:${archive.port}/`);
  });

  it('a package whose checksum does not match the index is refused and leaves nothing', async () => {
    archive.publish(ALL, { corrupt: FULL.package });
    const e = await rejection(client.kernel.pull({ name: '6.1.0-99-amd64' }));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toMatch(/SHA-256|Hash Sum mismatch|hash/i);
    expect(existsSync(join(stateDir, 'kernels', '6.1.0-99-amd64'))).toBe(false);
    expect(readdirSync(join(stateDir, 'kernels')).filter((n) => n.startsWith('.'))).toEqual([]);
    archive.publish(ALL);
  });

  it('hanging up mid-download cancels the pull: operation canceled, no files, no row', async () => {
    archive.debDelayMs = 30_000;
    const abort = new AbortController();
    const seen: string[] = [];
    try {
      const e = await rejection(
        client.kernel.pull(
          { name: '6.1.0-99-amd64' },
          {
            signal: abort.signal,
            onFrame: (f) => {
              const frame = f as KernelPullFrame;
              seen.push(`${frame.step}:${frame.phase}`);
              if (frame.step === 'download' && frame.phase === 'start') abort.abort();
            },
          },
        ),
      );
      expect(e.code).toBe('canceled');
      expect(seen).toContain('download:start');
      let op;
      for (let i = 0; i < 100; i++) {
        const ops = await client.daemon.operations.list({});
        op = ops.operations.find((o) => o.kind === 'kernel.pull' && o.steps.at(-1)?.name === 'download');
        if (op?.state !== 'running') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(op?.state).toBe('canceled');
      expect(existsSync(join(stateDir, 'kernels', '6.1.0-99-amd64'))).toBe(false);
      expect(readdirSync(join(stateDir, 'kernels')).filter((n) => n.startsWith('.'))).toEqual([]);
      expect((await client.kernel.list()).kernels.map((k) => k.name)).not.toContain('6.1.0-99-amd64');
    } finally {
      archive.debDelayMs = 0;
    }
  });

  it('an unreachable archive is a clear error naming its URL', async () => {
    const port = archive.port;
    await archive.stop();
    const e = await rejection(client.kernel.catalog());
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain(`cannot read the Debian archive http://127.0.0.1:${port}/`);
    const p = await rejection(client.kernel.pull({ name: 'cloud-amd64', as: 'x' }));
    expect(p.message).toContain(`http://127.0.0.1:${port}/`);
    expect(existsSync(join(stateDir, 'kernels', 'x'))).toBe(false);
  });
});
