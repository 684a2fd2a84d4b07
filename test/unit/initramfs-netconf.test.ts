import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { INIT_NETCONF_SH } from '../../src/image/initramfs.ts';

const dir = mkdtempSync(join(tmpdir(), 'bg-netconf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A fake `ip` that records its arguments; `say` prints like /init's.
writeFileSync(join(dir, 'ip'), `#!/bin/sh\necho "ip $*" >> "${join(dir, 'calls')}"\n`);
chmodSync(join(dir, 'ip'), 0o755);

function netconf(...confs: string[]): { calls: string[]; out: string } {
  writeFileSync(join(dir, 'calls'), '');
  const script = [
    'say() { echo "banger-initramfs: $*"; }',
    INIT_NETCONF_SH,
    ...confs.map((c) => `netconf '${c}'`),
  ].join('\n');
  const out = execFileSync('sh', ['-c', script], {
    encoding: 'utf8',
    env: { PATH: `${dir}:/usr/bin:/bin` },
  });
  const calls = readFileSync(join(dir, 'calls'), 'utf8').split('\n').filter(Boolean);
  return { calls, out };
}

describe('the initramfs static ip= setup', () => {
  it('sets address, link and default route for banger’s user-mode ip=', () => {
    expect(netconf('10.0.2.15::10.0.2.2:255.255.255.0:calm-otter:eth0:off:10.0.2.3').calls).toEqual([
      'ip link set lo up',
      'ip addr add 10.0.2.15/24 dev eth0',
      'ip link set eth0 up',
      'ip route add default via 10.0.2.2 dev eth0 proto static',
    ]);
  });

  it('takes a prefix length as the mask, defaults the device, and needs no gateway', () => {
    expect(netconf('172.30.0.7:::16::').calls).toEqual([
      'ip link set lo up',
      'ip addr add 172.30.0.7/16 dev eth0',
      'ip link set eth0 up',
    ]);
  });

  it('leaves dhcp, IPv6 and bad masks to systemd-networkd', () => {
    expect(netconf('dhcp').calls).toEqual([]);
    expect(netconf('10.0.0.2::10.0.0.1:255.255.255.0:h:eth0:dhcp').calls).toEqual([]);
    expect(netconf('[fd00::2]::[fd00::1]:64:h:eth0:off').calls).toEqual([]);
    const bad = netconf('10.0.0.2::10.0.0.1:255.0.255.0:h:eth0:off');
    expect(bad.calls).toEqual([]);
    expect(bad.out).toContain("warning: ip=: bad netmask '255.0.255.0'");
    expect(netconf('10.0.0.2::10.0.0.1::h:eth0:off').calls).toEqual([]);
  });
});
