// Derived images through the image service: the prepare VM is replaced by a fake that writes
// the overlay file, so this covers planning, caching, recording and the base's protection.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import { baseIdentity, type DerivedBuildOptions } from '../../src/daemon/services/image-derived.ts';
import { ImageServiceImpl } from '../../src/daemon/services/image.ts';
import type { BuildImageOptions, BuildResult } from '../../src/image/builder.ts';
import { MANIFEST_FORMAT } from '../../src/image/manifest.ts';
import { derivedCacheKey } from '../../src/image/prepare-script.ts';
import { createLogger } from '../../src/log/logger.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { type RpcContext, mintOpId } from '../../src/rpc/context.ts';
import { type ErrorResponse, toErrorResponse } from '../../src/rpc/errors.ts';
import { openStore, type Store } from '../../src/store/index.ts';
import { MemoryLog } from '../helpers/logs.ts';

let dir: string;
let stateDir: string;
let store: Store;
let ops: OperationRegistry;
let logs: MemoryLog;
let derivedCalls: DerivedBuildOptions[];

async function fakeBuild(o: BuildImageOptions): Promise<BuildResult> {
  await mkdir(o.outDir, { recursive: true });
  await writeFile(join(o.outDir, 'vmlinuz'), 'kernel');
  await writeFile(join(o.outDir, 'initrd.cpio.gz'), 'initrd');
  const fh = await open(join(o.outDir, 'rootfs.ext4'), 'w');
  await fh.truncate(8 * 1024 * 1024);
  await fh.close();
  const manifest = {
    format: MANIFEST_FORMAT,
    recipe_hash: 'basehash',
    recipe_name: 'default',
    builder_version: '1',
    kernel_version: '6.1.0-28-cloud-amd64',
    kernel_package: { name: 'linux-image-6.1.0-28-cloud-amd64', version: '6.1.119-1' },
    files: { kernel: 'vmlinuz', initrd: 'initrd.cpio.gz', rootfs: 'rootfs.ext4' },
    sizes: { kernel: 6, initrd: 6, rootfs: 8 * 1024 * 1024, rootfs_allocated: 0 },
    root_label: 'banger-root',
    seed_label: 'banger-seed',
    initramfs_modules: [],
    created_at: new Date().toISOString(),
    build_mode: 'unshare' as const,
    build_duration_ms: 1,
    stage_durations_ms: {},
  };
  return { dir: o.outDir, manifest, cached: false, durationMs: 1 };
}

async function fakeDerived(o: DerivedBuildOptions): Promise<{ path: string; sizeBytes: number }> {
  derivedCalls.push(o);
  await o.step('overlay', async () => undefined);
  await o.step('prepare', async () => {
    o.progress('prepare', 'banger-prepare: installing: python3');
  });
  const path = join(o.staging, 'rootfs.qcow2');
  await writeFile(path, 'qcow2');
  return { path, sizeBytes: 9 * 1024 * 1024 };
}

function ctx(): RpcContext {
  const log = createLogger({ name: 'test', stream: logs });
  return {
    opId: mintOpId(),
    method: 'test',
    startedAt: Date.now(),
    signal: new AbortController().signal,
    log,
  };
}

function service(): ImageServiceImpl {
  return new ImageServiceImpl({
    store,
    ops,
    log: ops.log,
    stateDir,
    cacheDir: join(dir, 'cache'),
    build: fakeBuild,
    buildDerived: fakeDerived,
    aptSources: 'deb [trusted=yes] http://127.0.0.1:8787/ ./',
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

async function rejection(p: Promise<unknown>): Promise<ErrorResponse> {
  try {
    await p;
  } catch (err) {
    return toErrorResponse(err, 'op-0000000000ab');
  }
  throw new Error('expected a rejection');
}

async function buildBase(svc: ImageServiceImpl): Promise<void> {
  const c = ctx();
  await svc.buildBegin({ name: 'base' }, c);
  expect((await settled(svc, c.opId)).state).toBe('succeeded');
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-derived-'));
  stateDir = join(dir, 'state');
  mkdirSync(stateDir);
  store = openStore(join(stateDir, 'banger.db'));
  logs = new MemoryLog();
  ops = new OperationRegistry(createLogger({ name: 't', stream: logs }));
  derivedCalls = [];
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('derived images', () => {
  it('records a qcow2 image on its base’s kernel, parent = base, keyed by the cache key', async () => {
    const svc = service();
    await buildBase(svc);
    const c = ctx();
    await svc.buildBegin(
      { name: 'py', from: 'base', packages: ['python3', 'make'], run_script: 'echo hi\n' },
      c,
    );
    const op = await settled(svc, c.opId);
    expect(op.state).toBe('succeeded');
    expect(op.steps.map((s) => s.name)).toEqual(['overlay', 'prepare']);
    expect(derivedCalls).toHaveLength(1);
    expect(derivedCalls[0]?.aptSources).toContain('127.0.0.1:8787');
    expect(derivedCalls[0]?.plan.packages).toEqual(['make', 'python3']);

    const base = store.images.getByName('base');
    const py = store.images.getByName('py');
    expect(base && py).toBeTruthy();
    expect(py).toMatchObject({
      source: 'derived',
      parentId: base?.id,
      kernelId: base?.kernelId,
      rootfsFormat: 'qcow2',
      rootfsPath: join(stateDir, 'images', 'py', 'rootfs.qcow2'),
      recipeHash: derivedCacheKey({
        base: baseIdentity(base!),
        packages: ['python3', 'make'],
        script: 'echo hi\n',
      }),
      isDefault: false,
    });
    const { image } = await svc.buildStatus({ operation_id: c.opId }, ctx());
    expect(image?.name).toBe('py');
  });

  it('a second identical build is a cache hit; a different one needs force', async () => {
    const svc = service();
    await buildBase(svc);
    const first = ctx();
    await svc.buildBegin({ name: 'py', from: 'base', packages: ['python3'] }, first);
    await settled(svc, first.opId);

    const again = ctx();
    await svc.buildBegin({ name: 'py', from: 'base', packages: ['python3', 'python3'] }, again);
    const op = await settled(svc, again.opId);
    expect(op.state).toBe('succeeded');
    expect(op.steps.map((s) => s.name)).toEqual(['cache']);
    expect(derivedCalls).toHaveLength(1);

    const other = await rejection(svc.buildBegin({ name: 'py', from: 'base', packages: ['make'] }, ctx()));
    expect(other.code).toBe('already_exists');
    const forced = ctx();
    await svc.buildBegin({ name: 'py', from: 'base', packages: ['make'], force: true }, forced);
    expect((await settled(svc, forced.opId)).state).toBe('succeeded');
    expect(derivedCalls).toHaveLength(2);
  });

  it('keeps the base while derived images use it', async () => {
    const svc = service();
    await buildBase(svc);
    const c = ctx();
    await svc.buildBegin({ name: 'py', from: 'base', packages: ['python3'] }, c);
    await settled(svc, c.opId);
    const del = await rejection(svc.delete({ name: 'base' }, ctx()));
    expect(del.code).toBe('conflict');
    expect(del.message).toContain('py');
    const rebuild = await rejection(svc.buildBegin({ name: 'base', force: true }, ctx()));
    expect(rebuild.code).toBe('conflict');
    await svc.delete({ name: 'py' }, ctx());
    await svc.delete({ name: 'base' }, ctx());
    expect(store.images.list()).toEqual([]);
  });

  it('refuses bad requests before starting anything', async () => {
    const svc = service();
    await buildBase(svc);
    expect((await rejection(svc.buildBegin({ name: 'x', from: 'nope', packages: ['a1'] }, ctx()))).code).toBe(
      'not_found',
    );
    expect((await rejection(svc.buildBegin({ from: 'base', packages: ['a1'] }, ctx()))).code).toBe(
      'bad_request',
    );
    expect((await rejection(svc.buildBegin({ name: 'x', from: 'base' }, ctx()))).code).toBe('bad_request');
    expect((await rejection(svc.buildBegin({ name: 'x', packages: ['a1'] }, ctx()))).code).toBe(
      'bad_request',
    );
    expect(
      (await rejection(svc.buildBegin({ name: 'x', from: 'base', packages: ['a;reboot'] }, ctx()))).code,
    ).toBe('bad_request');
    expect(derivedCalls).toHaveLength(0);
  });
});
