import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RECIPE } from '../../src/image/recipe.ts';
import {
  generateCustomizeScript,
  hasSubordinateIds,
  mmdebstrapArgv,
  parseDebugfsStat,
} from '../../src/image/rootfs.ts';

describe('mmdebstrapArgv', () => {
  const argv = mmdebstrapArgv({ recipe: DEFAULT_RECIPE, mode: 'unshare', hook: '/tmp/x/customize.sh' });

  it('builds a minbase tarball on stdout with the package list and hook', () => {
    expect(argv.slice(0, 4)).toEqual(['mmdebstrap', '--mode=unshare', '--variant=minbase', '--format=tar']);
    expect(argv).toContain(`--include=${DEFAULT_RECIPE.packages.join(',')}`);
    expect(argv).toContain('--customize-hook=/tmp/x/customize.sh');
    expect(argv).toContain('--dpkgopt=path-exclude=/usr/share/man/*');
    expect(argv).toContain('--dpkgopt=path-include=/usr/share/doc/*/copyright');
    const suite = argv.indexOf('bookworm');
    expect(argv[suite + 1]).toBe('-');
    expect(argv.slice(suite + 2)).toHaveLength(DEFAULT_RECIPE.sources.length);
    expect(DEFAULT_RECIPE.packages).toContain('qemu-guest-agent');
  });
});

describe('generateCustomizeScript', () => {
  const script = generateCustomizeScript(DEFAULT_RECIPE);

  it('installs every guest file root-owned with its mode', () => {
    for (const f of DEFAULT_RECIPE.guestFiles) {
      expect(script).toContain(
        `-m ${f.mode.toString(8).padStart(4, '0')} -o 0 -g 0 "$here/guest/"${f.src} "$root"${f.dest}`,
      );
    }
  });

  it('removes per-VM identity and enables/masks units', () => {
    expect(script).toContain(': > "$root/etc/machine-id"');
    expect(script).toContain('rm -f "$root"/etc/ssh/ssh_host_*');
    expect(script).toContain('passwd -l root');
    expect(script).toMatch(/systemctl enable .*systemd-networkd\.service systemd-network-generator\.service/);
    expect(script).toMatch(/systemctl mask .*getty@tty1\.service .*systemd-networkd-wait-online\.service/);
    expect(script).toContain('serial-getty@ttyS0.service');
    expect(generateCustomizeScript({ ...DEFAULT_RECIPE, serialGetty: true })).not.toContain(
      'serial-getty@ttyS0',
    );
  });

  it('is valid sh', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bg-cust-'));
    try {
      writeFileSync(join(dir, 'c.sh'), script);
      execFileSync('sh', ['-n', join(dir, 'c.sh')]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('build mode helpers', () => {
  it('reads /etc/subuid ranges by name or uid', () => {
    const text = 'alice:100000:65536\n1001:165536:65536\nbob:231072:1000\n';
    expect(hasSubordinateIds(text, 'alice', 1000)).toBe(true);
    expect(hasSubordinateIds(text, 'carol', 1001)).toBe(true);
    expect(hasSubordinateIds(text, 'bob', 1002)).toBe(false);
    expect(hasSubordinateIds('', 'alice', 1000)).toBe(false);
  });

  it('parses debugfs stat output', () => {
    const out = `Inode: 206   Type: regular    Mode:  0640   Flags: 0x80000
Generation: 0    Version: 0x00000000:00000000
User:     0   Group:    42   Project:     0   Size: 524
`;
    expect(parseDebugfsStat(out)).toEqual({ type: 'regular', mode: 0o640, uid: 0, gid: 42 });
    const dev =
      'Inode: 18   Type: character special    Mode:  0666   Flags: 0x0\nUser:     0   Group:     0   Size: 0\n';
    expect(parseDebugfsStat(dev)).toEqual({ type: 'character special', mode: 0o666, uid: 0, gid: 0 });
    expect(parseDebugfsStat('stat: File not found by ext2_lookup')).toBeUndefined();
    expect(
      parseDebugfsStat(
        'Inode: 761   Type: regular    Mode:  04755   Flags: 0x80000\nUser:     0   Group:     0\n',
      )?.mode,
    ).toBe(0o4755);
  });
});
