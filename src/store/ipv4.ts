// Minimal IPv4 CIDR arithmetic for guest address allocation.

export function parseIpv4(s: string): number {
  const parts = s.split('.');
  if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${s}`);
  let n = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255)
      throw new RangeError(`not an IPv4 address: ${s}`);
    n = n * 256 + Number(p);
  }
  return n;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Ipv4Cidr {
  /** The network address (host bits cleared). */
  network: number;
  prefix: number;
  /** Number of addresses in the block, 2^(32-prefix). */
  size: number;
}

export function parseCidr(cidr: string): Ipv4Cidr {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(cidr);
  const prefix = m ? Number(m[2]) : NaN;
  if (!m?.[1] || !(prefix >= 0 && prefix <= 32)) throw new RangeError(`not an IPv4 CIDR: ${cidr}`);
  const size = 2 ** (32 - prefix);
  const addr = parseIpv4(m[1]);
  return { network: addr - (addr % size), prefix, size };
}

/**
 * The lowest host address of cidr (network and broadcast addresses excluded) that is not in
 * `taken`, or undefined if none is free.
 */
export function firstFreeHost(cidr: string, taken: Iterable<string>): string | undefined {
  const { network, size } = parseCidr(cidr);
  if (size < 4) return undefined; // /31 and /32 have no usable hosts for a routed guest network
  const used = new Set<number>();
  for (const t of taken) {
    try {
      used.add(parseIpv4(t));
    } catch {
      // not an address: cannot collide with one
    }
  }
  for (let a = network + 1; a < network + size - 1; a++) {
    if (!used.has(a)) return formatIpv4(a);
  }
  return undefined;
}
