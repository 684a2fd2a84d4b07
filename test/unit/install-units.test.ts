// The systemd units of `banger system install`, by content and with systemd-analyze verify, and
// the install/uninstall file flow against a temporary root directory (systemd does not run here).
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  lookupOwner,
  readInstalledOwner,
  removeInstallFiles,
  verifyUnits,
  writeInstallFiles,
} from '../../src/install/install.ts';
import { daemonUnit, helperUnit, installToml, type UnitFacts } from '../../src/install/units.ts';
import { parse } from 'smol-toml';
import { shortTempDir } from '../helpers/tmp.ts';

const facts: UnitFacts = {
  binDir: '/opt/banger/bin',
  owner: 'alice',
  ownerGroup: 'alice',
  ownerUid: 1000,
  pool: '10.213.0.0/16',
};

/** key → values of a unit file's [Service] section. */
function directives(unit: string, section = 'Service'): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur = '';
  for (const line of unit.split('\n')) {
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) cur = s[1]!;
    else if (cur === section && /^\w+=/.test(line)) {
      const k = line.slice(0, line.indexOf('='));
      out.set(k, [...(out.get(k) ?? []), line.slice(line.indexOf('=') + 1)]);
    }
  }
  return out;
}

describe('unit files', () => {
  it('bangerd-root.service is root and hardened, with KillMode=process', () => {
    const d = directives(helperUnit(facts));
    expect(d.get('User')).toBeUndefined();
    expect(d.get('ExecStart')).toEqual([
      '/opt/banger/bin/bangerd-root --socket /run/banger-root/bangerd-root.sock --owner-uid 1000 --pool 10.213.0.0/16',
    ]);
    expect(d.get('NoNewPrivileges')).toEqual(['yes']);
    expect(d.get('ProtectSystem')).toEqual(['strict']);
    expect(d.get('CapabilityBoundingSet')).toEqual(['CAP_NET_ADMIN CAP_CHOWN CAP_SYSLOG']);
    expect(d.get('KillMode')).toEqual(['process']);
    expect(d.get('PrivateTmp')).toEqual(['yes']);
    expect(d.get('DevicePolicy')).toEqual(['closed']);
    // The kernel log, read-only: egress denials of bridged VMs (src/hostnet/egress-log.ts).
    expect(d.get('DeviceAllow')).toEqual(['/dev/net/tun rw', '/dev/kmsg r']);
    expect(d.get('ProtectKernelLogs')).toBeUndefined();
    expect(d.get('RestrictAddressFamilies')).toEqual(['AF_UNIX AF_NETLINK AF_INET AF_INET6']);
    // NAT writes net.ipv4.ip_forward: /proc/sys must stay writable.
    expect(d.get('ProtectKernelTunables')).toBeUndefined();
    expect(directives(helperUnit(facts), 'Install').get('WantedBy')).toEqual(['multi-user.target']);
  });

  it('bangerd.service runs as the owner with no capabilities, after the helper, KillMode=process', () => {
    const unit = daemonUnit(facts);
    const d = directives(unit);
    expect(d.get('User')).toEqual(['alice']);
    expect(d.get('Group')).toEqual(['alice']);
    expect(d.get('KillMode')).toEqual(['process']);
    expect(d.get('NoNewPrivileges')).toEqual(['yes']);
    expect(d.get('CapabilityBoundingSet')).toEqual(['']);
    expect(d.get('StateDirectory')).toEqual(['banger']);
    expect(d.get('ExecStart')![0]).toContain('--helper-socket /run/banger-root/bangerd-root.sock');
    expect(directives(unit, 'Unit').get('After')![0]).toContain('bangerd-root.service');
  });

  it('refuses values that would break a unit line', () => {
    expect(() => helperUnit({ ...facts, binDir: '/opt/my banger/bin' })).toThrow(/unsupported path/);
    expect(() => daemonUnit({ ...facts, owner: 'root\nUser=root' })).toThrow(/unsupported owner/);
  });

  it('install.toml records the owner for bangerd-root', () => {
    const t = parse(installToml({ ...facts, version: '0.1.0', installedAt: '2026-01-01T00:00:00.000Z' }));
    expect(t).toMatchObject({ owner: 'alice', owner_uid: 1000, network_pool: '10.213.0.0/16' });
  });
});

describe('install flow into a temporary root', () => {
  const tmp = shortTempDir('bgi');
  afterAll(() => tmp.cleanup());

  it('writes the units, install.toml and a config it then keeps; uninstall --purge removes it all', async () => {
    const root = join(tmp.dir, 'root');
    const owner = await lookupOwner('root');
    expect(owner).toMatchObject({ uid: 0, gid: 0, group: 'root' });
    const plan = { root, version: '0.1.0', facts };
    const first = await writeInstallFiles(plan);
    expect(first.map((f) => [f.path.slice(root.length), f.action])).toEqual([
      ['/etc/systemd/system/bangerd-root.service', 'written'],
      ['/etc/systemd/system/bangerd.service', 'written'],
      ['/etc/banger/install.toml', 'written'],
      ['/etc/banger/config.toml', 'written'],
    ]);
    expect(statSync(join(root, 'etc/systemd/system/bangerd.service')).mode & 0o777).toBe(0o644);
    expect(await readInstalledOwner(root)).toBe('alice');
    writeFileSync(join(root, 'etc/banger/config.toml'), 'network = "user"\n');
    const second = await writeInstallFiles(plan);
    expect(second.find((f) => f.path.endsWith('config.toml'))!.action).toBe('kept');
    expect(readFileSync(join(root, 'etc/banger/config.toml'), 'utf8')).toBe('network = "user"\n');

    mkdirSync(join(root, 'var/lib/banger/vms'), { recursive: true });
    const plain = await removeInstallFiles(root, false);
    expect(plain.filter((f) => f.action === 'removed')).toHaveLength(3);
    expect(existsSync(join(root, 'etc/banger/config.toml'))).toBe(true);
    expect(existsSync(join(root, 'var/lib/banger/vms'))).toBe(true);
    const purge = await removeInstallFiles(root, true);
    expect(purge.filter((f) => f.action === 'removed').map((f) => f.path.slice(root.length))).toEqual([
      '/etc/banger',
      '/var/lib/banger',
    ]);
    expect(existsSync(join(root, 'var/lib/banger'))).toBe(false);
  });

  it('systemd-analyze verify finds nothing wrong with either unit (when it is installed)', async (ctx) => {
    const dir = join(tmp.dir, 'verify');
    mkdirSync(dir, { recursive: true });
    // verify resolves ExecStart binaries: point them at this checkout's bin/.
    const real = { ...facts, binDir: join(process.cwd(), 'bin') };
    writeFileSync(join(dir, 'bangerd-root.service'), helperUnit(real));
    writeFileSync(join(dir, 'bangerd.service'), daemonUnit({ ...real, owner: 'root', ownerGroup: 'root' }));
    const r = await verifyUnits([join(dir, 'bangerd-root.service'), join(dir, 'bangerd.service')]);
    if (!r) return ctx.skip('systemd-analyze is not installed');
    expect(r.output).toBe('');
    expect(r.ok).toBe(true);
  });

  it('lookupOwner refuses unknown and malformed names', async () => {
    await expect(lookupOwner('no-such-user-here')).rejects.toThrow(/no such user/);
    await expect(lookupOwner('../etc')).rejects.toThrow(/invalid user name/);
  });
});
