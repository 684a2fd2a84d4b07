import { describe, expect, it } from 'vitest';
import { parseParagraphs } from '../../src/image/apt.ts';
import { CommandError } from '../../src/image/exec.ts';
import {
  archiveError,
  buildCatalog,
  defaultKernelName,
  catalogEntry,
  closeMatches,
  findInCatalog,
  naturalCompare,
  sourceUris,
} from '../../src/image/kernel-catalog.ts';

/** What `apt-cache show --no-all-versions` prints for bookworm's kernel packages (trimmed). */
const SHOW = `Package: linux-image-6.1.0-28-cloud-amd64
Source: linux-signed-amd64 (6.1.119+1)
Version: 6.1.119-1
Installed-Size: 93568
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Description: Linux 6.1 for x86-64 cloud
Section: kernel
Architecture: amd64
Filename: pool/main/l/linux-signed-amd64/linux-image-6.1.0-28-cloud-amd64_6.1.119-1_amd64.deb
Size: 38612344
SHA256: ${'a'.repeat(64)}

Package: linux-image-6.1.0-31-cloud-amd64
Version: 6.1.128-1
Installed-Size: 93600
Architecture: amd64
Size: 38700000
Description: Linux 6.1 for x86-64 cloud
 The Linux kernel 6.1 and modules for use on x86-64 cloud machines.

Package: linux-image-6.1.0-31-cloud-amd64-dbg
Version: 6.1.128-1
Architecture: amd64
Size: 900000000

Package: linux-image-6.1.0-31-amd64-unsigned
Version: 6.1.128-1
Architecture: amd64
Size: 70000000

Package: linux-image-6.1.0-31-amd64
Version: 6.1.128-1
Architecture: amd64
Size: 70000000

Package: linux-image-6.1.0-31-rt-amd64
Version: 6.1.128-1
Architecture: amd64
Size: 71000000

Package: linux-image-cloud-amd64
Version: 6.1.128-1
Architecture: amd64
Depends: linux-image-6.1.0-31-cloud-amd64 (= 6.1.128-1)

Package: linux-image-amd64-signed-template
Version: 6.1.128-1
Architecture: amd64

Package: linux-image-6.12.118+deb12-cloud-amd64
Version: 6.12.118-1~deb12u1
Architecture: amd64
Size: 34300000

Package: linux-image-6.12-cloud-amd64
Version: 6.12.118-1~deb12u1
Architecture: amd64
Size: 1500
Depends: linux-image-6.12.118+deb12-cloud-amd64 (= 6.12.118-1~deb12u1)

Package: linux-image-6.12-amd64-signed-template
Version: 6.12.118-1~deb12u1
Architecture: amd64
`;

describe('kernel catalog', () => {
  const paragraphs = parseParagraphs(SHOW);

  it('reads every paragraph, continuation lines included', () => {
    expect(paragraphs.map((p) => p.Package)).toHaveLength(11);
    expect(paragraphs[1]?.Description).toContain('\nThe Linux kernel 6.1');
  });

  it('keeps real kernels only: not -dbg, not the -unsigned twin, not meta or template packages', () => {
    expect(catalogEntry(paragraphs[0]!)).toEqual({
      release: '6.1.0-28-cloud-amd64',
      package: 'linux-image-6.1.0-28-cloud-amd64',
      version: '6.1.119-1',
      flavour: 'cloud-amd64',
      sizeBytes: 38612344,
      installedSizeBytes: 93568 * 1024,
      sha256: 'a'.repeat(64),
      latest: false,
      aliases: [],
    });
    // -dbg, -unsigned, the flavour meta, the signed template, a series meta, a series template
    for (const i of [2, 3, 6, 7, 9, 10]) expect(catalogEntry(paragraphs[i]!)).toBeUndefined();
    expect(catalogEntry({ Package: 'linux-image-6.1.0-31-arm64', Version: '1', Architecture: 'arm64' })).toBe(
      undefined,
    );
    // trixie names its ABI after the upstream version: 6.12.48+deb13-cloud-amd64
    expect(
      catalogEntry({ Package: 'linux-image-6.12.48+deb13-cloud-amd64', Version: '6.12.48-1' })?.flavour,
    ).toBe('cloud-amd64');
  });

  it('sorts by flavour then newest; latest from the meta package, else the newest of the flavour', () => {
    const c = buildCatalog(paragraphs);
    expect(c.map((e) => [e.release, e.latest, e.aliases])).toEqual([
      ['6.1.0-31-amd64', true, ['amd64']],
      ['6.12.118+deb12-cloud-amd64', false, ['6.12-cloud-amd64']],
      ['6.1.0-31-cloud-amd64', true, ['cloud-amd64']],
      ['6.1.0-28-cloud-amd64', false, []],
      ['6.1.0-31-rt-amd64', true, ['rt-amd64']],
    ]);
    // A meta package pointing at the older ABI wins over "newest".
    const pinned = buildCatalog([
      ...paragraphs.filter((p) => p.Package !== 'linux-image-cloud-amd64'),
      { Package: 'linux-image-cloud-amd64', Version: '1', Depends: 'linux-image-6.1.0-28-cloud-amd64' },
    ]);
    expect(pinned.filter((e) => e.latest).map((e) => e.release)).toContain('6.1.0-28-cloud-amd64');
    expect(pinned.find((e) => e.release === '6.1.0-31-cloud-amd64')?.latest).toBe(false);
  });

  it('compares versions by number, not by character', () => {
    expect(naturalCompare('6.1.0-9', '6.1.0-28')).toBeLessThan(0);
    expect(naturalCompare('6.1.128-1', '6.1.119-1')).toBeGreaterThan(0);
    expect(naturalCompare('1.0', '1.0')).toBe(0);
  });

  it('finds by release, package or flavour; otherwise close matches', () => {
    const c = buildCatalog(paragraphs);
    expect(findInCatalog(c, '6.1.0-28-cloud-amd64').entry?.package).toBe('linux-image-6.1.0-28-cloud-amd64');
    expect(findInCatalog(c, 'linux-image-6.1.0-28-cloud-amd64').entry?.release).toBe('6.1.0-28-cloud-amd64');
    expect(findInCatalog(c, 'cloud-amd64').entry?.release).toBe('6.1.0-31-cloud-amd64');
    expect(findInCatalog(c, 'linux-image-rt-amd64').entry?.release).toBe('6.1.0-31-rt-amd64');
    expect(findInCatalog(c, '6.12-cloud-amd64').entry?.release).toBe('6.12.118+deb12-cloud-amd64');
    expect(findInCatalog(c, '6.12-amd64').entry).toBeUndefined();
    const miss = findInCatalog(c, '6.1.0-29-cloud-amd64');
    expect(miss.entry).toBeUndefined();
    expect(closeMatches('6.1.0-29-cloud-amd64', c).slice(0, 2)).toEqual([
      '6.1.0-28-cloud-amd64',
      '6.1.0-31-cloud-amd64',
    ]);
    expect(closeMatches('zzz', c)).toEqual([]);
    expect(closeMatches('6.12.118-cloud-amd64', c)[0]).toBe('6.12.118+deb12-cloud-amd64');
  });

  it('names a pulled kernel after its release, as a valid resource name', () => {
    expect(defaultKernelName('6.1.0-28-cloud-amd64')).toBe('6.1.0-28-cloud-amd64');
    expect(defaultKernelName('6.12.118+deb12-cloud-amd64')).toBe('6.12.118-deb12-cloud-amd64');
  });

  it('names the archive and apt’s own error lines when the index cannot be read', () => {
    const sources =
      'deb [signed-by=/k.gpg] http://deb.debian.org/debian bookworm main\n' +
      'deb [signed-by=/k.gpg] http://deb.debian.org/debian bookworm-updates main\n' +
      'deb http://security.example/debian-security bookworm-security main\n';
    expect(sourceUris(sources)).toEqual([
      'http://deb.debian.org/debian',
      'http://security.example/debian-security',
    ]);
    const err = new CommandError(
      ['apt-get', '-o', 'Dir::Etc=/x', 'update'],
      100,
      null,
      'Ign:1 http://deb.debian.org/debian bookworm InRelease\n' +
        'Err:1 http://deb.debian.org/debian bookworm InRelease\n  Could not connect\n' +
        'E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Could not connect to deb.debian.org:80\n',
    );
    const e = archiveError(err, sources);
    expect(e.message).toMatch(
      /^cannot read the Debian archive http:\/\/deb\.debian\.org\/debian, http:\/\/security/,
    );
    expect(e.message).toContain('E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease');
    expect(e.message).not.toContain('Dir::Etc');
  });
});
