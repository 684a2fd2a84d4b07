// The secret store (0600 files in a 0700 dir, atomic replace), --secret parsing, and the header
// substitution the proxy applies.
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  derivePlaceholder,
  grantCovers,
  loadPlaceholderKey,
  newPlaceholder,
  parseSecretGrant,
  SecretStore,
  substituteHeaders,
  type VmSecret,
} from '../../src/egress/secrets.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgsec');
afterAll(() => tmp.cleanup());

describe('SecretStore', () => {
  const store = new SecretStore(join(tmp.dir, 'secrets'));

  it('set creates 0600 in a 0700 dir, a second set replaces and says so, no temp file left', async () => {
    expect(await store.set('API_KEY', 'sk-one')).toEqual({ created: true });
    expect(statSync(store.dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(store.dir, 'API_KEY')).mode & 0o777).toBe(0o600);
    expect(await store.set('API_KEY', 'sk-two')).toEqual({ created: false });
    expect(await store.get('API_KEY')).toBe('sk-two');
    expect(readdirSync(store.dir)).toEqual(['API_KEY']);
  });

  it('list, rm, and not_found for a missing one', async () => {
    await store.set('B_TOKEN', 'x');
    expect((await store.list()).map((s) => s.name)).toEqual(['API_KEY', 'B_TOKEN']);
    await store.rm('B_TOKEN');
    expect(await store.get('B_TOKEN')).toBeUndefined();
    await expect(store.rm('B_TOKEN')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('sweepTemp removes what a set killed before its rename left (it holds the value), nothing else', async () => {
    writeFileSync(join(store.dir, '.API_KEY.tmp-4242-abcd'), 'sk-leaked', { mode: 0o600 });
    expect(await store.sweepTemp()).toEqual(['.API_KEY.tmp-4242-abcd']);
    expect(readdirSync(store.dir)).toEqual(['API_KEY']);
    expect(await store.get('API_KEY')).toBe('sk-two');
  });

  it('get reads a secret once (the proxy asks per request); set and rm of this store invalidate it', async () => {
    const s = new SecretStore(join(tmp.dir, 'cached'));
    await s.set('C_KEY', 'sk-first');
    expect(await s.get('C_KEY')).toBe('sk-first');
    // Behind the store's back: a cached value does not read the file again.
    writeFileSync(join(s.dir, 'C_KEY'), 'sk-behind', { mode: 0o600 });
    expect(await s.get('C_KEY')).toBe('sk-first');
    await s.set('C_KEY', 'sk-second');
    expect(await s.get('C_KEY')).toBe('sk-second');
    await s.rm('C_KEY');
    expect(await s.get('C_KEY')).toBeUndefined();
    // A read that raced a set does not leave the old value cached.
    await s.set('C_KEY', 'sk-old');
    const racing = s.get('C_KEY');
    await s.set('C_KEY', 'sk-new');
    expect(['sk-old', 'sk-new']).toContain(await racing);
    expect(await s.get('C_KEY')).toBe('sk-new');
    const racingRm = s.get('C_KEY');
    await s.rm('C_KEY');
    await racingRm;
    expect(await s.get('C_KEY')).toBeUndefined();
  });

  it('reads all through a set see the old or the new value, and the new one is what stays cached', async () => {
    const s = new SecretStore(join(tmp.dir, 'interleaved'));
    await s.set('D_KEY', 'sk-old');
    const reads: Promise<string | undefined>[] = [];
    const setting = s.set('D_KEY', 'sk-new');
    let done = false;
    void setting.then(() => (done = true));
    // A read started at every turn of the event loop while the set writes, syncs and renames.
    while (!done) {
      reads.push(s.get('D_KEY'));
      await new Promise((r) => setImmediate(r));
    }
    expect(reads.length).toBeGreaterThan(1);
    for (const v of await Promise.all(reads)) expect(['sk-old', 'sk-new']).toContain(v);
    expect(await s.get('D_KEY')).toBe('sk-new');
  });

  it('a set that cannot rename leaves no temp copy of the value and the old state readable', async () => {
    const s = new SecretStore(join(tmp.dir, 'failing'));
    await s.set('E_KEY', 'sk-kept');
    // A directory where the secret would go: the rename over it fails.
    mkdirSync(join(s.dir, 'F_KEY'));
    await expect(s.set('F_KEY', 'sk-lost')).rejects.toThrow();
    expect(readdirSync(s.dir).sort()).toEqual(['E_KEY', 'F_KEY']);
    expect(await s.get('E_KEY')).toBe('sk-kept');
  });

  it('refuses bad names and values that could split a header, without quoting the value', async () => {
    for (const n of ['api_key', '1X', 'A-B', '', 'A/B', '../X'])
      await expect(store.set(n, 'v')).rejects.toThrow();
    for (const v of ['', 'a\nb', 'a\rb', 'a\0b']) {
      const err = await store.set('OK', v).catch((e: unknown) => e as Error);
      expect(err).toBeInstanceOf(Error);
      if (v) expect((err as Error).message).not.toContain(v);
    }
  });
});

describe('placeholders', () => {
  it('derived per VM and name from a 0600 install key that persists', async () => {
    const path = join(tmp.dir, 'egress', 'placeholder.key');
    const key = await loadPlaceholderKey(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(path, '..'))).toEqual(['placeholder.key']);
    expect(await loadPlaceholderKey(path)).toEqual(key);
    const p = derivePlaceholder(key, 'vm1', 'API_KEY');
    expect(p).toMatch(/^banger-secret-[0-9a-f]{32}$/);
    expect(derivePlaceholder(key, 'vm1', 'API_KEY')).toBe(p);
    expect(derivePlaceholder(key, 'vm2', 'API_KEY')).not.toBe(p);
    expect(derivePlaceholder(Buffer.alloc(32), 'vm1', 'API_KEY')).not.toBe(p);
  });
});

describe('--secret NAME@HOST[,HOST…]', () => {
  it('parses names and hosts; refuses the malformed', () => {
    expect(parseSecretGrant('API_KEY@api.test,API2.test')).toEqual({
      name: 'API_KEY',
      hosts: ['api.test', 'api2.test'],
    });
    expect(parseSecretGrant('K@*.example.com').hosts).toEqual(['*.example.com']);
    for (const bad of ['API_KEY', '@api.test', 'API_KEY@', 'API_KEY@a,,b', 'key@x', 'K@a b', 'K@http://x'])
      expect(() => parseSecretGrant(bad)).toThrow();
  });

  it('grantCovers: exact names, and *. for names below a domain only', () => {
    expect(grantCovers(['api.test'], 'API.test.')).toBe(true);
    expect(grantCovers(['api.test'], 'evil-api.test')).toBe(false);
    expect(grantCovers(['*.example.com'], 'a.b.example.com')).toBe(true);
    expect(grantCovers(['*.example.com'], 'example.com')).toBe(false);
    expect(grantCovers(['*.example.com'], 'badexample.com')).toBe(false);
  });
});

describe('substituteHeaders', () => {
  const s: VmSecret = { name: 'API_KEY', hosts: ['api.test'], placeholder: newPlaceholder() };
  const values = new Map([['API_KEY', 'sk-real']]);

  it('replaces the placeholder for a granted host, in every header that has it', () => {
    const r = substituteHeaders(
      ['Authorization', `Bearer ${s.placeholder}`, 'X-Key', s.placeholder, 'Accept', '*/*'],
      [s],
      'api.test',
      values,
    );
    expect(r).toEqual({
      ok: true,
      rawHeaders: ['Authorization', 'Bearer sk-real', 'X-Key', 'sk-real', 'Accept', '*/*'],
      used: ['API_KEY'],
    });
  });

  it('refuses the placeholder for any other host, and a secret no longer set', () => {
    expect(substituteHeaders(['Authorization', s.placeholder], [s], 'other.test', values)).toEqual({
      ok: false,
      name: 'API_KEY',
      reason: 'secret API_KEY not allowed for other.test',
    });
    const r = substituteHeaders(['Authorization', s.placeholder], [s], 'api.test', new Map());
    expect(r.ok).toBe(false);
  });

  it('leaves requests without placeholders untouched', () => {
    expect(substituteHeaders(['A', 'b'], [s], 'other.test', values)).toEqual({
      ok: true,
      rawHeaders: ['A', 'b'],
      used: [],
    });
  });
});
