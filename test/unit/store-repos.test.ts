import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/db.ts';
import {
  isCheckViolation,
  isForeignKeyViolation,
  isStoreError,
  isUniqueViolation,
  uniqueViolationColumns,
} from '../../src/store/errors.ts';
import type { NewVm } from '../../src/store/vms.ts';
import { newId } from '../../src/store/rows.ts';
import type { Store } from '../../src/store/store.ts';

let dir: string;
let store: Store;
let t: number;
const DAY = 86_400_000;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-store-repos-'));
  t = Date.parse('2025-01-01T00:00:00.000Z');
  store = openStore(join(dir, 'banger.db'), { now: () => new Date(t) });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

function seed(): { kernelId: string; imageId: string } {
  const k = store.kernels.insert({
    name: 'k6.1',
    version: '6.1.0',
    kernelPath: '/k/vmlinux',
    source: 'built',
  });
  const img = store.images.insert({
    name: 'debian',
    kernelId: k.id,
    rootfsPath: '/i/debian.ext4',
    sizeBytes: 2 ** 30,
    source: 'built',
    isDefault: true,
  });
  return { kernelId: k.id, imageId: img.id };
}

function vm(imageId: string, name: string, extra: Partial<NewVm> = {}): NewVm {
  return {
    name,
    imageId,
    vcpus: 2,
    memoryMib: 1024,
    diskSizeBytes: 8 * 2 ** 30,
    networkMode: 'tap',
    mac: '02:00:00:00:00:01',
    ...extra,
  };
}

describe('ids', () => {
  it('newId is 12 lowercase hex characters and random', () => {
    const ids = new Set(Array.from({ length: 200 }, () => newId()));
    expect(ids.size).toBe(200);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{12}$/);
  });
});

describe('kernels', () => {
  it('inserts, reads back, lists', () => {
    const k = store.kernels.insert({
      name: 'k6.6',
      version: '6.6.1',
      kernelPath: '/k/vmlinux-6.6',
      initrdPath: '/k/initrd',
      source: 'imported',
    });
    expect(k).toEqual({
      id: expect.stringMatching(/^[0-9a-f]{12}$/),
      name: 'k6.6',
      version: '6.6.1',
      kernelPath: '/k/vmlinux-6.6',
      initrdPath: '/k/initrd',
      modulesDir: null,
      source: 'imported',
      createdAt: '2025-01-01T00:00:00.000Z',
    });
    expect(store.kernels.getById(k.id)).toEqual(k);
    expect(store.kernels.getByName('k6.6')).toEqual(k);
    expect(store.kernels.getByName('nope')).toBeUndefined();
    expect(store.kernels.list().map((x) => x.name)).toEqual(['k6.6']);
  });

  it('refuses to delete a kernel an image uses, naming the image', () => {
    const { kernelId } = seed();
    const err = caught(() => store.kernels.delete(kernelId));
    expect(isStoreError(err, 'in_use')).toBe(true);
    expect((err as Error).message).toBe('kernel k6.1 is used by image debian');
    expect(store.kernels.getById(kernelId)).toBeDefined();
  });

  it('deletes an unused kernel; false when missing', () => {
    const k = store.kernels.insert({ name: 'k', version: '1', kernelPath: '/k', source: 'built' });
    expect(store.kernels.delete(k.id)).toBe(true);
    expect(store.kernels.delete(k.id)).toBe(false);
  });

  it('rejects an unknown source (CHECK)', () => {
    const err = caught(() =>
      store.kernels.insert({ name: 'k', version: '1', kernelPath: '/k', source: 'stolen' as 'built' }),
    );
    expect(isCheckViolation(err)).toBe(true);
  });
});

describe('images', () => {
  it('inserts with defaults and maps columns', () => {
    const { kernelId, imageId } = seed();
    expect(store.images.getById(imageId)).toEqual({
      id: imageId,
      name: 'debian',
      kernelId,
      rootfsPath: '/i/debian.ext4',
      rootfsFormat: 'raw',
      sizeBytes: 2 ** 30,
      recipeHash: null,
      source: 'built',
      isDefault: true,
      createdAt: '2025-01-01T00:00:00.000Z',
      digest: null,
      reference: null,
      ociConfig: null,
      ociBlobs: null,
      parentId: null,
    });
  });

  it('keeps the digest, reference, config and blobs of an OCI image; a derived image names its parent', () => {
    const { kernelId } = seed();
    const digest = `sha256:${'a'.repeat(64)}`;
    const oci = store.images.insert({
      name: 'minbase-bookworm',
      kernelId,
      rootfsPath: '/i/minbase.ext4',
      sizeBytes: 2 ** 30,
      source: 'oci',
      digest,
      reference: '127.0.0.1:5000/minbase:bookworm',
      ociConfig: { env: ['PATH=/usr/bin'], working_dir: '/src', user: '1000', cmd: ['bash'] },
      ociBlobs: [digest, `sha256:${'b'.repeat(64)}`],
    });
    expect(store.images.getByName('minbase-bookworm')).toMatchObject({
      source: 'oci',
      digest,
      reference: '127.0.0.1:5000/minbase:bookworm',
      ociConfig: { env: ['PATH=/usr/bin'], working_dir: '/src', user: '1000', cmd: ['bash'] },
      ociBlobs: [digest, `sha256:${'b'.repeat(64)}`],
      parentId: null,
    });
    const derived = store.images.insert({
      name: 'py',
      kernelId,
      rootfsPath: '/i/py.ext4',
      sizeBytes: 2 ** 30,
      source: 'derived',
      parentId: oci.id,
    });
    expect(store.images.getById(derived.id)?.parentId).toBe(oci.id);
    const err = caught(() => store.images.delete(oci.id));
    expect(isStoreError(err, 'in_use')).toBe(true);
    expect((err as Error).message).toBe('image minbase-bookworm is the base of derived image py');
    expect(
      isForeignKeyViolation(caught(() => store.db.prepare('DELETE FROM images WHERE id = ?').run(oci.id))),
    ).toBe(true);
    expect(store.images.delete(derived.id)).toBe(true);
    expect(store.images.delete(oci.id)).toBe(true);
  });

  it('refuses an unknown image source (CHECK) and a parent that does not exist (FK)', () => {
    const { kernelId } = seed();
    const base = { kernelId, rootfsPath: '/x', sizeBytes: 1 };
    expect(
      isCheckViolation(caught(() => store.images.insert({ ...base, name: 'x', source: 'stolen' as 'oci' }))),
    ).toBe(true);
    expect(
      isForeignKeyViolation(
        caught(() => store.images.insert({ ...base, name: 'y', source: 'derived', parentId: 'nope' })),
      ),
    ).toBe(true);
  });

  it('refuses an image whose kernel does not exist (FK)', () => {
    const err = caught(() =>
      store.images.insert({
        name: 'x',
        kernelId: 'nokernel',
        rootfsPath: '/x',
        sizeBytes: 1,
        source: 'built',
      }),
    );
    expect(isForeignKeyViolation(err)).toBe(true);
  });

  it('keeps at most one default image', () => {
    const { kernelId, imageId } = seed();
    const alpine = store.images.insert({
      name: 'alpine',
      kernelId,
      rootfsPath: '/a',
      sizeBytes: 1,
      source: 'built',
    });
    expect(store.images.getDefault()?.id).toBe(imageId);

    expect(store.images.setDefault(alpine.id).isDefault).toBe(true);
    expect(store.images.getDefault()?.name).toBe('alpine');
    expect(store.images.list().filter((i) => i.isDefault)).toHaveLength(1);

    // Inserting a new default moves the flag too.
    store.images.insert({
      name: 'arch',
      kernelId,
      rootfsPath: '/r',
      sizeBytes: 1,
      source: 'built',
      isDefault: true,
    });
    expect(
      store.images
        .list()
        .filter((i) => i.isDefault)
        .map((i) => i.name),
    ).toEqual(['arch']);

    // The database itself refuses a second default, whatever writes it.
    const err = caught(() => store.db.exec("UPDATE images SET is_default = 1 WHERE name = 'debian'"));
    expect(isUniqueViolation(err)).toBe(true);
    expect(uniqueViolationColumns(err)).toEqual(['images.is_default']);

    store.images.clearDefault();
    expect(store.images.getDefault()).toBeUndefined();
  });

  it('setDefault of a missing image fails and leaves the old default in place', () => {
    const { imageId } = seed();
    expect(
      isStoreError(
        caught(() => store.images.setDefault('missing')),
        'not_found',
      ),
    ).toBe(true);
    expect(store.images.getDefault()?.id).toBe(imageId);
  });

  it('refuses to delete an image VMs use, with a clear error; the FK also refuses raw deletes', () => {
    const { imageId } = seed();
    store.vms.insert(vm(imageId, 'alpha'));
    store.vms.insert(vm(imageId, 'beta'));
    const err = caught(() => store.images.delete(imageId));
    expect(isStoreError(err, 'in_use')).toBe(true);
    expect((err as Error).message).toBe('image debian is used by VMs alpha, beta');
    expect(
      isForeignKeyViolation(caught(() => store.db.prepare('DELETE FROM images WHERE id = ?').run(imageId))),
    ).toBe(true);
    expect(store.images.getById(imageId)).toBeDefined();

    for (const v of store.vms.list()) store.vms.delete(v.id);
    expect(store.images.delete(imageId)).toBe(true);
    expect(store.images.getDefault()).toBeUndefined();
  });

  it('refuses a duplicate image name', () => {
    const { kernelId } = seed();
    const err = caught(() =>
      store.images.insert({ name: 'debian', kernelId, rootfsPath: '/d2', sizeBytes: 1, source: 'imported' }),
    );
    expect(isUniqueViolation(err)).toBe(true);
    expect(uniqueViolationColumns(err)).toEqual(['images.name']);
  });
});

describe('vms', () => {
  it('inserts with defaults, reads by name and id', () => {
    const { imageId } = seed();
    const v = store.vms.insert(vm(imageId, 'dev', { workspace: { path: '/src', mode: 'copy' } }));
    expect(v).toEqual({
      id: expect.stringMatching(/^[0-9a-f]{12}$/),
      name: 'dev',
      imageId,
      state: 'creating',
      vcpus: 2,
      memoryMib: 1024,
      diskSizeBytes: 8 * 2 ** 30,
      networkMode: 'tap',
      guestIp: null,
      mac: '02:00:00:00:00:01',
      nat: false,
      sshHostKey: null,
      workspace: { path: '/src', mode: 'copy' },
      lastError: null,
      bootCount: 0,
      createdAt: '2025-01-01T00:00:00.000Z',
      updatedAt: '2025-01-01T00:00:00.000Z',
      lastStartedAt: null,
      warmTemplate: null,
      stateReason: null,
      lastExit: null,
      savedState: null,
      egress: { mode: 'all', rules: [] },
      egressOpId: null,
      idlePauseAfterMs: null,
      lastUsedAt: null,
      idlePausedAt: null,
      secrets: [],
    });
    expect(store.vms.getByName('dev')).toEqual(v);
    expect(store.vms.getById(v.id)).toEqual(v);
    expect(store.vms.getByName('other')).toBeUndefined();
  });

  it('a duplicate VM name raises a recognizable unique violation', () => {
    const { imageId } = seed();
    store.vms.insert(vm(imageId, 'dev'));
    const err = caught(() => store.vms.insert(vm(imageId, 'dev')));
    expect(isUniqueViolation(err)).toBe(true);
    expect(uniqueViolationColumns(err)).toEqual(['vms.name']);
    expect(isUniqueViolation(new Error('UNIQUE constraint failed: vms.name'))).toBe(false); // not a sqlite error
    expect(store.vms.list()).toHaveLength(1);
  });

  it('guest IPs are unique when set; many VMs may have none', () => {
    const { imageId } = seed();
    store.vms.insert(vm(imageId, 'a', { guestIp: '172.16.0.2' }));
    store.vms.insert(vm(imageId, 'b'));
    store.vms.insert(vm(imageId, 'c'));
    const err = caught(() => store.vms.insert(vm(imageId, 'd', { guestIp: '172.16.0.2' })));
    expect(uniqueViolationColumns(err)).toEqual(['vms.guest_ip']);
  });

  it('enforces CHECK constraints: vcpus 0, too much memory, unknown state', () => {
    const { imageId } = seed();
    expect(isCheckViolation(caught(() => store.vms.insert(vm(imageId, 'a', { vcpus: 0 }))))).toBe(true);
    expect(isCheckViolation(caught(() => store.vms.insert(vm(imageId, 'b', { vcpus: 65 }))))).toBe(true);
    expect(isCheckViolation(caught(() => store.vms.insert(vm(imageId, 'c', { memoryMib: 32 }))))).toBe(true);
    expect(
      isCheckViolation(caught(() => store.vms.insert(vm(imageId, 'd', { state: 'exploded' as 'running' })))),
    ).toBe(true);
    const ok = store.vms.insert(vm(imageId, 'e', { vcpus: 64, memoryMib: 64 }));
    expect(isCheckViolation(caught(() => store.vms.update(ok.id, { vcpus: 0 })))).toBe(true);
    expect(store.vms.list().map((v) => v.name)).toEqual(['e']);
  });

  it('refuses a VM whose image does not exist (FK)', () => {
    seed();
    expect(isForeignKeyViolation(caught(() => store.vms.insert(vm('noimage', 'x'))))).toBe(true);
  });

  it('update changes only the given columns, clears with null, bumps updated_at', () => {
    const { imageId } = seed();
    const v = store.vms.insert(
      vm(imageId, 'dev', { guestIp: '10.0.0.2', sshHostKey: 'ssh-ed25519 AAA', nat: true }),
    );
    t += 60_000;
    const u = store.vms.update(v.id, { lastError: 'boom', guestIp: null, workspace: [1, 2] });
    expect(u).toEqual({
      ...v,
      lastError: 'boom',
      guestIp: null,
      workspace: [1, 2],
      updatedAt: '2025-01-01T00:01:00.000Z',
    });
    expect(store.vms.getById(v.id)).toEqual(u);
    expect(u.sshHostKey).toBe('ssh-ed25519 AAA');
    expect(u.nat).toBe(true);

    const u2 = store.vms.update(v.id, { nat: false, lastStartedAt: new Date(t), workspace: null });
    expect(u2.nat).toBe(false);
    expect(u2.workspace).toBeNull();
    expect(u2.lastStartedAt).toBe('2025-01-01T00:01:00.000Z');
    expect(u2.state).toBe('creating');

    expect(
      isStoreError(
        caught(() => store.vms.update('missing', { nat: true })),
        'not_found',
      ),
    ).toBe(true);
  });

  it('writeState sets the state and its reason, and last_error only when told', () => {
    const { imageId } = seed();
    const v = store.vms.insert(vm(imageId, 'dev'));
    t += 1000;
    const e = store.vms.writeState(v.id, { state: 'error', reason: 'boom', lastError: 'boom' });
    expect(e).toMatchObject({ state: 'error', stateReason: 'boom', lastError: 'boom' });
    expect(e.updatedAt).toBe('2025-01-01T00:00:01.000Z');
    const p = store.vms.writeState(v.id, { state: 'paused', reason: 'host disk full' });
    expect(p).toMatchObject({ state: 'paused', stateReason: 'host disk full', lastError: 'boom' });
    const r = store.vms.writeState(v.id, { state: 'running', reason: null, lastError: null });
    expect(r).toMatchObject({ state: 'running', stateReason: null, lastError: null });
    expect(
      isStoreError(
        caught(() => store.vms.writeState('missing', { state: 'stopped', reason: null })),
        'not_found',
      ),
    ).toBe(true);
  });

  it('update to a taken name raises a unique violation and changes nothing', () => {
    const { imageId } = seed();
    store.vms.insert(vm(imageId, 'a'));
    const b = store.vms.insert(vm(imageId, 'b'));
    expect(isUniqueViolation(caught(() => store.vms.update(b.id, { name: 'a', nat: true })))).toBe(true);
    expect(store.vms.getById(b.id)?.state).toBe('creating');
  });

  it('recordBoot counts boots and stamps last_started_at', () => {
    const { imageId } = seed();
    const v = store.vms.insert(vm(imageId, 'dev'));
    t += 1000;
    store.vms.recordBoot(v.id);
    t += 1000;
    const r = store.vms.recordBoot(v.id);
    expect(r.bootCount).toBe(2);
    expect(r.lastStartedAt).toBe('2025-01-01T00:00:02.000Z');
    expect(r.updatedAt).toBe(r.lastStartedAt);
  });

  it('delete returns whether a row went away', () => {
    const { imageId } = seed();
    const v = store.vms.insert(vm(imageId, 'dev'));
    expect(store.vms.delete(v.id)).toBe(true);
    expect(store.vms.delete(v.id)).toBe(false);
    expect(store.vms.list()).toEqual([]);
  });

  it('nextFreeGuestIp skips the network address, reserved and used addresses', () => {
    const { imageId } = seed();
    expect(store.vms.nextFreeGuestIp('172.16.0.0/24', ['172.16.0.1'])).toBe('172.16.0.2');
    store.vms.insert(vm(imageId, 'a', { guestIp: '172.16.0.2' }));
    store.vms.insert(vm(imageId, 'b', { guestIp: '172.16.0.4' }));
    expect(store.vms.nextFreeGuestIp('172.16.0.0/24', ['172.16.0.1'])).toBe('172.16.0.3');
    expect(store.vms.nextFreeGuestIp('172.16.0.77/24', ['172.16.0.1', '172.16.0.3'])).toBe('172.16.0.5');
    // A /30 has two hosts: .1 reserved, .2 used -> full.
    expect(
      isStoreError(
        caught(() => store.vms.nextFreeGuestIp('172.16.0.0/30', ['172.16.0.1'])),
        'exhausted',
      ),
    ).toBe(true);
    expect(() => store.vms.nextFreeGuestIp('172.16.0.0/33')).toThrow(RangeError);
    expect(() => store.vms.nextFreeGuestIp('300.1.1.0/24')).toThrow(RangeError);
  });
});

describe('operations', () => {
  function op(id: string, extra: { kind?: string; vmName?: string } = {}) {
    return store.operations.insert({ id, kind: extra.kind ?? 'vm.create', method: 'vm.create', ...extra });
  }

  it('inserts running with empty steps; updates steps and state; finishes', () => {
    const o = op('op-000000000001', { vmName: 'dev' });
    expect(o).toEqual({
      id: 'op-000000000001',
      kind: 'vm.create',
      method: 'vm.create',
      state: 'running',
      vmId: null,
      vmName: 'dev',
      imageName: null,
      startedAt: '2025-01-01T00:00:00.000Z',
      endedAt: null,
      steps: [],
      error: null,
      result: null,
    });
    const steps = [{ name: 'clone rootfs', state: 'done', duration_ms: 12 }];
    expect(store.operations.update(o.id, { steps, vmId: 'abc' })).toMatchObject({
      steps,
      vmId: 'abc',
      state: 'running',
    });
    t += 5000;
    const done = store.operations.finish(o.id, {
      state: 'failed',
      error: { code: 'operation_failed', message: 'x' },
    });
    expect(done).toMatchObject({
      state: 'failed',
      endedAt: '2025-01-01T00:00:05.000Z',
      steps,
      error: { code: 'operation_failed', message: 'x' },
      result: null,
    });
    expect(store.operations.get(o.id)).toEqual(done);
    expect(store.operations.get('op-missing')).toBeUndefined();
    expect(
      isStoreError(
        caught(() => store.operations.update('op-missing', { state: 'failed' })),
        'not_found',
      ),
    ).toBe(true);
    expect(isUniqueViolation(caught(() => op(o.id)))).toBe(true);
    expect(
      isCheckViolation(caught(() => store.operations.update(o.id, { state: 'paused' as 'running' }))),
    ).toBe(true);
  });

  it('lists newest first with filters and a limit', () => {
    op('op-a', { kind: 'vm.create', vmName: 'dev' });
    t += 1000;
    op('op-b', { kind: 'vm.stop', vmName: 'dev' });
    t += 1000;
    op('op-c', { kind: 'vm.create', vmName: 'web' });
    t += 1000;
    op('op-d', { kind: 'image.build' });
    store.operations.finish('op-a', { state: 'succeeded' });
    store.operations.finish('op-b', { state: 'failed' });
    store.operations.finish('op-c', { state: 'canceled' });

    const ids = (f: Parameters<Store['operations']['list']>[0]) => store.operations.list(f).map((o) => o.id);
    expect(ids({})).toEqual(['op-d', 'op-c', 'op-b', 'op-a']);
    expect(ids({ limit: 2 })).toEqual(['op-d', 'op-c']);
    expect(ids({ limit: 0 })).toHaveLength(4);
    expect(ids({ state: 'running' })).toEqual(['op-d']);
    expect(ids({ kind: 'vm.create' })).toEqual(['op-c', 'op-a']);
    expect(ids({ vmName: 'dev' })).toEqual(['op-b', 'op-a']);
    expect(ids({ failedOnly: true })).toEqual(['op-b']);
    expect(ids({ failedOnly: true, vmName: 'web' })).toEqual([]);
    expect(ids({ since: '2025-01-01T00:00:01.000Z' })).toEqual(['op-d', 'op-c', 'op-b']);
    expect(ids({ since: new Date(t), kind: 'image.build' })).toEqual(['op-d']);
  });

  it('failInterrupted fails every running operation', () => {
    op('op-1');
    op('op-2');
    store.operations.finish('op-2', { state: 'succeeded', result: { ok: true } });
    t += 1000;
    expect(store.operations.failInterrupted({ code: 'operation_failed', message: 'bangerd restarted' })).toBe(
      1,
    );
    expect(store.operations.get('op-1')).toMatchObject({
      state: 'failed',
      endedAt: '2025-01-01T00:00:01.000Z',
      error: { message: 'bangerd restarted' },
    });
    expect(store.operations.get('op-2')?.result).toEqual({ ok: true });
  });

  it('retention: prunes by count and by age, never running operations', () => {
    for (let i = 0; i < 10; i++) {
      op(`op-${i}`);
      if (i !== 0) store.operations.finish(`op-${i}`, { state: i % 2 ? 'succeeded' : 'failed' });
      t += DAY;
    }
    // op-0 (oldest) is still running; op-1 .. op-9 ended one day apart.
    expect(store.pruneOperations({})).toBe(0);
    expect(store.pruneOperations({ maxCount: 6 })).toBe(3); // op-1..op-3 go; op-0 is running
    expect(store.operations.list().map((o) => o.id)).toEqual([
      'op-9',
      'op-8',
      'op-7',
      'op-6',
      'op-5',
      'op-4',
      'op-0',
    ]);
    // op-0 is the oldest but still running: kept, outside the count.
    expect(store.pruneOperations({ maxCount: 6 })).toBe(0);
    // now = day 10; op-i ended on day i. More than 3.5 days ago: op-4, op-5, op-6.
    expect(store.operations.prune({ maxAgeDays: 3.5 })).toBe(3);
    expect(store.operations.list().map((o) => o.id)).toEqual(['op-9', 'op-8', 'op-7', 'op-0']);
    expect(store.pruneOperations({ maxCount: 0, maxAgeDays: 100 })).toBe(3);
    expect(store.operations.list().map((o) => o.id)).toEqual(['op-0']);
  });
});

describe('settings', () => {
  it('gets, sets (upsert), deletes, lists', () => {
    expect(store.settings.get('x')).toBeUndefined();
    store.settings.set('x', '1');
    store.settings.set('x', '2');
    store.settings.set('a', 'z');
    expect(store.settings.get('x')).toBe('2');
    expect(store.settings.all()).toEqual({ a: 'z', x: '2' });
    expect(store.settings.delete('x')).toBe(true);
    expect(store.settings.delete('x')).toBe(false);
  });
});

describe('transactions', () => {
  it('rolls back everything on throw; nested failures roll back only the inner part', () => {
    const { imageId } = seed();
    expect(() =>
      store.transaction(() => {
        store.vms.insert(vm(imageId, 'a'));
        throw new Error('abort');
      }),
    ).toThrow('abort');
    expect(store.vms.list()).toEqual([]);

    store.transaction(() => {
      store.vms.insert(vm(imageId, 'outer'));
      expect(() =>
        store.transaction(() => {
          store.vms.insert(vm(imageId, 'inner'));
          store.vms.insert(vm(imageId, 'inner')); // duplicate -> throws
        }),
      ).toThrow();
    });
    expect(store.vms.list().map((v) => v.name)).toEqual(['outer']);
    expect(store.db.isTransaction).toBe(false);
  });

  it('refuses an async callback', () => {
    expect(() => store.transaction(async () => undefined)).toThrow(/synchronous/);
    expect(store.db.isTransaction).toBe(false);
  });

  it('repository transactions join an outer one (setDefault inside a rolled-back transaction)', () => {
    const { kernelId, imageId } = seed();
    const other = store.images.insert({
      name: 'other',
      kernelId,
      rootfsPath: '/o',
      sizeBytes: 1,
      source: 'built',
    });
    expect(() =>
      store.transaction(() => {
        store.images.setDefault(other.id);
        throw new Error('nope');
      }),
    ).toThrow('nope');
    expect(store.images.getDefault()?.id).toBe(imageId);
  });
});
