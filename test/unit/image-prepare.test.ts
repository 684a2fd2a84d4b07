import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.ts';
import { generateInitScript, PREP_LABEL } from '../../src/image/initramfs.ts';
import { parseInstalled, parsePrepareExit } from '../../src/image/prepare.ts';
import {
  BOOTABLE_PACKAGES,
  checkPackageName,
  derivedCacheKey,
  familyOf,
  generatePrepareScript,
  installedPackages,
  missingPackages,
  parseOsRelease,
  rewriteLoopbackSources,
  unsupportedFamilyMessage,
} from '../../src/image/prepare-script.ts';

function shSyntaxOk(text: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'bg-prep-'));
  try {
    writeFileSync(join(dir, 's'), text);
    execFileSync('sh', ['-n', join(dir, 's')]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('initramfs prepare mode', () => {
  const init = generateInitScript({
    modules: ['virtio_blk.ko'],
    rootLabel: 'banger-root',
    seedLabel: 'banger-seed',
  });

  it('has a banger.prepare branch after the root mount and before switch_root', () => {
    expect(init).toContain('banger.prepare) prepare=1 ;;');
    const mountAt = init.indexOf('mount -t "$fstype"');
    const branchAt = init.indexOf('[ "$prepare" = 1 ] && prepare_run');
    expect(mountAt).toBeGreaterThan(0);
    expect(branchAt).toBeGreaterThan(mountAt);
    expect(branchAt).toBeLessThan(init.indexOf('exec switch_root'));
  });

  it('finds the prepare disk by label, chroots prepare.sh, prints the exit marker, then powers off', () => {
    expect(init).toContain(`findfs LABEL=${PREP_LABEL}`);
    expect(init).toContain('mount --bind /prep /newroot/.banger-prep');
    expect(init).toContain('chroot /newroot /bin/sh /.banger-prep/prepare.sh');
    for (const m of ['proc', 'sys', 'dev', 'dev/pts', 'run', 'tmp']) expect(init).toContain(` /newroot/${m}`);
    const marker = init.indexOf('echo "banger-prepare-exit=$rc"');
    expect(marker).toBeGreaterThan(init.indexOf('umount /newroot'));
    expect(init.indexOf('poweroff -f', marker)).toBeGreaterThan(marker);
    shSyntaxOk(init);
  });
});

describe('prepare exit marker and installed line', () => {
  it('takes the last marker line; none is null', () => {
    expect(parsePrepareExit('x\nbanger-prepare-exit=3\r\nmore\nbanger-prepare-exit=0\n')).toBe(0);
    expect(parsePrepareExit('banger-prepare-exit=100\n')).toBe(100);
    expect(parsePrepareExit('echo "banger-prepare-exit=$rc"\nkernel panic')).toBeNull();
  });

  it('parses what apt installed', () => {
    expect(parseInstalled('a\nbanger-prepare: installed: udev dbus\nb')).toEqual(['udev', 'dbus']);
    expect(parseInstalled('no apt here')).toEqual([]);
  });
});

describe('image family', () => {
  it('reads os-release, quoted or not', () => {
    const os = parseOsRelease(
      'PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n',
    );
    expect(os).toEqual({
      id: 'ubuntu',
      idLike: ['debian'],
      versionId: '24.04',
      prettyName: 'Ubuntu 24.04 LTS',
    });
  });

  it('knows the Debian family by ID or ID_LIKE and nothing else', () => {
    expect(familyOf(parseOsRelease('ID=debian'))).toBe('debian');
    expect(familyOf(parseOsRelease('ID=linuxmint\nID_LIKE="ubuntu debian"'))).toBe('debian');
    expect(familyOf(parseOsRelease('ID=alpine'))).toBe('unsupported');
    expect(familyOf(parseOsRelease('ID=fedora'))).toBe('unsupported');
  });

  it('tells other families what they need', () => {
    const fedora = unsupportedFamilyMessage(parseOsRelease('ID=fedora\nPRETTY_NAME="Fedora Linux 40"'));
    expect(fedora).toContain('fedora (Fedora Linux 40) is not supported');
    expect(fedora).toContain('dnf install systemd openssh-server');
    expect(unsupportedFamilyMessage(parseOsRelease('ID=alpine'))).toContain('Alpine has no systemd');
  });
});

describe('what is missing', () => {
  const status = [
    'Package: udev\nStatus: install ok installed\nVersion: 252',
    'Package: dbus\nStatus: deinstall ok config-files\nVersion: 1',
    'Package: openssh-server\nStatus: install ok not-installed',
    'Package: e2fsprogs\nEssential: no\nStatus: install ok installed',
  ].join('\n\n');

  it('counts only installed packages', () => {
    expect([...installedPackages(status)].sort()).toEqual(['e2fsprogs', 'udev']);
  });

  it('lists the wanted packages that are not installed, in order', () => {
    expect(missingPackages(installedPackages(status), BOOTABLE_PACKAGES.required)).toEqual([
      'systemd-sysv',
      'dbus',
      'openssh-server',
      'iproute2',
    ]);
  });
});

describe('apt_sources', () => {
  it('rewrites loopback hosts to the user-mode network’s host alias', () => {
    expect(
      rewriteLoopbackSources(
        'deb [trusted=yes] http://127.0.0.1:8787/ ./\n\n# c\ndeb http://localhost/debian bookworm main\n' +
          'deb http://[::1]:80/x ./\ndeb http://127.0.0.10.example.com/ ./\ndeb http://deb.debian.org/debian bookworm main',
      ),
    ).toEqual([
      'deb [trusted=yes] http://10.0.2.2:8787/ ./',
      'deb http://10.0.2.2/debian bookworm main',
      'deb http://10.0.2.2:80/x ./',
      'deb http://127.0.0.10.example.com/ ./',
      'deb http://deb.debian.org/debian bookworm main',
    ]);
  });

  it('moves the image’s sources aside and writes the rewritten ones', () => {
    const s = generatePrepareScript({
      install: ['udev'],
      aptSources: 'deb [trusted=yes] http://127.0.0.1:8787/ ./',
      customize: false,
      userScript: false,
    });
    expect(s).toContain('mv /etc/apt/sources.list /etc/apt/banger-prep-saved/');
    expect(s).toContain('deb [trusted=yes] http://10.0.2.2:8787/ ./');
    expect(s).toContain('mv /etc/apt/banger-prep-saved/sources.list /etc/apt/sources.list');
    shSyntaxOk(s);
  });

  it('is a config key of [images], checked', () => {
    expect(
      parseConfig('[images]\napt_sources = "deb [trusted=yes] http://127.0.0.1:8787/ ./"').images,
    ).toEqual({
      apt_sources: 'deb [trusted=yes] http://127.0.0.1:8787/ ./',
    });
    expect(parseConfig('').images).toEqual({});
    expect(() => parseConfig('[images]\napt_sources = "http://x"')).toThrow(/deb/);
    expect(() => parseConfig('[images]\nmirror = "x"')).toThrow(/images.mirror/);
  });
});

describe('the prepare script', () => {
  it('installs the missing packages without recommends, the optional ones when available', () => {
    const s = generatePrepareScript({
      install: ['systemd-sysv', 'openssh-server'],
      optional: ['qemu-guest-agent'],
      customize: true,
      userScript: false,
    });
    expect(s).toContain('APT::Install-Recommends=false');
    expect(s).toContain('want="systemd-sysv openssh-server"');
    expect(s).toContain('for p in qemu-guest-agent; do');
    expect(s).toContain('exit 101'); // policy-rc.d: no daemon starts
    expect(s).toContain('sh "$P/customize.sh" /');
    expect(s).toContain(': > /etc/machine-id');
    expect(s).toContain('rm -rf /var/lib/apt/lists/*');
    expect(s).not.toContain('cat > /etc/apt/sources.list.d/banger-prepare.list');
    shSyntaxOk(s);
  });

  it('skips apt entirely when nothing is missing', () => {
    const s = generatePrepareScript({ install: [], customize: true, userScript: false });
    expect(s).not.toContain('$APT update');
    expect(s).not.toContain('apt-get update');
    shSyntaxOk(s);
  });

  it('runs a derived build’s script after its packages, and grows the root first', () => {
    const s = generatePrepareScript({
      install: ['python3'],
      customize: false,
      userScript: true,
      growRoot: true,
    });
    expect(s.indexOf('resize2fs')).toBeLessThan(s.indexOf('install $want'));
    expect(s.indexOf('install $want')).toBeLessThan(s.indexOf('$P/run-script'));
    shSyntaxOk(s);
  });

  it('refuses anything but package names', () => {
    expect(checkPackageName('python3=3.11.2-1')).toBe('python3=3.11.2-1');
    expect(checkPackageName('libc6:amd64')).toBe('libc6:amd64');
    for (const bad of ['a;rm -rf /', '-o', 'Foo', 'x y', '$(id)'])
      expect(() => generatePrepareScript({ install: [bad], customize: false, userScript: false })).toThrow();
  });
});

describe('derived cache key', () => {
  const k = (base: string, packages: string[], script: string): string =>
    derivedCacheKey({ base, packages, script });

  it('ignores package order and duplicates', () => {
    expect(k('sha256:aa', ['b', 'a', 'a'], '')).toBe(k('sha256:aa', ['a', 'b'], ''));
  });

  it('changes with the base, a package or the script', () => {
    const base = k('sha256:aa', ['python3'], 'echo hi\n');
    expect(k('sha256:bb', ['python3'], 'echo hi\n')).not.toBe(base);
    expect(k('sha256:aa', ['python3', 'make'], 'echo hi\n')).not.toBe(base);
    expect(k('sha256:aa', ['python3'], 'echo ho\n')).not.toBe(base);
    expect(base).toMatch(/^[0-9a-f]{64}$/);
  });
});
