import { sizeToBytes } from '../util/size.ts';
import { VmError } from './errors.ts';

const invalid = (message: string): VmError => new VmError('invalid', message);

/** Parse `4G`, `512M`, `1073741824` (powers of 1024). */
export function parseSize(s: string, what = 'size'): number {
  const bytes = sizeToBytes(s.trim());
  if (bytes === undefined)
    throw invalid(`invalid ${what} "${s}": use a number with an optional K, M, G or T suffix, e.g. 4G`);
  if (!Number.isSafeInteger(bytes)) throw invalid(`${what} "${s}" is too large`);
  return bytes;
}

export function formatBytes(n: number): string {
  for (const [u, f] of [
    ['T', 1024 ** 4],
    ['G', 1024 ** 3],
    ['M', 1024 ** 2],
    ['K', 1024],
  ] as const) {
    if (n >= f && n % f === 0) return `${n / f}${u}`;
  }
  return String(n);
}
