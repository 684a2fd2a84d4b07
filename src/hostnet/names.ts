// Every host object banger creates is named from a fixed prefix plus, for per-VM objects, the
// VM id, so anything banger finds on the host can be attributed to a VM (or to nobody, and then
// garbage-collected). The root helper accepts no name outside this vocabulary.

/** Linux IFNAMSIZ is 16 including the terminating NUL: names are at most 15 bytes. */
export const IFNAME_MAX = 15;

/** Bridges: "br-banger" or "br-banger" plus up to six [a-z0-9-] (configurable, still ours). */
export const BRIDGE_PREFIX = 'br-banger';
export const DEFAULT_BRIDGE = BRIDGE_PREFIX;
export const BRIDGE_RE = /^br-banger[a-z0-9-]{0,6}$/;

/** VM ids are 12 lowercase hex digits (the store's newId()). */
export const VM_ID_RE = /^[0-9a-f]{12}$/;

/** Taps: "bgt" + the VM id: exactly 15 bytes. */
export const TAP_PREFIX = 'bgt';
export const TAP_RE = /^bgt[0-9a-f]{12}$/;

/** nftables: one table of banger's own, family ip. */
export const NFT_FAMILY = 'ip';
export const NFT_TABLE = 'banger';
/** Per-VM NAT rules carry this comment, followed by the VM id. */
export const NAT_COMMENT_PREFIX = 'banger vm ';

/** The resolver domain banger's DNS answers for. */
export const DNS_DOMAIN = 'vm';

export function isBangerBridge(name: unknown): name is string {
  return typeof name === 'string' && BRIDGE_RE.test(name);
}

export function isBangerTap(name: unknown): name is string {
  return typeof name === 'string' && TAP_RE.test(name);
}

export function isVmId(id: unknown): id is string {
  return typeof id === 'string' && VM_ID_RE.test(id);
}

/** The tap of a VM. Throws for an id that is not banger's (12 lowercase hex). */
export function tapNameFor(vmId: string): string {
  if (!isVmId(vmId)) throw new RangeError(`not a banger VM id: ${JSON.stringify(vmId)}`);
  return `${TAP_PREFIX}${vmId}`;
}

/** The VM id a tap belongs to, or undefined for a name that is not a banger tap. */
export function vmIdOfTap(name: string): string | undefined {
  return isBangerTap(name) ? name.slice(TAP_PREFIX.length) : undefined;
}

export function natComment(vmId: string): string {
  if (!isVmId(vmId)) throw new RangeError(`not a banger VM id: ${JSON.stringify(vmId)}`);
  return `${NAT_COMMENT_PREFIX}${vmId}`;
}

export function vmIdOfNatComment(comment: unknown): string | undefined {
  if (typeof comment !== 'string' || !comment.startsWith(NAT_COMMENT_PREFIX)) return undefined;
  const id = comment.slice(NAT_COMMENT_PREFIX.length);
  return isVmId(id) ? id : undefined;
}
