import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  buildSeedImage,
  generateHostKey,
  knownHostsLine,
  randomMachineId,
  seedLayout,
  writeSeedDir,
} from '../../src/image/seed.ts';

const PRIV = '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n';
const PUB = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKv7 banger-guest';
const base = {
  authorizedKeys: 'ssh-ed25519 AAAAC3Nza user@host\n\n',
  hostKeyPrivate: PRIV,
  hostKeyPublic: PUB,
  hostname: 'dev-1',
  machineId: '0123456789abcdef0123456789abcdef',
};
const tmp = mkdtempSync(join(tmpdir(), 'bg-seed-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('seedLayout', () => {
  it('lays out the files the guest reads, with modes', () => {
    const l = seedLayout({
      ...base,
      nameservers: ['10.0.2.3'],
      files: [
        { path: '/etc/motd', content: 'hi\n' },
        { path: '/usr/local/bin/x', content: '#!/bin/sh\n', mode: 0o755 },
      ],
    });
    expect([...l.keys()].sort()).toEqual([
      'authorized_keys',
      'banger-seed.version',
      'files/etc/motd',
      'files/etc/resolv.conf',
      'files/usr/local/bin/x',
      'hostname',
      'machine-id',
      'ssh_host_ed25519_key',
      'ssh_host_ed25519_key.pub',
    ]);
    expect(l.get('authorized_keys')!.content.toString()).toBe('ssh-ed25519 AAAAC3Nza user@host\n');
    expect(l.get('authorized_keys')!.mode).toBe(0o600);
    expect(l.get('ssh_host_ed25519_key')!.mode).toBe(0o600);
    expect(l.get('machine-id')!.content.toString()).toBe(`${base.machineId}\n`);
    expect(l.get('files/etc/resolv.conf')!.content.toString()).toBe('nameserver 10.0.2.3\n');
    expect(l.get('files/usr/local/bin/x')!.mode).toBe(0o755);
    expect(l.get('banger-seed.version')!.content.toString()).toBe('1\n');
  });

  it('rejects bad input', () => {
    expect(() => seedLayout({ ...base, hostname: 'bad_name' })).toThrow(/hostname/);
    expect(() => seedLayout({ ...base, machineId: 'XYZ' })).toThrow(/machine-id/);
    expect(() => seedLayout({ ...base, machineId: '0'.repeat(32) })).toThrow(/machine-id/);
    expect(() => seedLayout({ ...base, authorizedKeys: [] })).toThrow(/authorized/);
    expect(() => seedLayout({ ...base, hostKeyPublic: 'ssh-rsa AAAA' })).toThrow(/ed25519/);
    expect(() => seedLayout({ ...base, files: [{ path: 'etc/x', content: '' }] })).toThrow(/absolute/);
    expect(() => seedLayout({ ...base, files: [{ path: '/etc/../x', content: '' }] })).toThrow(/\.\./);
  });

  it('writes the layout into a directory with exact modes', async () => {
    const dir = join(tmp, 'tree');
    execFileSync('mkdir', ['-p', dir]);
    await writeSeedDir(dir, seedLayout({ ...base, files: [{ path: '/a/b', content: 'x', mode: 0o640 }] }));
    expect(statSync(join(dir, 'authorized_keys')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'files/a/b')).mode & 0o777).toBe(0o640);
  });
});

describe('helpers', () => {
  it('randomMachineId looks like systemd’s', () => {
    const id = randomMachineId();
    expect(id).toMatch(/^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$/);
    expect(randomMachineId()).not.toBe(id);
  });

  it('knownHostsLine brackets non-22 ports and drops the comment', () => {
    expect(knownHostsLine('127.0.0.1', 2222, PUB)).toBe(
      '[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKv7',
    );
    expect(knownHostsLine('10.0.0.2', 22, PUB)).toBe('10.0.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKv7');
  });
});

const haveTools = ['/usr/sbin/mkfs.ext4', '/usr/bin/ssh-keygen', '/usr/sbin/debugfs'].every((p) =>
  existsSync(p),
);

describe.skipIf(!haveTools)('buildSeedImage (real mkfs.ext4)', () => {
  it('writes a small labelled ext4 image quickly', async () => {
    const hk = await generateHostKey('test');
    expect(hk.publicKey).toMatch(/^ssh-ed25519 \S+ test$/);
    const path = join(tmp, 'seed.ext4');
    const t0 = performance.now();
    await buildSeedImage({ ...base, hostKeyPrivate: hk.privateKey, hostKeyPublic: hk.publicKey, path });
    const ms = performance.now() - t0;
    expect(ms).toBeLessThan(2000);
    expect(statSync(path).size).toBe(4 * 1024 * 1024);
    const label = execFileSync('/usr/sbin/e2label', [path], { encoding: 'utf8' }).trim();
    expect(label).toBe('banger-seed');
    const ls = execFileSync('/usr/sbin/debugfs', ['-R', 'cat /hostname', path], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    expect(ls).toBe('dev-1\n');
  });
});
