import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { open, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import { DEFAULT_IMAGE_NAME, ImageServiceImpl } from '../../src/daemon/services/image.ts';
import { KernelServiceImpl } from '../../src/daemon/services/kernel.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import type { BuildImageOptions, BuildResult, BuildStage } from '../../src/image/builder.ts';
import { MANIFEST_FORMAT, type ImageManifest } from '../../src/image/manifest.ts';
import { createLogger } from '../../src/log/logger.ts';
import { type RpcContext, mintOpId } from '../../src/rpc/context.ts';
import { type ErrorResponse, toErrorResponse } from '../../src/rpc/errors.ts';
import { openStore, type Store } from '../../src/store/index.ts';
import { MemoryLog } from '../helpers/logs.ts';

const STAGES: BuildStage[] = [
  'prepare',
  'kernel.download',
  'kernel.extract',
  'initramfs',
  'rootfs.bootstrap',
  'rootfs.customize',
  'rootfs.mkfs',
  'finalize',
];

interface FakeBuild {
  fn: (o: BuildImageOptions) => Promise<BuildResult>;
  calls: BuildImageOptions[];
}

/** A builder stand-in: reports every stage, sleeps `stageMs` in each, writes the image at the end. */
function fakeBuild(opts: { stageMs?: number; failAt?: BuildStage; hash?: string } = {}): FakeBuild {
  const calls: BuildImageOptions[] = [];
  const fn = async (o: BuildImageOptions): Promise<BuildResult> => {
    calls.push(o);
    const t0 = performance.now();
    for (const stage of STAGES) {
      o.onStage?.(stage, { phase: 'start', message: `starting ${stage}` });
      o.onStage?.(stage, { phase: 'progress', message: `halfway through ${stage}` });
      await sleep(opts.stageMs ?? 2, undefined, { signal: o.signal });
      if (stage === 'finalize') await writeImage(o.outDir);
      if (opts.failAt === stage) throw new Error(`${stage} exploded`);
      o.onStage?.(stage, { phase: 'done', durationMs: 7, message: `${stage} ok` });
    }
    const manifest = makeManifest(opts.hash ?? 'abc123');
    await writeFile(join(o.outDir, 'manifest.json'), JSON.stringify(manifest));
    return { dir: o.outDir, manifest, cached: false, durationMs: Math.round(performance.now() - t0) };
  };
  return { fn, calls };
}

async function writeImage(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'vmlinuz'), 'kernel');
  await writeFile(join(dir, 'initrd.cpio.gz'), 'initrd');
  const fh = await open(join(dir, 'rootfs.ext4'), 'w');
  await fh.truncate(8 * 1024 * 1024);
  await fh.close();
}

function makeManifest(hash: string): ImageManifest {
  return {
    format: MANIFEST_FORMAT,
    recipe_hash: hash,
    recipe_name: 'debian-bookworm',
    builder_version: '1',
    kernel_version: '6.1.0-28-cloud-amd64',
    kernel_package: { name: 'linux-image-6.1.0-28-cloud-amd64', version: '6.1.119-1' },
    files: { kernel: 'vmlinuz', initrd: 'initrd.cpio.gz', rootfs: 'rootfs.ext4' },
    sizes: { kernel: 6, initrd: 6, rootfs: 8 * 1024 * 1024, rootfs_allocated: 0 },
    root_label: 'banger-root',
    seed_label: 'banger-seed',
    initramfs_modules: [],
    created_at: new Date().toISOString(),
    build_mode: 'unshare',
    build_duration_ms: 1,
    stage_durations_ms: {},
  };
}

/** A minimal bzImage: the setup header with a kernel_version pointer and its string. */
function fakeBzImage(release: string): Buffer {
  const b = Buffer.alloc(0x1000);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x020f, 0x206);
  b.writeUInt16LE(0x300, 0x20e);
  b.write(`${release} (debian-kernel@lists.debian.org) #1 SMP\0`, 0x300 + 0x200, 'latin1');
  return b;
}

let dir: string;
let stateDir: string;
let store: Store;
let logs: MemoryLog;
let ops: OperationRegistry;

function ctx(opId = mintOpId()): RpcContext {
  const log = createLogger({ name: 'test', stream: logs });
  return { opId, method: 'test', startedAt: Date.now(), signal: new AbortController().signal, log };
}

function service(build: FakeBuild): ImageServiceImpl {
  return new ImageServiceImpl({
    store,
    ops,
    log: ops.log,
    stateDir,
    cacheDir: join(dir, 'cache'),
    build: build.fn,
  });
}

async function settled(svc: ImageServiceImpl, id: string): Promise<Operation> {
  const end = Date.now() + 5000;
  for (;;) {
    const { operation } = await svc.buildStatus({ operation_id: id }, ctx());
    if (operation.state !== 'running') return operation;
    if (Date.now() > end) throw new Error(`operation ${id} still running`);
    await sleep(5);
  }
}

/** The wire error a rejected call ends as: domain errors mapped by the dispatcher's table. */
async function rejection(p: Promise<unknown>): Promise<ErrorResponse> {
  try {
    await p;
  } catch (err) {
    return toErrorResponse(err, 'op-0000000000ab');
  }
  throw new Error('expected a rejection');
}

function addVm(imageId: string, name: string): void {
  store.vms.insert({
    name,
    imageId,
    vcpus: 1,
    memoryMib: 512,
    diskSizeBytes: 2 ** 30,
    networkMode: 'tap',
    mac: '02:00:00:00:00:01',
  });
}

/** Entries of STATE/images (and kernels) other than the named final directories. */
function leftovers(): string[] {
  const out: string[] = [];
  for (const sub of ['images', 'kernels']) {
    const d = join(stateDir, sub);
    if (existsSync(d)) out.push(...readdirSync(d).filter((n) => n.startsWith('.') || n.includes('.old-')));
  }
  return out;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-image-svc-'));
  stateDir = join(dir, 'state');
  mkdirSync(stateDir);
  store = openStore(join(stateDir, 'banger.db'));
  logs = new MemoryLog();
  ops = new OperationRegistry(createLogger({ name: 't', stream: logs }));
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('image.build', () => {
  it('begins at once, records steps with durations, then the image and its kernel as default', async () => {
    const fb = fakeBuild({ stageMs: 15 });
    const svc = service(fb);
    const c = ctx();
    const begun = await svc.buildBegin({}, c);
    expect(begun).toEqual({ operation_id: c.opId, name: DEFAULT_IMAGE_NAME });

    const early = await svc.buildStatus({ operation_id: c.opId }, ctx());
    expect(early.operation).toMatchObject({
      kind: 'image.build',
      method: 'image.build.begin',
      state: 'running',
    });
    expect(early.operation.image).toBe(DEFAULT_IMAGE_NAME);
    expect(early.image).toBeUndefined();

    const op = await settled(svc, c.opId);
    expect(op.state).toBe('succeeded');
    expect(op.current_step).toBeUndefined();
    expect(op.steps.map((s) => s.name)).toEqual(STAGES);
    for (const s of op.steps) {
      expect(s.state).toBe('done');
      expect(s.duration_ms).toBe(7);
      expect(s.detail).toBe(`${s.name} ok`);
    }

    const { image } = await svc.buildStatus({ operation_id: c.opId }, ctx());
    const imgDir = join(stateDir, 'images', DEFAULT_IMAGE_NAME);
    expect(image).toMatchObject({
      name: DEFAULT_IMAGE_NAME,
      kernel: DEFAULT_IMAGE_NAME,
      kernel_version: '6.1.0-28-cloud-amd64',
      rootfs_path: join(imgDir, 'rootfs.ext4'),
      size_bytes: 8 * 1024 * 1024,
      source: 'built',
      default: true,
      recipe_hash: 'abc123',
      used_by: [],
    });
    const k = store.kernels.getByName(DEFAULT_IMAGE_NAME)!;
    expect(k).toMatchObject({
      source: 'built',
      kernelPath: join(imgDir, 'vmlinuz'),
      initrdPath: join(imgDir, 'initrd.cpio.gz'),
    });
    for (const f of ['vmlinuz', 'initrd.cpio.gz', 'rootfs.ext4', 'manifest.json']) {
      expect(existsSync(join(imgDir, f))).toBe(true);
    }
    expect(leftovers()).toEqual([]);
    expect(fb.calls[0]!.cacheDir).toBe(join(dir, 'cache'));

    // The background work logs under the operation's op id.
    const mine = logs.byOp(c.opId).map((r) => r.msg);
    expect(mine).toContain('step done');
    expect(mine).toContain('image built');
  });

  it('refuses a second build (already_exists), a concurrent one (conflict), and rebuilds with force', async () => {
    const svc = service(fakeBuild({ stageMs: 10 }));
    const c1 = ctx();
    await svc.buildBegin({ name: 'img-a' }, c1);
    expect((await rejection(svc.buildBegin({ name: 'img-a' }, ctx()))).code).toBe('conflict');
    await settled(svc, c1.opId);
    const first = store.images.getByName('img-a')!;

    expect((await rejection(svc.buildBegin({ name: 'img-a' }, ctx()))).code).toBe('already_exists');
    expect((await rejection(svc.buildBegin({ name: 'bad name!' }, ctx()))).code).toBe('bad_request');

    const c2 = ctx();
    await svc.buildBegin({ name: 'img-a', force: true }, c2);
    expect((await settled(svc, c2.opId)).state).toBe('succeeded');
    const second = store.images.getByName('img-a')!;
    expect(second.id).not.toBe(first.id);
    expect(second.isDefault).toBe(true);
    expect(store.kernels.list().map((k) => k.name)).toEqual(['img-a']);
    expect(existsSync(second.rootfsPath)).toBe(true);
    expect(leftovers()).toEqual([]);
  });

  it('defaults only the first image unless make_default', async () => {
    const svc = service(fakeBuild());
    for (const [name, make_default] of [
      ['one', false],
      ['two', false],
      ['three', true],
    ] as const) {
      const c = ctx();
      await svc.buildBegin({ name, make_default }, c);
      await settled(svc, c.opId);
    }
    expect(store.images.getDefault()?.name).toBe('three');
    expect(store.images.getByName('one')?.isDefault).toBe(false);
  });

  it('refuses a forced rebuild while VMs use the image', async () => {
    const svc = service(fakeBuild());
    const c = ctx();
    await svc.buildBegin({}, c);
    await settled(svc, c.opId);
    addVm(store.images.getByName(DEFAULT_IMAGE_NAME)!.id, 'calm-otter');
    const e = await rejection(svc.buildBegin({ force: true }, ctx()));
    expect(e.code).toBe('conflict');
    expect(e.message).toContain('calm-otter');
  });

  it('cancels a running build: canceled op, no rows, no leftover files', async () => {
    const fb = fakeBuild({ stageMs: 10_000 });
    const svc = service(fb);
    const c = ctx();
    await svc.buildBegin({}, c);
    await sleep(20);
    expect(fb.calls[0]!.signal?.aborted).toBe(false);
    const { operation } = await svc.buildCancel({ operation_id: c.opId }, ctx());
    expect(operation.state).toBe('canceled');
    expect(operation.error).toEqual({ code: 'canceled', message: 'canceled by user' });
    expect(operation.steps[0]).toMatchObject({ name: 'prepare', state: 'failed', detail: 'canceled' });
    expect(fb.calls[0]!.signal?.aborted).toBe(true);
    expect(store.images.list()).toEqual([]);
    expect(store.kernels.list()).toEqual([]);
    expect(readdirSync(join(stateDir, 'images'))).toEqual([]);

    expect((await rejection(svc.buildCancel({ operation_id: c.opId }, ctx()))).code).toBe('conflict');
    expect((await rejection(svc.buildCancel({ operation_id: 'op-000000' }, ctx()))).code).toBe('not_found');
    expect((await rejection(svc.buildStatus({ operation_id: 'op-000000' }, ctx()))).code).toBe('not_found');

    // The name is free again.
    const fast = service(fakeBuild());
    const c2 = ctx();
    await fast.buildBegin({}, c2);
    expect((await settled(fast, c2.opId)).state).toBe('succeeded');
  });

  it('a failing build ends failed with the error, records nothing and removes partial output', async () => {
    const svc = service(fakeBuild({ failAt: 'finalize' }));
    const c = ctx();
    await svc.buildBegin({ name: 'broken' }, c);
    const op = await settled(svc, c.opId);
    expect(op.state).toBe('failed');
    expect(op.error).toEqual({ code: 'operation_failed', message: 'finalize exploded' });
    expect(op.steps.at(-1)).toMatchObject({ name: 'finalize', state: 'failed', detail: 'finalize exploded' });
    expect(store.images.list()).toEqual([]);
    expect(store.kernels.list()).toEqual([]);
    expect(readdirSync(join(stateDir, 'images'))).toEqual([]);
    const failLog = logs.byOp(c.opId).find((r) => r.msg === 'image build failed');
    expect(failLog).toBeDefined();
  });

  it('a forced rebuild that fails keeps the previous image intact', async () => {
    const c = ctx();
    const ok = service(fakeBuild());
    await ok.buildBegin({ name: 'keep' }, c);
    await settled(ok, c.opId);
    const before = store.images.getByName('keep')!;
    const bad = service(fakeBuild({ failAt: 'finalize' }));
    const c2 = ctx();
    await bad.buildBegin({ name: 'keep', force: true }, c2);
    expect((await settled(bad, c2.opId)).state).toBe('failed');
    expect(store.images.getByName('keep')).toEqual(before);
    expect(existsSync(before.rootfsPath)).toBe(true);
    expect(leftovers()).toEqual([]);
  });
});

describe('resolveForVm', () => {
  it('auto-builds the default image once for concurrent callers and reports progress', async () => {
    const fb = fakeBuild({ stageMs: 5 });
    const svc = service(fb);
    const progress: string[] = [];
    const [a, b] = await Promise.all([
      svc.resolveForVm(undefined, { onProgress: (d) => progress.push(d) }),
      svc.resolveForVm(undefined, {}),
    ]);
    expect(fb.calls).toHaveLength(1);
    expect(a.image.id).toBe(b.image.id);
    expect(a.image).toMatchObject({ name: DEFAULT_IMAGE_NAME, isDefault: true });
    expect(a.kernel.name).toBe(DEFAULT_IMAGE_NAME);
    expect(progress[0]).toMatch(/^building image debian-bookworm \(operation op-[0-9a-f]+\)/);
    expect(progress).toContain('image debian-bookworm: rootfs.bootstrap: starting rootfs.bootstrap');

    const auto = ops.list().find((o) => o.kind === 'image.build')!;
    expect(auto).toMatchObject({ method: 'auto', state: 'succeeded', image: DEFAULT_IMAGE_NAME });
    expect(logs.byOp(auto.id).some((r) => r.msg === 'image built')).toBe(true);

    // Now there is a default: no further build.
    await svc.resolveForVm(undefined, {});
    expect(fb.calls).toHaveLength(1);
  });

  it('resolves a named image, not_found otherwise; uses the default without building', async () => {
    const fb = fakeBuild();
    const svc = service(fb);
    expect((await rejection(svc.resolveForVm('nope', {}))).code).toBe('not_found');
    const c = ctx();
    await svc.buildBegin({ name: 'mine' }, c);
    await settled(svc, c.opId);
    expect((await svc.resolveForVm('mine', {})).image.name).toBe('mine');
    expect((await svc.resolveForVm(undefined, {})).image.name).toBe('mine');
    expect(fb.calls).toHaveLength(1);
  });

  it('cancels an auto build when its only waiter gives up', async () => {
    const fb = fakeBuild({ stageMs: 10_000 });
    const svc = service(fb);
    const ac = new AbortController();
    const p = svc.resolveForVm(undefined, { signal: ac.signal });
    await sleep(20);
    ac.abort();
    expect((await rejection(p)).code).toBe('canceled');
    const end = Date.now() + 2000;
    while (ops.list()[0]?.state === 'running' && Date.now() < end) await sleep(5);
    expect(ops.list()[0]).toMatchObject({ method: 'auto', state: 'canceled' });
    expect(store.images.list()).toEqual([]);
  });

  it('surfaces a failed auto build as operation_failed naming the build operation', async () => {
    const svc = service(fakeBuild({ failAt: 'rootfs.mkfs' }));
    const e = await rejection(svc.resolveForVm(undefined, {}));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toMatch(
      /building image debian-bookworm \(operation op-[0-9a-f]+\) failed: rootfs.mkfs exploded/,
    );
  });
});

describe('image.import', () => {
  let src: string;
  beforeEach(async () => {
    src = join(dir, 'src');
    mkdirSync(src);
    const fh = await open(join(src, 'rootfs.ext4'), 'w');
    await fh.truncate(64 * 1024 * 1024);
    await fh.write(Buffer.from('ext4 superblock-ish'), 0, 19, 1024);
    await fh.close();
    writeFileSync(join(src, 'vmlinuz'), fakeBzImage('6.12.9-custom'));
    writeFileSync(join(src, 'initrd.img'), 'initrd');
  });

  const params = (name: string): { name: string; rootfs: string; kernel: string; initrd: string } => ({
    name,
    rootfs: join(src, 'rootfs.ext4'),
    kernel: join(src, 'vmlinuz'),
    initrd: join(src, 'initrd.img'),
  });

  it('copies the files (sparse) and records the image and its kernel', async () => {
    const svc = service(fakeBuild());
    const { image } = await svc.import(params('my-image'), ctx());
    const rootfs = join(stateDir, 'images', 'my-image', 'rootfs.ext4');
    expect(image).toMatchObject({
      name: 'my-image',
      kernel: 'my-image',
      kernel_version: '6.12.9-custom',
      rootfs_path: rootfs,
      size_bytes: 64 * 1024 * 1024,
      source: 'imported',
      default: true,
      used_by: [],
    });
    expect(image.recipe_hash).toBeUndefined();
    const st = statSync(rootfs);
    expect(st.size).toBe(64 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThan(1024 * 1024);
    const k = store.kernels.getByName('my-image')!;
    expect(k).toMatchObject({
      source: 'imported',
      version: '6.12.9-custom',
      kernelPath: join(stateDir, 'kernels', 'my-image', 'vmlinuz'),
      initrdPath: join(stateDir, 'kernels', 'my-image', 'initrd.img'),
    });
    expect(existsSync(k.kernelPath)).toBe(true);
    expect(leftovers()).toEqual([]);

    // A second import is not made default unless asked.
    const { image: second } = await svc.import({ ...params('other'), make_default: true }, ctx());
    expect(second.default).toBe(true);
    expect((await svc.show({ name: 'my-image' }, ctx())).image.default).toBe(false);
  });

  it('refuses name collisions with images and kernels', async () => {
    const svc = service(fakeBuild());
    const kernels = new KernelServiceImpl({ store, log: ops.log, stateDir });
    await svc.import(params('taken'), ctx());
    expect((await rejection(svc.import(params('taken'), ctx()))).code).toBe('already_exists');
    await kernels.import({ name: 'k-only', kernel: join(src, 'vmlinuz') }, ctx());
    expect((await rejection(svc.import(params('k-only'), ctx()))).code).toBe('already_exists');
    expect(leftovers()).toEqual([]);
  });

  it('not_found for missing paths, bad_request when rootfs is not a file; nothing recorded', async () => {
    const svc = service(fakeBuild());
    const missing = await rejection(svc.import({ ...params('x'), rootfs: join(src, 'nope.ext4') }, ctx()));
    expect(missing.code).toBe('not_found');
    expect(missing.message).toContain('nope.ext4');
    expect((await rejection(svc.import({ ...params('x'), kernel: '/does/not/exist' }, ctx()))).code).toBe(
      'not_found',
    );
    expect(
      (await rejection(svc.import({ ...params('x'), initrd: join(src, 'no-initrd') }, ctx()))).code,
    ).toBe('not_found');
    expect((await rejection(svc.import({ ...params('x'), rootfs: src }, ctx()))).code).toBe('bad_request');
    expect(store.images.list()).toEqual([]);
    expect(store.kernels.list()).toEqual([]);
  });

  it('records "unknown" when the kernel carries no version string', async () => {
    writeFileSync(join(src, 'vmlinuz'), 'not a bzImage');
    const svc = service(fakeBuild());
    const { image } = await svc.import(params('plain'), ctx());
    expect(image.kernel_version).toBe('unknown');
  });
});

describe('image.list, show, delete, promote', () => {
  it('delete: conflict while a VM uses the image; then removes files and its built kernel', async () => {
    const svc = service(fakeBuild());
    const c = ctx();
    await svc.buildBegin({}, c);
    await settled(svc, c.opId);
    const row = store.images.getByName(DEFAULT_IMAGE_NAME)!;
    addVm(row.id, 'calm-otter');
    expect((await svc.show({ name: DEFAULT_IMAGE_NAME }, ctx())).image.used_by).toEqual(['calm-otter']);

    const e = await rejection(svc.delete({ name: DEFAULT_IMAGE_NAME }, ctx()));
    expect(e.code).toBe('conflict');
    expect(e.message).toContain('calm-otter');
    expect(existsSync(row.rootfsPath)).toBe(true);

    store.vms.delete(store.vms.getByName('calm-otter')!.id);
    expect(await svc.delete({ name: DEFAULT_IMAGE_NAME }, ctx())).toEqual({
      name: DEFAULT_IMAGE_NAME,
      deleted: true,
    });
    expect(store.images.list()).toEqual([]);
    expect(store.kernels.list()).toEqual([]);
    expect(existsSync(join(stateDir, 'images', DEFAULT_IMAGE_NAME))).toBe(false);
    expect((await rejection(svc.delete({ name: DEFAULT_IMAGE_NAME }, ctx()))).code).toBe('not_found');
  });

  it('delete keeps an imported image kernel', async () => {
    const src = join(dir, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'rootfs.ext4'), 'fs');
    writeFileSync(join(src, 'vmlinuz'), fakeBzImage('6.1.0-1'));
    const svc = service(fakeBuild());
    await svc.import({ name: 'imp', rootfs: join(src, 'rootfs.ext4'), kernel: join(src, 'vmlinuz') }, ctx());
    await svc.delete({ name: 'imp' }, ctx());
    expect(store.images.list()).toEqual([]);
    const k = store.kernels.getByName('imp')!;
    expect(k.initrdPath).toBeNull();
    expect(existsSync(k.kernelPath)).toBe(true);
  });

  it('list, show and promote', async () => {
    const svc = service(fakeBuild());
    for (const name of ['alpha', 'beta']) {
      const c = ctx();
      await svc.buildBegin({ name }, c);
      await settled(svc, c.opId);
    }
    const { images } = await svc.list(ctx());
    expect(images.map((i) => [i.name, i.default])).toEqual([
      ['alpha', true],
      ['beta', false],
    ]);
    expect(images[0]!.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const { image } = await svc.promote({ name: 'beta' }, ctx());
    expect(image.default).toBe(true);
    expect(store.images.getDefault()?.name).toBe('beta');
    expect((await svc.show({ name: 'alpha' }, ctx())).image.default).toBe(false);
    expect((await rejection(svc.promote({ name: 'gamma' }, ctx()))).code).toBe('not_found');
    expect((await rejection(svc.show({ name: 'gamma' }, ctx()))).code).toBe('not_found');
  });

  it('sweep removes staging leftovers of an interrupted daemon', async () => {
    const svc = service(fakeBuild());
    mkdirSync(join(stateDir, 'images', '.build-0badf00d-x'), { recursive: true });
    mkdirSync(join(stateDir, 'kernels', '.import-0badf00d-y'), { recursive: true });
    mkdirSync(join(stateDir, 'images', 'z.old-1234abcd'), { recursive: true });
    await svc.sweep();
    expect(leftovers()).toEqual([]);
  });

  it('sweep removes image and kernel directories no row owns (a crash between the move and the commit), nothing else', async () => {
    // The first build ends at once, the second runs until canceled.
    const [fast, slowBuild] = [fakeBuild(), fakeBuild({ stageMs: 10_000 })];
    let builds = 0;
    const svc = service({ calls: [], fn: (o) => (builds++ === 0 ? fast.fn(o) : slowBuild.fn(o)) });
    const images = join(stateDir, 'images');
    const kernels = join(stateDir, 'kernels');
    // Owned: a built image (row and its built kernel by name), a kernel row whose files are in a
    // directory of another name, an imported kernel row.
    const c = ctx();
    await svc.buildBegin({ name: 'alpha' }, c);
    expect((await settled(svc, c.opId)).state).toBe('succeeded');
    for (const [name, kdir, source] of [
      ['kept-kernel', join(images, 'elsewhere'), 'built'],
      ['imported', join(kernels, 'imported'), 'imported'],
    ] as const) {
      mkdirSync(kdir, { recursive: true });
      writeFileSync(join(kdir, 'vmlinuz'), 'k');
      store.kernels.insert({
        name,
        version: '6.1',
        kernelPath: join(kdir, 'vmlinuz'),
        initrdPath: null,
        source,
      });
    }
    // In flight: a build of "slow" (its directory may appear before its row) and a kernel pull.
    const slow = ctx();
    await svc.buildBegin({ name: 'slow' }, slow);
    mkdirSync(join(images, 'slow'), { recursive: true });
    mkdirSync(join(kernels, 'pulling'), { recursive: true });
    svc.kernelBusy = (name) => name === 'pulling';
    // Orphans: moved into place, no row.
    for (const d of [join(images, 'orphan'), join(kernels, 'orphan-k')]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'rootfs.ext4'), 'x');
    }
    // Not banger's layout: a file, a link, a name that is no resource name.
    writeFileSync(join(images, 'a-file'), 'x');
    mkdirSync(join(dir, 'outside'));
    symlinkSync(join(dir, 'outside'), join(images, 'a-link'));
    mkdirSync(join(images, 'not a name'));

    await svc.sweep();
    // (The slow build's own .build-* staging directory is there too, made after the sweep began.)
    const named = (d: string): string[] =>
      readdirSync(d)
        .filter((n) => !n.startsWith('.'))
        .sort();
    expect(named(images)).toEqual(['a-file', 'a-link', 'alpha', 'elsewhere', 'not a name', 'slow']);
    expect(named(kernels)).toEqual(['imported', 'pulling']);
    expect(existsSync(join(dir, 'outside'))).toBe(true);
    const said = logs.lines.join('\n');
    expect(said).toContain('images/orphan');
    expect(said).toContain('kernels/orphan-k');
    await svc.buildCancel({ operation_id: slow.opId }, ctx());
  });
});
