// Sizes in their wire form (schema $defs: `^[0-9]{1,12}[KMGT]?$`): digits and an optional K, M, G
// or T, powers of 1024. The daemon's parseSize (src/vm/sizes.ts) and the CLI's looser reader
// (src/cli/format.ts: `4GiB`, `4g`) both end here.

const UNITS = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 } as const;

/**
 * `4G`, `512M`, `1073741824` in bytes, or undefined when `s` is not that form. The product can
 * pass Number.MAX_SAFE_INTEGER (12 digits of T): callers that need the exact count check.
 */
export function sizeToBytes(s: string): number | undefined {
  const m = /^(\d{1,12})([KMGT]?)$/.exec(s);
  return m ? Number(m[1]) * UNITS[m[2] as keyof typeof UNITS] : undefined;
}
