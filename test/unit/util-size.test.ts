import { describe, expect, it } from 'vitest';
import { parseSizeBytes } from '../../src/cli/format.ts';
import { sizeToBytes } from '../../src/util/size.ts';
import { VmError } from '../../src/vm/errors.ts';
import { parseSize } from '../../src/vm/sizes.ts';

describe('sizes: one parser of the wire form', () => {
  it('sizeToBytes: digits and K/M/G/T, powers of 1024; anything else is undefined', () => {
    expect(sizeToBytes('1073741824')).toBe(2 ** 30);
    expect(sizeToBytes('4G')).toBe(4 * 2 ** 30);
    expect(sizeToBytes('512M')).toBe(512 * 2 ** 20);
    expect(sizeToBytes('3K')).toBe(3072);
    expect(sizeToBytes('2T')).toBe(2 * 2 ** 40);
    for (const bad of ['', '4g', '4GiB', ' 4G', '1.5G', '-1', '1234567890123', 'G'])
      expect(sizeToBytes(bad)).toBeUndefined();
  });

  it('parseSize (daemon): trims, says which value is invalid and which is too large', () => {
    expect(parseSize(' 8G ', 'disk size')).toBe(8 * 2 ** 30);
    expect(() => parseSize('8 GB', 'disk size')).toThrow(VmError);
    expect(() => parseSize('8 GB', 'disk size')).toThrow(/invalid disk size "8 GB": use a number/);
    expect(() => parseSize('999999999999T')).toThrow(/size "999999999999T" is too large/);
  });

  it('parseSizeBytes (CLI): the way people write it, in bytes the daemon would agree on', () => {
    expect(parseSizeBytes('4GiB')).toBe(4 * 2 ** 30);
    expect(parseSizeBytes('256k')).toBe(256 * 1024);
    expect(parseSizeBytes('4096')).toBe(4096);
    expect(parseSizeBytes('lots')).toBeUndefined();
    for (const s of ['1K', '64M', '3G']) expect(parseSizeBytes(s)).toBe(parseSize(s));
  });
});
