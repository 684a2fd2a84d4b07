// The OCI image service (image.pull.*, image.cache.prune) with fakes for the registry pull, the
// imports, the ext4 conversion and the bootable step: steps and progress, the recorded row,
// failure and cancel cleanup, name conflicts, and what a cache prune keeps.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import type { BootableFn, BootableOptions } from '../../src/daemon/services/image-bootable.ts';
import {
  OCI_HEADROOM_BYTES,
  OciImageService,
  layerProgressLine,
  ociRunConfig,
  type OciImageDeps,
} from '../../src/daemon/services/image-oci.ts';
import { defaultImageName, sanitizeImageName } from '../../src/image/names.ts';
import type { ConvertOptions } from '../../src/image/oci/convert.ts';
import type { OciImage } from '../../src/image/oci/image.ts';
import type { PullOptions } from '../../src/image/oci/pull.ts';
import { createLogger } from '../../src/log/logger.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { type RpcContext, mintOpId } from '../../src/rpc/context.ts';
import { type ErrorResponse, toErrorResponse } from '../../src/rpc/errors.ts';
import { openStore, type KernelRow, type Store } from '../../src/store/index.ts';
import { MemoryLog } from '../helpers/logs.ts';

let dir: string;
let stateDir: string;
let blobDir: string;
let store: Store;
let logs: MemoryLog;
let ops: OperationRegistry;
/** Every step detail the operation sink saw, per step name (progress is persisted through it). */
let details: Map<string, string[]>;
/** The download step's detail right after each layer event of the fake pull. */
let downloadDetails: string[];
let kernel: KernelRow;

function ctx(opId = mintOpId()): RpcContext {
  const log = createLogger({ name: 'test', stream: logs });
  return { opId, method: 'test', startedAt: Date.now(), signal: new AbortController().signal, log };
}

const hex = (s: string): string => createHash('sha256').update(s).digest('hex');
const digestOf = (s: string): string => `sha256:${hex(s)}`;

/** Put a blob in the cache as the real cache would (DIR/sha256/<hex>). */
function putBlob(content: string): string {
  mkdirSync(join(blobDir, 'sha256'), { recursive: true });
  writeFileSync(join(blobDir, 'sha256', hex(content)), content);
  return digestOf(content);
}

function ociImage(layers: string[], reference = '127.0.0.1:5000/test/minbase:bookworm'): OciImage {
  const manifest = putBlob(`manifest of ${layers.join(',')}`);
  const config = putBlob(`config of ${layers.join(',')}`);
  const ls = layers.map((l) => ({
    digest: digestOf(l),
    size: l.length,
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    path: join(blobDir, 'sha256', hex(l)),
  }));
  return {
    reference,
    digest: manifest,
    platform: { os: 'linux', architecture: 'amd64' },
    config: {
      Env: ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8'],
      WorkingDir: '/srv',
      User: '1000:1000',
      Cmd: ['bash'],
      diffIds: [],
    },
    configDigest: config,
    layers: ls,
    blobs: [manifest, config, ...ls.map((l) => l.digest)],
  };
}

interface Fakes {
  deps: Partial<OciImageDeps>;
  bootCalls: BootableOptions[];
  convertCalls: ConvertOptions[];
}

/** A registry pull stand-in: layers land in the cache one progress event at a time. */
function fakes(
  o: {
    layers?: string[];
    failBootable?: boolean;
    layerDelayMs?: number;
    failConvert?: boolean;
  } = {},
): Fakes {
  const layers = o.layers ?? ['layer one', 'layer two, a bigger one'];
  const bootCalls: BootableOptions[] = [];
  const convertCalls: ConvertOptions[] = [];
  const bootable: BootableFn = async (b) => {
    bootCalls.push(b);
    if (o.failBootable) throw new Error('apt-get install openssh-server failed: E: Unable to locate package');
    return { family: 'debian', installed: ['systemd-sysv', 'openssh-server'], log: 'prepare log\n' };
  };
  const pull = async (p: PullOptions): Promise<OciImage> => {
    const img = ociImage(layers);
    p.onProgress?.({
      kind: 'resolved',
      reference: '127.0.0.1:5000/test/minbase:bookworm',
      digest: img.digest,
      platform: 'linux/amd64',
      layers: layers.length,
      message: `127.0.0.1:5000/test/minbase:bookworm: single-platform manifest, ${layers.length} layers`,
    });
    const total = layers.reduce((n, l) => n + l.length, 0);
    let overall = 0;
    for (const [i, l] of layers.entries()) {
      await sleep(o.layerDelayMs ?? 1, undefined, { signal: p.signal });
      putBlob(l);
      overall += l.length;
      p.onProgress?.({
        kind: 'layer',
        index: i,
        digest: digestOf(l),
        done: l.length,
        total: l.length,
        overallDone: overall,
        overallTotal: total,
      });
      // What status shows now (the sink persists progress at most once a second).
      const now = ops.list({ state: 'running' })[0]?.steps.find((x) => x.name === 'download')?.detail;
      if (now !== undefined) downloadDetails.push(now);
    }
    return ociImage(layers);
  };
  const convert = async (_l: unknown, c: ConvertOptions) => {
    convertCalls.push(c);
    c.onStage?.('flatten', 'layer 1/2: 10 entries');
    if (o.failConvert) throw new Error('a ".." component (path traversal) is refused');
    c.onStage?.('mkfs', `writing ${c.imagePath}`);
    const fh = await open(c.imagePath, 'w');
    await fh.truncate(64 * 1024 * 1024);
    await fh.close();
    return { size: 64 * 1024 * 1024, allocated: 4096, inodes: 20, entries: 20, scratch: 'disk' as const };
  };
  return { deps: { bootable, pull, convert }, bootCalls, convertCalls };
}

function service(f: Fakes, extra: Partial<OciImageDeps> = {}): OciImageService {
  return new OciImageService({
    store,
    ops,
    log: ops.log,
    stateDir,
    blobDir,
    defaultKernel: async () => kernel,
    aptSources: () => 'deb [trusted=yes] http://127.0.0.1:8787/ ./',
    ...f.deps,
    ...extra,
  });
}

async function settled(svc: OciImageService, id: string): Promise<Operation> {
  const end = Date.now() + 5000;
  for (;;) {
    const { operation } = await svc.status({ operation_id: id });
    if (operation.state !== 'running') return operation;
    if (Date.now() > end) throw new Error(`operation ${id} still running`);
    await sleep(5);
  }
}

async function rejection(p: Promise<unknown>): Promise<ErrorResponse> {
  try {
    await p;
  } catch (err) {
    return toErrorResponse(err, 'op-0000000000ab');
  }
  throw new Error('expected a rejection');
}

/** Entries of STATE/images other than final image directories (staging leftovers). */
function leftovers(): string[] {
  const d = join(stateDir, 'images');
  return existsSync(d) ? readdirSync(d).filter((n) => n.startsWith('.')) : [];
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-oci-svc-'));
  stateDir = join(dir, 'state');
  blobDir = join(dir, 'cache', 'oci', 'blobs');
  mkdirSync(stateDir);
  store = openStore(join(stateDir, 'banger.db'));
  logs = new MemoryLog();
  details = new Map();
  downloadDetails = [];
  ops = new OperationRegistry(createLogger({ name: 't', stream: logs }), {
    sink: {
      save(op) {
        for (const s of op.steps) {
          if (s.detail === undefined) continue;
          const seen = details.get(s.name) ?? [];
          if (seen.at(-1) !== s.detail) seen.push(s.detail);
          details.set(s.name, seen);
        }
      },
    },
  });
  kernel = store.kernels.insert({
    name: 'debian-bookworm',
    version: '6.1.0-28-cloud-amd64',
    kernelPath: '/k/vmlinuz',
    initrdPath: '/k/initrd.cpio.gz',
    source: 'built',
  });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('names and config', () => {
  it('names an image after the repository and tag, sanitized', () => {
    expect(defaultImageName({ kind: 'registry', reference: '127.0.0.1:5000/test/minbase:bookworm' })).toBe(
      'minbase-bookworm',
    );
    expect(defaultImageName({ kind: 'registry', reference: 'debian' })).toBe('debian-latest');
    // Not the built default image's name (its kernel is the one OCI images boot).
    expect(defaultImageName({ kind: 'registry', reference: 'debian:bookworm' })).toBe('debian-bookworm-oci');
    expect(defaultImageName({ kind: 'registry', reference: `ghcr.io/o/app@sha256:${'ab'.repeat(32)}` })).toBe(
      'app-abababababab',
    );
    expect(defaultImageName({ kind: 'oci_layout', path: '/srv/layouts/app', tag: 'v1' })).toBe('app-v1');
    expect(defaultImageName({ kind: 'docker_archive', path: '/tmp/x.tar', tag: 'repo/tool:1.2' })).toBe(
      'tool-1.2',
    );
    expect(defaultImageName({ kind: 'docker_archive', path: '/tmp/saved-app.tar' })).toBe('saved-app');
    expect(sanitizeImageName('--weird name!!')).toBe('weird-name');
    expect(sanitizeImageName('x'.repeat(80))).toHaveLength(64);
  });

  it('keeps Env, WorkingDir, User, Entrypoint and Cmd of the config', () => {
    expect(
      ociRunConfig({ Env: ['A=1'], WorkingDir: '/w', User: 'app', Entrypoint: ['/e'], Cmd: [], diffIds: [] }),
    ).toEqual({ env: ['A=1'], working_dir: '/w', user: 'app', entrypoint: ['/e'] });
  });

  it('says the bytes of the layer and overall', () => {
    const line = layerProgressLine(
      {
        kind: 'layer',
        index: 1,
        digest: `sha256:${'c'.repeat(64)}`,
        done: 3 * 1024 * 1024,
        total: 10 * 1024 * 1024,
        overallDone: 13 * 1024 * 1024,
        overallTotal: 20 * 1024 * 1024,
      },
      2,
    );
    expect(line).toBe('layer 2/2 sha256:cccccccccccc: 3.0 MiB of 10.0 MiB; overall 13.0 MiB of 20.0 MiB');
  });
});

describe('image.pull', () => {
  it('pulls, converts, makes bootable and records the image with its digest, reference and config', async () => {
    const f = fakes();
    const svc = service(f);
    const begun = await svc.begin({ reference: '127.0.0.1:5000/test/minbase:bookworm' }, ctx());
    expect(begun.name).toBe('minbase-bookworm');
    const op = await settled(svc, begun.operation_id);
    expect(op.state).toBe('succeeded');
    expect(op.kind).toBe('image.pull');
    expect(op.steps.map((s) => [s.name, s.state])).toEqual([
      ['resolve', 'done'],
      ['download', 'done'],
      ['flatten', 'done'],
      ['ext4', 'done'],
      ['bootable', 'done'],
      ['record', 'done'],
    ]);
    // Download progress said each layer's bytes and the overall bytes as they came.
    expect(downloadDetails).toEqual([
      expect.stringMatching(
        /^layer 1\/2 sha256:[0-9a-f]{12}: 0\.0 MiB of 0\.0 MiB; overall 0\.0 MiB of 0\.0 MiB$/,
      ),
      expect.stringMatching(/^layer 2\/2 sha256:[0-9a-f]{12}: /),
    ]);
    expect(details.get('download')?.at(-1)).toBe('2 layers, 0.0 MiB');
    expect(op.steps.find((s) => s.name === 'bootable')?.detail).toBe(
      'debian: installed systemd-sysv, openssh-server; kernel debian-bookworm',
    );

    const row = store.images.getByName('minbase-bookworm')!;
    const img = ociImage(['layer one', 'layer two, a bigger one']);
    expect(row).toMatchObject({
      source: 'oci',
      kernelId: kernel.id,
      digest: img.digest,
      reference: '127.0.0.1:5000/test/minbase:bookworm',
      ociConfig: {
        env: ['PATH=/usr/bin:/bin', 'LANG=C.UTF-8'],
        working_dir: '/srv',
        user: '1000:1000',
        cmd: ['bash'],
      },
      ociBlobs: img.blobs,
      isDefault: false,
      rootfsPath: join(stateDir, 'images', 'minbase-bookworm', 'rootfs.ext4'),
      sizeBytes: 64 * 1024 * 1024,
    });
    const status = await svc.status({ operation_id: begun.operation_id });
    expect(status.image).toMatchObject({ name: 'minbase-bookworm', source: 'oci', digest: img.digest });
    expect(status.image?.oci_config?.user).toBe('1000:1000');

    expect(statSync(row.rootfsPath).mode & 0o777).toBe(0o444);
    const files = readdirSync(join(stateDir, 'images', 'minbase-bookworm')).sort();
    expect(files).toEqual(['bootable.log', 'oci.json', 'rootfs.ext4']);
    const rec = JSON.parse(
      await readFile(join(stateDir, 'images', 'minbase-bookworm', 'oci.json'), 'utf8'),
    ) as {
      blobs: string[];
    };
    expect(rec.blobs).toEqual(img.blobs);
    expect(leftovers()).toEqual([]);

    // The ext4 step got the headroom, the banger root label and scratch space beside the image.
    expect(f.convertCalls[0]).toMatchObject({ headroomBytes: OCI_HEADROOM_BYTES, label: 'banger-root' });
    expect(f.convertCalls[0]?.sizeBytes).toBeUndefined();
    // The bootable step got the default kernel, the rootfs being built and the apt sources.
    expect(f.bootCalls[0]).toMatchObject({
      kernelPath: '/k/vmlinuz',
      initrdPath: '/k/initrd.cpio.gz',
      aptSources: 'deb [trusted=yes] http://127.0.0.1:8787/ ./',
    });
    expect(f.bootCalls[0]?.rootfsPath).toMatch(
      /\/images\/\.import-[0-9a-f]+-minbase-bookworm\/rootfs\.ext4$/,
    );
  });

  it('a second image of the same digest copies the prepared root filesystem (bootable cached per digest)', async () => {
    const f = fakes();
    const svc = service(f);
    const first = await svc.begin({ reference: '127.0.0.1:5000/test/minbase:bookworm' }, ctx());
    expect((await settled(svc, first.operation_id)).state).toBe('succeeded');
    const second = await svc.begin(
      { reference: '127.0.0.1:5000/test/minbase:bookworm', name: 'again' },
      ctx(),
    );
    const op = await settled(svc, second.operation_id);
    expect(op.state).toBe('succeeded');
    expect(op.steps.map((s) => `${s.name}:${s.state}`)).toEqual([
      'resolve:done',
      'download:done',
      'flatten:skipped',
      'ext4:skipped',
      'bootable:done',
      'record:done',
    ]);
    expect(op.steps.find((s) => s.name === 'bootable')?.detail).toBe(
      'copied from minbase-bookworm (same digest, prepared before); kernel debian-bookworm',
    );
    expect(f.bootCalls).toHaveLength(1);
    expect(f.convertCalls).toHaveLength(1);
    const a = store.images.getByName('minbase-bookworm')!;
    const b = store.images.getByName('again')!;
    expect(b.rootfsPath).not.toBe(a.rootfsPath);
    expect(statSync(b.rootfsPath).size).toBe(statSync(a.rootfsPath).size);
    expect(b.digest).toBe(a.digest);
    // Another size is another filesystem: converted and prepared again.
    const sized = await svc.begin({ reference: 'debian', name: 'sized', size: '8G' }, ctx());
    expect((await settled(svc, sized.operation_id)).steps.find((s) => s.name === 'ext4')?.state).toBe('done');
    expect(f.bootCalls).toHaveLength(2);
  });

  it('takes --size exactly and --name and --default', async () => {
    const f = fakes();
    const svc = service(f);
    const begun = await svc.begin(
      { reference: 'debian:bookworm', name: 'deb', size: '8G', make_default: true },
      ctx(),
    );
    expect((await settled(svc, begun.operation_id)).state).toBe('succeeded');
    expect(f.convertCalls[0]?.sizeBytes).toBe(8 * 1024 ** 3);
    expect(store.images.getDefault()?.name).toBe('deb');
  });

  it('a failing bootable step leaves no row and no image directory; the verified layers stay cached', async () => {
    const svc = service(fakes({ failBootable: true }));
    const begun = await svc.begin({ reference: '127.0.0.1:5000/test/minbase:bookworm' }, ctx());
    const op = await settled(svc, begun.operation_id);
    expect(op.state).toBe('failed');
    expect(op.error?.message).toMatch(/Unable to locate package/);
    expect(op.steps.find((s) => s.state === 'failed')?.name).toBe('bootable');
    expect(store.images.getByName('minbase-bookworm')).toBeUndefined();
    expect(existsSync(join(stateDir, 'images', 'minbase-bookworm'))).toBe(false);
    expect(leftovers()).toEqual([]);
    expect(existsSync(join(blobDir, 'sha256', hex('layer two, a bigger one')))).toBe(true);
    // A failed pull frees the name: the next one may use it.
    const again = await service(fakes()).begin({ reference: '127.0.0.1:5000/test/minbase:bookworm' }, ctx());
    expect(again.name).toBe('minbase-bookworm');
  });

  it('a failing conversion fails at flatten and removes the partial image', async () => {
    const svc = service(fakes({ failConvert: true }));
    const begun = await svc.begin({ reference: 'debian' }, ctx());
    const op = await settled(svc, begun.operation_id);
    expect(op.state).toBe('failed');
    expect(op.steps.find((s) => s.state === 'failed')?.name).toBe('flatten');
    expect(leftovers()).toEqual([]);
    expect(store.images.list()).toEqual([]);
  });

  it('cancel stops the download and removes the partial image', async () => {
    const svc = service(fakes({ layerDelayMs: 2000 }));
    const begun = await svc.begin({ reference: 'debian' }, ctx());
    await sleep(30);
    const r = await svc.cancel({ operation_id: begun.operation_id });
    expect(r.operation.state).toBe('canceled');
    expect(r.operation.error).toEqual({ code: 'canceled', message: 'canceled by user' });
    expect(r.operation.steps.find((s) => s.name === 'download')?.state).toBe('failed');
    expect(leftovers()).toEqual([]);
    expect(store.images.list()).toEqual([]);
    expect((await rejection(svc.cancel({ operation_id: begun.operation_id }))).code).toBe('conflict');
  });

  it('refuses a taken name, a second pull of the same name, and bad sources', async () => {
    store.images.insert({
      name: 'minbase-bookworm',
      kernelId: kernel.id,
      rootfsPath: '/x',
      sizeBytes: 1,
      source: 'built',
    });
    const svc = service(fakes({ layerDelayMs: 200 }));
    const taken = await rejection(svc.begin({ reference: '127.0.0.1:5000/test/minbase:bookworm' }, ctx()));
    expect(taken.code).toBe('already_exists');
    expect(taken.message).toMatch(
      /image minbase-bookworm already exists \(choose another name with --name\)/,
    );
    const ok = await svc.begin({ reference: '127.0.0.1:5000/test/minbase:bookworm', name: 'other' }, ctx());
    const twice = await rejection(svc.begin({ reference: 'debian', name: 'other' }, ctx()));
    expect(twice.code).toBe('conflict');
    expect(twice.message).toContain(ok.operation_id);
    expect(svc.pulling('other')).toContain('being pulled');
    await settled(svc, ok.operation_id);
    expect(svc.pulling('other')).toBeUndefined();

    expect((await rejection(svc.begin({}, ctx()))).code).toBe('bad_request');
    expect((await rejection(svc.begin({ reference: 'a', oci_layout: '/x' }, ctx()))).code).toBe(
      'bad_request',
    );
    expect((await rejection(svc.begin({ reference: 'UPPER/Case' }, ctx()))).code).toBe('bad_request');
    expect((await rejection(svc.begin({ oci_layout: join(dir, 'nope') }, ctx()))).code).toBe('not_found');
    const reserved = await rejection(svc.begin({ reference: 'debian', name: 'debian-bookworm' }, ctx()));
    expect(reserved.code).toBe('conflict');
    expect(reserved.message).toMatch(/built default image/);
    const busy = service(fakes(), { busyElsewhere: () => 'image x is being built (operation op-1)' });
    expect((await rejection(busy.begin({ reference: 'debian', name: 'x' }, ctx()))).code).toBe('conflict');
  });

  it('imports an OCI layout: resolve reads it, download is skipped', async () => {
    const layout = join(dir, 'layout');
    mkdirSync(layout);
    const seen: { dir: string; tag?: string }[] = [];
    const svc = service(fakes(), {
      importLayout: async (d, o) => {
        seen.push({ dir: d, ...(o.tag !== undefined ? { tag: o.tag } : {}) });
        const img = ociImage(['only layer']);
        delete img.reference;
        return img;
      },
    });
    const begun = await svc.begin({ oci_layout: layout, tag: 'v1' }, ctx());
    expect(begun.name).toBe('layout-v1');
    const op = await settled(svc, begun.operation_id);
    expect(op.state).toBe('succeeded');
    expect(seen).toEqual([{ dir: layout, tag: 'v1' }]);
    expect(op.steps.find((s) => s.name === 'download')?.state).toBe('skipped');
    expect(store.images.getByName('layout-v1')).toMatchObject({ source: 'oci', reference: 'v1' });
  });
});

describe('image.cache.prune', () => {
  it('keeps the blobs recorded images use, removes the rest and partial downloads; dry run lists only', async () => {
    const svc = service(fakes());
    const begun = await svc.begin({ reference: 'debian' }, ctx());
    await settled(svc, begun.operation_id);
    const used = store.images.getByName('debian-latest')!.ociBlobs!;
    const stray = putBlob('a layer of a deleted image');
    writeFileSync(join(blobDir, 'sha256', `${hex('half')}.partial`), 'ha');

    const dry = await svc.prune({ dry_run: true });
    expect(dry.dry_run).toBe(true);
    expect(dry.removed).toEqual([{ digest: stray, size_bytes: 'a layer of a deleted image'.length }]);
    expect(dry.partials).toEqual([`${hex('half')}.partial`]);
    expect(dry.kept).toBe(used.length);
    expect(existsSync(join(blobDir, 'sha256', hex('a layer of a deleted image')))).toBe(true);

    const real = await svc.prune({});
    expect(real.removed.map((b) => b.digest)).toEqual([stray]);
    expect(real.bytes).toBe('a layer of a deleted image'.length + 2);
    expect(existsSync(join(blobDir, 'sha256', hex('a layer of a deleted image')))).toBe(false);
    for (const d of used) expect(existsSync(join(blobDir, 'sha256', d.slice(7)))).toBe(true);
    expect((await svc.prune({})).removed).toEqual([]);
  });

  it('is refused while a pull runs (its blobs are not recorded yet)', async () => {
    const svc = service(fakes({ layerDelayMs: 200 }));
    const begun = await svc.begin({ reference: 'debian' }, ctx());
    const e = await rejection(svc.prune({ dry_run: true }));
    expect(e.code).toBe('conflict');
    expect(e.message).toContain(begun.operation_id);
    await settled(svc, begun.operation_id);
  });
});
