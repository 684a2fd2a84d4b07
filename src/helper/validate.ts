// The root helper's closed vocabulary. The dispatcher's JSON Schema check runs first; these
// validators run again inside the helper (defence in depth: a schema can be loosened by mistake)
// and add what a schema cannot say: addresses must fall inside the helper's own configured pool
// with a sane prefix, names must be banger's. Each returns a fresh, typed copy of exactly the
// fields it checked, or throws bad_request.
import type * as T from '../../generated/types.gen.ts';
import {
  cidrContains,
  cidrWithin,
  formatCidr,
  isBangerBridge,
  isBangerTap,
  isHostOf,
  isIpv4,
  isVmId,
  parseCidr,
  parseIpv4,
  type Cidr,
} from '../hostnet/index.ts';
import { ErrorResponse } from '../rpc/errors.ts';

/** The pool every banger subnet and guest address must come from (bangerd-root --pool). */
export const DEFAULT_POOL = '10.213.0.0/16';
/** Bridge subnets: no bigger than /16, no smaller than /29 (6 hosts). */
export const MIN_PREFIX = 16;
export const MAX_PREFIX = 29;

export interface ValidateContext {
  pool: Cidr;
}

export function poolContext(pool: string): ValidateContext {
  let c: Cidr;
  try {
    c = parseCidr(pool);
  } catch {
    throw new Error(`invalid address pool ${JSON.stringify(pool)}: want A.B.C.D/N`);
  }
  if (c.addr !== c.network) throw new Error(`address pool ${pool} has host bits set; use ${formatCidr(c)}`);
  if (c.prefix < 8 || c.prefix > MAX_PREFIX)
    throw new Error(`address pool ${pool}: prefix must be between /8 and /${MAX_PREFIX}`);
  return { pool: c };
}

function bad(message: string): ErrorResponse {
  return new ErrorResponse('bad_request', message);
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return typeof v;
}

/** The params object with exactly `keys` (all required) and possibly `optional` ones. */
function fields(
  p: unknown,
  keys: readonly string[],
  optional: readonly string[] = [],
): Record<string, unknown> {
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw bad('params must be an object');
  const o = p as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!keys.includes(k) && !optional.includes(k)) throw bad(`unknown field ${JSON.stringify(k)}`);
  for (const k of keys) if (!Object.hasOwn(o, k)) throw bad(`missing field ${JSON.stringify(k)}`);
  return o;
}

export function checkBridge(v: unknown): string {
  if (!isBangerBridge(v))
    throw bad(`bridge ${show(v)} is not banger's: want br-banger plus at most six of [a-z0-9-]`);
  return v;
}

export function checkTap(v: unknown): string {
  if (!isBangerTap(v)) throw bad(`tap ${show(v)} is not banger's: want bgt followed by a 12-hex VM id`);
  return v;
}

export function checkVmId(v: unknown): string {
  if (!isVmId(v)) throw bad(`vm id ${show(v)} is not banger's: want 12 lowercase hex digits`);
  return v;
}

/** A gateway interface address "A.B.C.D/N": inside the pool, a host of its own subnet. */
export function checkGatewayCidr(v: unknown, ctx: ValidateContext): string {
  if (typeof v !== 'string') throw bad(`address ${show(v)} must be a string like 10.213.0.1/24`);
  let c: Cidr;
  try {
    c = parseCidr(v);
  } catch {
    throw bad(`address ${show(v)} is not A.B.C.D/N`);
  }
  if (c.prefix < MIN_PREFIX || c.prefix > MAX_PREFIX)
    throw bad(`address ${v}: prefix must be between /${MIN_PREFIX} and /${MAX_PREFIX}`);
  if (!cidrWithin(c, ctx.pool))
    throw bad(`address ${v} is outside the helper's pool ${formatCidr(ctx.pool)}`);
  if (!isHostOf(c, c.addr)) throw bad(`address ${v} is the network or broadcast address of its subnet`);
  return v;
}

/** A guest address: a host address of the pool. */
export function checkGuestIp(v: unknown, ctx: ValidateContext): string {
  if (typeof v !== 'string') throw bad(`guest address ${show(v)} must be a string`);
  let n: number;
  try {
    n = parseIpv4(v);
  } catch {
    throw bad(`guest address ${show(v)} is not a dotted IPv4 address`);
  }
  if (!cidrContains(ctx.pool, n))
    throw bad(`guest address ${v} is outside the helper's pool ${formatCidr(ctx.pool)}`);
  if (!isHostOf(ctx.pool, n)) throw bad(`guest address ${v} is the pool's network or broadcast address`);
  return v;
}

export function checkPort(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535)
    throw bad(`port ${show(v)} must be an integer from 1 to 65535`);
  return v;
}

export function validateEnsureBridge(p: unknown, ctx: ValidateContext): T.PrivEnsureBridgeParams {
  const o = fields(p, ['bridge', 'address'], ['dns_port']);
  const r: T.PrivEnsureBridgeParams = {
    bridge: checkBridge(o.bridge),
    address: checkGatewayCidr(o.address, ctx),
  };
  if (o.dns_port !== undefined) r.dns_port = checkPort(o.dns_port);
  return r;
}

export function validateCreateTap(p: unknown): T.PrivCreateTapParams {
  const o = fields(p, ['tap', 'bridge']);
  return { tap: checkTap(o.tap), bridge: checkBridge(o.bridge) };
}

export function validateDeleteTap(p: unknown): T.PrivDeleteTapParams {
  const o = fields(p, ['tap']);
  return { tap: checkTap(o.tap) };
}

export function validateEnsureNat(p: unknown, ctx: ValidateContext): T.PrivEnsureNatParams {
  const o = fields(p, ['vm_id', 'guest_ip', 'bridge']);
  return {
    vm_id: checkVmId(o.vm_id),
    guest_ip: checkGuestIp(o.guest_ip, ctx),
    bridge: checkBridge(o.bridge),
  };
}

export function validateRemoveNat(p: unknown): T.PrivRemoveNatParams {
  const o = fields(p, ['vm_id']);
  return { vm_id: checkVmId(o.vm_id) };
}

export function validateSyncResolverRouting(p: unknown): T.PrivSyncResolverRoutingParams {
  const o = fields(p, ['bridge', 'dns_port']);
  return { bridge: checkBridge(o.bridge), dns_port: checkPort(o.dns_port) };
}

export function validateClearResolverRouting(p: unknown): T.PrivClearResolverRoutingParams {
  const o = fields(p, ['bridge']);
  return { bridge: checkBridge(o.bridge) };
}

/** An address of the pool for the helper's own endpoints (resolver, proxy): the gateway. */
function checkPoolEndpoint(v: unknown, what: string, ctx: ValidateContext): { ip: string; port: number } {
  const o = fields(v, ['ip', 'port']);
  try {
    return { ip: checkGuestIp(o.ip, ctx), port: checkPort(o.port) };
  } catch (err) {
    throw bad(`${what}: ${(err as Error).message.replace(/^guest address/, 'address')}`);
  }
}

/** A destination network of a policy: A.B.C.D/N, host bits clear, written canonically. */
export function checkDestCidr(v: unknown): string {
  if (typeof v !== 'string') throw bad(`cidr ${show(v)} must be a string like 192.0.2.0/24`);
  let c: Cidr;
  try {
    c = parseCidr(v);
  } catch {
    throw bad(`cidr ${show(v)} is not A.B.C.D/N`);
  }
  if (formatCidr(c) !== v)
    throw bad(`cidr ${v} has host bits set or is not canonical: want ${formatCidr(c)}`);
  return v;
}

const EGRESS_MODES = ['all', 'none', 'allow'] as const;
export const MAX_EGRESS_CIDRS = 256;
export const MAX_EGRESS_ENTRIES = 64;

export function validateEgressApply(p: unknown, ctx: ValidateContext): T.PrivEgressApplyParams {
  const o = fields(p, ['tap', 'guest_ip', 'bridge', 'mode', 'cidrs', 'resolver'], ['proxy']);
  const mode = o.mode;
  if (typeof mode !== 'string' || !(EGRESS_MODES as readonly string[]).includes(mode))
    throw bad(`mode ${show(mode)} must be one of ${EGRESS_MODES.join(', ')}`);
  if (!Array.isArray(o.cidrs)) throw bad('cidrs must be an array');
  if (o.cidrs.length > MAX_EGRESS_CIDRS) throw bad(`at most ${MAX_EGRESS_CIDRS} cidrs`);
  if (mode !== 'allow' && o.cidrs.length > 0) throw bad(`mode ${mode} takes no cidrs`);
  const cidrs = o.cidrs.map((c: unknown) => {
    const f = fields(c, ['cidr'], ['port']);
    const r: T.PrivEgressApplyParams['cidrs'][number] = { cidr: checkDestCidr(f.cidr) };
    if (f.port !== undefined) r.port = checkPort(f.port);
    return r;
  });
  const r: T.PrivEgressApplyParams = {
    tap: checkTap(o.tap),
    guest_ip: checkGuestIp(o.guest_ip, ctx),
    bridge: checkBridge(o.bridge),
    mode: mode as T.PrivEgressApplyParams['mode'],
    cidrs,
    resolver: checkPoolEndpoint(o.resolver, 'resolver', ctx),
  };
  if (o.proxy !== undefined) r.proxy = checkPoolEndpoint(o.proxy, 'proxy', ctx);
  if (r.resolver.ip === r.guest_ip || r.proxy?.ip === r.guest_ip)
    throw bad('the resolver and the proxy cannot be the guest itself');
  return r;
}

export function validateEgressAllow(p: unknown): T.PrivEgressAllowParams {
  const o = fields(p, ['tap', 'entries']);
  if (!Array.isArray(o.entries) || o.entries.length === 0) throw bad('entries must be a non-empty array');
  if (o.entries.length > MAX_EGRESS_ENTRIES) throw bad(`at most ${MAX_EGRESS_ENTRIES} entries`);
  const entries = o.entries.map((e: unknown) => {
    const f = fields(e, ['ip', 'ttl_s'], ['port']);
    if (typeof f.ip !== 'string' || !isIpv4(f.ip)) throw bad(`ip ${show(f.ip)} is not a dotted IPv4 address`);
    if (typeof f.ttl_s !== 'number' || !Number.isInteger(f.ttl_s) || f.ttl_s < 0 || f.ttl_s > 0xffffffff)
      throw bad(`ttl_s ${show(f.ttl_s)} must be a non-negative integer`);
    const r: T.PrivEgressAllowParams['entries'][number] = { ip: f.ip, ttl_s: f.ttl_s };
    if (f.port !== undefined) r.port = checkPort(f.port);
    return r;
  });
  return { tap: checkTap(o.tap), entries };
}

export function validateEgressRemove(p: unknown): T.PrivEgressRemoveParams {
  const o = fields(p, ['tap']);
  return { tap: checkTap(o.tap) };
}

export function validateEgressEvents(p: unknown): T.PrivEgressEventsParams {
  const o = fields(p, ['cursor']);
  const c = o.cursor;
  if (typeof c !== 'number' || !Number.isSafeInteger(c) || c < 0)
    throw bad(`cursor ${show(c)} must be a non-negative integer`);
  return { cursor: c };
}
