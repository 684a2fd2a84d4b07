// Migration 8 (vms.egress, vms.secrets, vms.egress_op_id) and the VM row's egress fields.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseEgress } from '../../src/egress/rules.ts';
import { openStore } from '../../src/store/db.ts';
import type { Store } from '../../src/store/store.ts';

let dir: string;
let store: Store;
let imageId: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-store-egress-'));
  store = openStore(join(dir, 'banger.db'));
  const k = store.kernels.insert({ name: 'k', version: '6.1.0', kernelPath: '/k/vmlinux', source: 'built' });
  imageId = store.images.insert({
    name: 'debian',
    kernelId: k.id,
    rootfsPath: '/i/d.ext4',
    sizeBytes: 2 ** 30,
    source: 'built',
  }).id;
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const base = {
  vcpus: 1,
  memoryMib: 512,
  diskSizeBytes: 2 ** 30,
  networkMode: 'user',
  mac: '02:00:00:00:00:01',
};

describe('vms egress columns', () => {
  it('a VM recorded without a policy reaches everything and has no secrets', () => {
    const v = store.vms.insert({ ...base, name: 'a', imageId });
    expect(v.egress).toEqual({ mode: 'all', rules: [] });
    expect(v.secrets).toEqual([]);
    expect(v.egressOpId).toBeNull();
  });

  it('stores the policy, secrets and op id, and updates them', () => {
    const egress = parseEgress('allow=*.npmjs.org:443,10.0.0.0/8');
    const v = store.vms.insert({
      ...base,
      name: 'b',
      imageId,
      egress,
      secrets: [{ name: 'API_KEY', hosts: ['api.test'], placeholder: 'banger-secret-x' }],
      egressOpId: 'op-0123456789ab',
    });
    expect(store.vms.getById(v.id)?.egress).toEqual(egress);
    expect(store.vms.getById(v.id)?.secrets).toEqual([
      { name: 'API_KEY', hosts: ['api.test'], placeholder: 'banger-secret-x' },
    ]);
    const u = store.vms.update(v.id, { egress: parseEgress('none'), egressOpId: 'op-abcdef012345' });
    expect(u.egress).toEqual({ mode: 'none', rules: [] });
    expect(u.egressOpId).toBe('op-abcdef012345');
    expect(u.secrets).toHaveLength(1);
  });

  it('a damaged stored policy reads as none (fail closed), never as all', () => {
    const v = store.vms.insert({ ...base, name: 'c', imageId, egress: parseEgress('allow=a.test') });
    for (const bad of [
      '{"mode":"allow","rules":[{"text":"*.*.com"}]}',
      '{"mode":"open"}',
      '[]',
      '{"mode":"allow"}',
    ]) {
      store.db.prepare('UPDATE vms SET egress = ? WHERE id = ?').run(bad, v.id);
      expect(store.vms.getById(v.id)?.egress).toEqual({ mode: 'none', rules: [] });
    }
  });

  it('migration 8 gives existing rows the policy all', () => {
    const cols = store.db.prepare('PRAGMA table_info(vms)').all() as { name: string; dflt_value: unknown }[];
    expect(cols.find((c) => c.name === 'egress')?.dflt_value).toBe(`'{"mode":"all","rules":[]}'`);
    expect(cols.find((c) => c.name === 'secrets')?.dflt_value).toBe(`'[]'`);
    expect(cols.some((c) => c.name === 'egress_op_id')).toBe(true);
  });
});
