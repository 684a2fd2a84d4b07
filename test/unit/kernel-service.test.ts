import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KernelServiceImpl, readKernelVersion } from '../../src/daemon/services/kernel.ts';
import { createLogger } from '../../src/log/logger.ts';
import { type RpcContext, mintOpId } from '../../src/rpc/context.ts';
import { type ErrorResponse, toErrorResponse } from '../../src/rpc/errors.ts';
import { openStore, type Store } from '../../src/store/index.ts';
import { MemoryLog } from '../helpers/logs.ts';

/** A minimal bzImage: the setup header with a kernel_version pointer and its string. */
function fakeBzImage(release: string, ptr = 0x300): Buffer {
  const b = Buffer.alloc(0x1000);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x020f, 0x206);
  b.writeUInt16LE(ptr, 0x20e);
  b.write(`${release} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\0`, ptr + 0x200, 'latin1');
  return b;
}

let dir: string;
let stateDir: string;
let src: string;
let store: Store;
let logs: MemoryLog;
let svc: KernelServiceImpl;

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

/** The wire error a rejected call ends as: domain errors mapped by the dispatcher's table. */
async function rejection(p: Promise<unknown>): Promise<ErrorResponse> {
  try {
    await p;
  } catch (err) {
    return toErrorResponse(err, 'op-0000000000ab');
  }
  throw new Error('expected a rejection');
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-kernel-svc-'));
  stateDir = join(dir, 'state');
  src = join(dir, 'src');
  mkdirSync(stateDir);
  mkdirSync(src);
  writeFileSync(join(src, 'vmlinuz'), fakeBzImage('6.1.0-28-cloud-amd64'));
  writeFileSync(join(src, 'initrd.img'), 'initrd');
  store = openStore(join(stateDir, 'banger.db'));
  logs = new MemoryLog();
  svc = new KernelServiceImpl({ store, log: createLogger({ name: 't', stream: logs }), stateDir });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('readKernelVersion', () => {
  it('reads the release from the bzImage setup header', async () => {
    writeFileSync(join(src, 'a'), fakeBzImage('6.12.9+deb13-amd64', 0x1a0));
    expect(await readKernelVersion(join(src, 'a'))).toBe('6.12.9+deb13-amd64');
  });

  it('is undefined for files that are not a bzImage (or have no pointer)', async () => {
    writeFileSync(join(src, 'b'), 'hello');
    expect(await readKernelVersion(join(src, 'b'))).toBeUndefined();
    const noPtr = fakeBzImage('x');
    noPtr.writeUInt16LE(0, 0x20e);
    writeFileSync(join(src, 'c'), noPtr);
    expect(await readKernelVersion(join(src, 'c'))).toBeUndefined();
    expect(await readKernelVersion(join(src, 'missing'))).toBeUndefined();
  });
});

describe('kernel service', () => {
  it('imports a kernel and initrd into STATE/kernels/<name>/ and records it', async () => {
    const { kernel } = await svc.import(
      { name: 'my-kernel', kernel: join(src, 'vmlinuz'), initrd: join(src, 'initrd.img') },
      ctx(),
    );
    const kdir = join(stateDir, 'kernels', 'my-kernel');
    expect(kernel).toMatchObject({
      name: 'my-kernel',
      version: '6.1.0-28-cloud-amd64',
      kernel_path: join(kdir, 'vmlinuz'),
      initrd_path: join(kdir, 'initrd.img'),
      source: 'imported',
      used_by: [],
    });
    expect(kernel.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(statSync(join(kdir, 'vmlinuz')).size).toBe(0x1000);
    expect(readdirSync(join(stateDir, 'kernels'))).toEqual(['my-kernel']);
    expect((await svc.show({ name: 'my-kernel' }, ctx())).kernel).toEqual(kernel);
    expect((await svc.list(ctx())).kernels).toEqual([kernel]);
  });

  it('takes an explicit version, else "unknown" for a non-bzImage; no initrd is fine', async () => {
    const a = await svc.import({ name: 'a', kernel: join(src, 'vmlinuz'), version: '9.9.9-mine' }, ctx());
    expect(a.kernel.version).toBe('9.9.9-mine');
    expect(a.kernel.initrd_path).toBeUndefined();
    writeFileSync(join(src, 'plain'), 'not a kernel');
    const b = await svc.import({ name: 'b', kernel: join(src, 'plain') }, ctx());
    expect(b.kernel.version).toBe('unknown');
  });

  it('already_exists, not_found, bad_request', async () => {
    await svc.import({ name: 'k', kernel: join(src, 'vmlinuz') }, ctx());
    expect((await rejection(svc.import({ name: 'k', kernel: join(src, 'vmlinuz') }, ctx()))).code).toBe(
      'already_exists',
    );
    expect((await rejection(svc.import({ name: 'k2', kernel: join(src, 'none') }, ctx()))).code).toBe(
      'not_found',
    );
    expect(
      (await rejection(svc.import({ name: 'k2', kernel: join(src, 'vmlinuz'), initrd: '/nope' }, ctx())))
        .code,
    ).toBe('not_found');
    expect((await rejection(svc.import({ name: 'k2', kernel: src }, ctx()))).code).toBe('bad_request');
    expect((await rejection(svc.import({ name: '-bad', kernel: join(src, 'vmlinuz') }, ctx()))).code).toBe(
      'bad_request',
    );
    expect((await rejection(svc.show({ name: 'k2' }, ctx()))).code).toBe('not_found');
    expect((await rejection(svc.delete({ name: 'k2' }, ctx()))).code).toBe('not_found');
    expect(store.kernels.list().map((k) => k.name)).toEqual(['k']);
    expect(readdirSync(join(stateDir, 'kernels'))).toEqual(['k']);
  });

  it('delete: conflict while an image boots it, then removes row and files', async () => {
    const { kernel } = await svc.import({ name: 'k', kernel: join(src, 'vmlinuz') }, ctx());
    const img = store.images.insert({
      name: 'img',
      kernelId: kernel.id,
      rootfsPath: '/x/rootfs.ext4',
      sizeBytes: 1,
      source: 'imported',
    });
    expect((await svc.show({ name: 'k' }, ctx())).kernel.used_by).toEqual(['img']);
    const e = await rejection(svc.delete({ name: 'k' }, ctx()));
    expect(e.code).toBe('conflict');
    expect(e.message).toContain('img');
    expect(existsSync(kernel.kernel_path)).toBe(true);

    store.images.delete(img.id);
    expect(await svc.delete({ name: 'k' }, ctx())).toEqual({ name: 'k', deleted: true });
    expect(store.kernels.list()).toEqual([]);
    expect(existsSync(join(stateDir, 'kernels', 'k'))).toBe(false);
  });
});
