// Minimal IPv4 arithmetic for banger's host networking. Deliberately strict: dotted quads with
// no leading zeros (so "010.0.0.1" is not silently octal or decimal), CIDRs with an explicit
// prefix. src/helper imports this (not src/store/ipv4.ts) so it stays free of the daemon.

const OCTET = /^(0|[1-9][0-9]{0,2})$/;

/** The address as an unsigned 32-bit number; throws RangeError for anything else. */
export function parseIpv4(s: string): number {
  if (typeof s !== 'string' || s.length > 15) throw new RangeError(`not an IPv4 address: ${String(s)}`);
  const parts = s.split('.');
  if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${s}`);
  let n = 0;
  for (const p of parts) {
    if (!OCTET.test(p) || Number(p) > 255) throw new RangeError(`not an IPv4 address: ${s}`);
    n = n * 256 + Number(p);
  }
  return n;
}

export function isIpv4(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  try {
    parseIpv4(s);
    return true;
  } catch {
    return false;
  }
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Cidr {
  /** The address as written (host bits may be set: "10.0.0.1/24" is an interface address). */
  addr: number;
  prefix: number;
  /** The network address (host bits cleared). */
  network: number;
  /** 2^(32-prefix). */
  size: number;
}

/** "A.B.C.D/N"; throws RangeError. */
export function parseCidr(s: string): Cidr {
  if (typeof s !== 'string' || s.length > 18) throw new RangeError(`not an IPv4 CIDR: ${String(s)}`);
  const m = /^([0-9.]{7,15})\/(0|[1-9][0-9]?)$/.exec(s);
  const prefix = m ? Number(m[2]) : NaN;
  if (!m?.[1] || !(prefix >= 0 && prefix <= 32)) throw new RangeError(`not an IPv4 CIDR: ${s}`);
  const addr = parseIpv4(m[1]);
  const size = 2 ** (32 - prefix);
  return { addr, prefix, network: addr - (addr % size), size };
}

export function formatCidr(c: { network: number; prefix: number }): string {
  return `${formatIpv4(c.network)}/${c.prefix}`;
}

/** Whether address n lies inside the block. */
export function cidrContains(c: Cidr, n: number): boolean {
  return n >= c.network && n < c.network + c.size;
}

/** Whether block inner lies entirely inside block outer. */
export function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return inner.prefix >= outer.prefix && cidrContains(outer, inner.network);
}

/** A usable host address of the block: neither the network nor the broadcast address. */
export function isHostOf(c: Cidr, n: number): boolean {
  return cidrContains(c, n) && n !== c.network && n !== c.network + c.size - 1;
}

/** The dotted netmask of a prefix length ("255.255.255.0" for 24). */
export function netmask(prefix: number): string {
  return formatIpv4(prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);
}
