import { describe, expect, it } from 'vitest';
import { debFileName, parseControl } from '../../src/image/apt.ts';
import { firstDependency } from '../../src/image/kernel.ts';

describe('apt helpers', () => {
  it('parses the first paragraph of apt-cache show', () => {
    const text = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel.

Package: other
Version: 1
`;
    const f = parseControl(text);
    expect(f.Version).toBe('6.1.192-2');
    expect(f.Description).toBe(
      'Linux for x86-64 cloud (meta-package)\nThis package depends on the latest Linux kernel.',
    );
    expect(firstDependency(f.Depends ?? '')).toBe('linux-image-6.1.0-56-cloud-amd64');
  });

  it('resolves alternatives and plain names', () => {
    expect(firstDependency('foo | bar (>= 1), baz')).toBe('foo');
    expect(firstDependency('')).toBeUndefined();
  });

  it('names .deb files as apt-get download does (epoch colon escaped)', () => {
    expect(debFileName('busybox-static', '1:1.35.0-4+deb12u1+b1', 'amd64')).toBe(
      'busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb',
    );
    expect(debFileName('linux-image-6.1.0-56-cloud-amd64', '6.1.192-2', 'amd64')).toBe(
      'linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb',
    );
  });
});
