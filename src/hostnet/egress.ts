// Egress policy of bridged VMs, enforced on the host in nftables tables banger owns. Two layers
// per tap, written together in one atomic JSON batch (`nft -j '<json>'`, argv only, no shell):
//
//  - `table netdev banger_egress`, chain `in_<tap>` hooked at the tap's ingress: every frame the
//    guest sends passes here first, whatever root in the guest does. It drops frames whose source
//    is not the guest's own address (IPv4 and ARP: so the address identifies the tap below and a
//    guest cannot borrow another's policy), every other ethertype (IPv6, VLAN tags, ...), and
//    new connections to other addresses of the pool except the gateway (guest-to-guest traffic
//    is switched by the bridge and may never reach the IP hooks) unless a CIDR rule allows them.
//  - `table inet banger_egress`, regular chain `vm_<tap>`, jumped to from the base chains
//    `forward` and `input` for `iifname <bridge> ip saddr <guest>`: established/related
//    traffic, the resolver (bangerd's DNS listener: the bridge's port 53 is redirected there),
//    the proxy, the policy's CIDRs and the IPs banger's resolver handed out for its domain rules
//    (sets `dom_<tap>` and `domp_<tap>` with timeouts); DNS anywhere else and everything else is
//    logged with the prefix `banger-egress <tap> ` and rejected (TCP reset, else ICMP
//    admin-prohibited), so a client fails at once instead of timing out.
//
// Input matters as much as forward: a guest must not reach the host's own services (sshd, the
// daemon's other listeners) except the resolver and the proxy.
import { createHash } from 'node:crypto';
import { DEFAULT_TOOLS, execRunner, HostnetError, parseJsonOutput, type Runner } from './exec.ts';
import { isIpv4, parseCidr, formatCidr } from './ipv4.ts';
import { isBangerBridge, isBangerTap } from './names.ts';

export const EGRESS_TABLE = 'banger_egress';
export const EGRESS_COMMENT_PREFIX = 'banger egress ';
/** The kernel log prefix of a denial: "banger-egress <tap> " (the helper reads it back). */
export const EGRESS_LOG_PREFIX = 'banger-egress ';
/** Before filter (0), so banger's NAT accept and other tables' rules come after a reject. */
export const EGRESS_PRIORITY = -5;
/** Netdev ingress: as early as possible. */
export const INGRESS_PRIORITY = -500;
/** A set element lives at least this long, whatever the DNS answer said. */
export const MIN_TTL_S = 30;
export const MAX_TTL_S = 86_400;

export interface EgressCidr {
  cidr: string;
  port?: number;
}

export interface EgressSpec {
  tap: string;
  guestIp: string;
  bridge: string;
  mode: 'none' | 'allow';
  cidrs: EgressCidr[];
  /** bangerd's DNS listener as the guest's packets arrive at input (after the port 53 redirect). */
  resolver: { ip: string; port: number };
  proxy?: { ip: string; port: number };
  /** The helper's address pool: other guests live there. */
  pool: string;
}

export interface EgressEntry {
  ip: string;
  port?: number;
  ttlS: number;
}

export interface EgressChain {
  tap: string;
  /** From the dispatch rule (ip saddr). */
  guestIp?: string;
  /** From the dispatch rule's comment: egressPolicyHash of what was applied (absent: older). */
  policyHash?: string;
  /** Whether the netdev ingress chain exists too. */
  ingress: boolean;
}

export interface Egress {
  /** Create or replace the tap's chains and empty its sets (one atomic batch). */
  apply(spec: EgressSpec): Promise<{ created: boolean; rules: number }>;
  /** Add (or refresh the timeout of) set elements. The chain must exist. */
  allow(tap: string, entries: EgressEntry[]): Promise<{ added: number }>;
  /** Remove everything of the tap (none is fine). */
  remove(tap: string): Promise<{ removed: boolean }>;
  /** The taps that have egress chains. */
  list(): Promise<EgressChain[]>;
}

type NftCmd = Record<string, unknown>;

const INET = { family: 'inet', table: EGRESS_TABLE };
const NETDEV = { family: 'netdev', table: EGRESS_TABLE };
const match = (op: string, left: unknown, right: unknown): NftCmd => ({ match: { op, left, right } });
const payload = (protocol: string, field: string): NftCmd => ({ payload: { protocol, field } });
const meta = (key: string): NftCmd => ({ meta: { key } });
const daddr = payload('ip', 'daddr');
const TCP_UDP = { set: ['tcp', 'udp'] };
const ACCEPT = { accept: null };

export const vmChain = (tap: string): string => `vm_${tap}`;
export const ingressChain = (tap: string): string => `in_${tap}`;
export const domSet = (tap: string): string => `dom_${tap}`;
export const domPortSet = (tap: string): string => `domp_${tap}`;
/** `banger egress <tap> <policy hash>`: the dispatch rules' comment. */
export const egressComment = (tap: string, hash: string): string => `${EGRESS_COMMENT_PREFIX}${tap} ${hash}`;
const POLICY_HASH_RE = /^[0-9a-f]{16}$/;

/** What an apply writes, as far as the daemon knows it (all of EgressSpec but the helper's pool). */
export type EgressPolicyFacts = Pick<EgressSpec, 'guestIp' | 'bridge' | 'cidrs' | 'resolver' | 'proxy'> & {
  mode: string;
};

/**
 * A digest of what an apply writes, kept in the dispatch rules' comment: start-up reconcile
 * compares it with the policy the daemon's store holds and re-applies when they differ (a
 * `vm set --egress` killed between writing the chains and its row leaves the host enforcing a
 * policy the store does not have). The daemon computes it from its egress_apply params, the
 * helper from the spec it applies: both from these fields, in this order. Pure.
 */
export function egressPolicyHash(f: EgressPolicyFacts): string {
  const canon = JSON.stringify([
    f.guestIp,
    f.bridge,
    f.mode,
    f.cidrs.map((c) => [c.cidr, c.port ?? null]),
    [f.resolver.ip, f.resolver.port],
    f.proxy ? [f.proxy.ip, f.proxy.port] : null,
  ]);
  return createHash('sha256').update(canon).digest('hex').slice(0, 16);
}
export const egressLogPrefix = (tap: string): string => `${EGRESS_LOG_PREFIX}${tap} `;

/** priv.egress_apply's params (generated PrivEgressApplyParams), as far as the chains go. */
export interface EgressApplyParams {
  tap: string;
  guest_ip: string;
  bridge: string;
  mode: string;
  cidrs: EgressCidr[];
  resolver: { ip: string; port: number };
  proxy?: { ip: string; port: number };
}

/**
 * The spec an apply's params stand for, the one reading of them: the helper applies it
 * (src/helper/services/priv.ts) and the daemon hashes it to compare with what the chains carry
 * (src/egress/bridged.ts applyParamsHash). Two readings could drift apart, and then every daemon
 * start would find every VM's hash different and write its chains again. All of the spec but the
 * helper's pool, which the helper adds (it is not hashed). Throws for mode `all`, which has no
 * chains. Pure.
 */
export function egressSpecFromParams(p: EgressApplyParams): Omit<EgressSpec, 'pool'> {
  if (p.mode !== 'none' && p.mode !== 'allow')
    throw new HostnetError('egress_apply', `mode ${p.mode} has no egress chains`);
  return {
    tap: p.tap,
    guestIp: p.guest_ip,
    bridge: p.bridge,
    mode: p.mode,
    cidrs: p.cidrs.map((c) => ({ cidr: c.cidr, ...(c.port !== undefined ? { port: c.port } : {}) })),
    resolver: { ip: p.resolver.ip, port: p.resolver.port },
    ...(p.proxy ? { proxy: { ip: p.proxy.ip, port: p.proxy.port } } : {}),
  };
}

function cidrRight(cidr: string): unknown {
  const c = parseCidr(cidr);
  return c.prefix === 32
    ? formatCidr(c).split('/')[0]
    : { prefix: { addr: formatCidr(c).split('/')[0], len: c.prefix } };
}

/** `ip daddr <cidr> [meta l4proto {tcp,udp} th dport <port>]`. */
function cidrMatch(c: EgressCidr): NftCmd[] {
  const m = [match('==', daddr, cidrRight(c.cidr))];
  if (c.port !== undefined)
    m.push(match('==', meta('l4proto'), TCP_UDP), match('==', payload('th', 'dport'), c.port));
  return m;
}

function rule(
  base: { family: string; table: string },
  chain: string,
  expr: NftCmd[],
  comment?: string,
): NftCmd {
  return { add: { rule: { ...base, chain, expr, ...(comment ? { comment } : {}) } } };
}

/** The tables and the two inet base chains; `add` of an existing object is a no-op. */
export function egressBaseCommands(): NftCmd[] {
  return [
    { add: { table: { family: 'inet', name: EGRESS_TABLE } } },
    { add: { table: { family: 'netdev', name: EGRESS_TABLE } } },
    ...(['forward', 'input'] as const).map((hook) => ({
      add: {
        chain: { ...INET, name: hook, type: 'filter', hook, prio: EGRESS_PRIORITY, policy: 'accept' },
      },
    })),
  ];
}

/** The regular chain vm_<tap>: what the guest may reach, then log and reject. Pure. */
export function vmChainRules(s: EgressSpec): NftCmd[] {
  const chain = vmChain(s.tap);
  const r = (expr: NftCmd[]): NftCmd => rule(INET, chain, expr);
  const out: NftCmd[] = [
    r([match('in', { ct: { key: 'state' } }, ['established', 'related']), ACCEPT]),
    ...['udp', 'tcp'].map((proto) =>
      r([match('==', daddr, s.resolver.ip), match('==', payload(proto, 'dport'), s.resolver.port), ACCEPT]),
    ),
  ];
  if (s.proxy)
    out.push(r([match('==', daddr, s.proxy.ip), match('==', payload('tcp', 'dport'), s.proxy.port), ACCEPT]));
  // DNS (and DNS over TLS) to anyone but banger's resolver, even inside an allowed CIDR: a name
  // must be resolved where the domain rules see it.
  out.push(
    r([
      match('==', meta('l4proto'), TCP_UDP),
      match('==', payload('th', 'dport'), { set: [53, 853] }),
      { log: { prefix: egressLogPrefix(s.tap), level: 'info' } },
      { reject: { type: 'icmpx', expr: 'admin-prohibited' } },
    ]),
  );
  if (s.mode === 'allow') {
    for (const c of s.cidrs) out.push(r([...cidrMatch(c), ACCEPT]));
    out.push(r([match('==', daddr, `@${domSet(s.tap)}`), ACCEPT]));
    out.push(
      r([
        match('==', meta('l4proto'), TCP_UDP),
        match('==', { concat: [daddr, payload('th', 'dport')] }, `@${domPortSet(s.tap)}`),
        ACCEPT,
      ]),
    );
  }
  out.push(
    r([
      { limit: { rate: 20, burst: 20, per: 'second' } },
      { log: { prefix: egressLogPrefix(s.tap), level: 'info' } },
    ]),
    r([match('==', meta('l4proto'), 'tcp'), { reject: { type: 'tcp reset' } }]),
    r([{ reject: { type: 'icmpx', expr: 'admin-prohibited' } }]),
  );
  return out;
}

/** The netdev ingress chain's rules: anti-spoofing and the guest-to-guest backstop. Pure. */
export function ingressRules(s: EgressSpec): NftCmd[] {
  const chain = ingressChain(s.tap);
  const r = (expr: NftCmd[]): NftCmd => rule(NETDEV, chain, expr);
  const pool = cidrRight(s.pool);
  const toPeer = [match('==', daddr, pool), match('!=', daddr, s.resolver.ip)];
  if (s.proxy && s.proxy.ip !== s.resolver.ip) toPeer.push(match('!=', daddr, s.proxy.ip));
  const out: NftCmd[] = [
    r([match('!=', payload('arp', 'saddr ip'), s.guestIp), { drop: null }]),
    r([match('!=', payload('ip', 'saddr'), s.guestIp), { drop: null }]),
    r([match('!=', payload('ether', 'type'), { set: ['ip', 'arp'] }), { drop: null }]),
  ];
  // Allowed CIDRs may name other guests: accept here, the inet chain decides again.
  if (s.mode === 'allow') for (const c of s.cidrs) out.push(r([...cidrMatch(c), ACCEPT]));
  // Without conntrack here: a TCP SYN to a peer is refused, later segments (replies to a peer's
  // connection to this guest) pass; anything else to a peer is dropped.
  out.push(
    r([
      ...toPeer,
      match('==', { '&': [payload('tcp', 'flags'), ['syn', 'ack']] }, 'syn'),
      { reject: { type: 'tcp reset' } },
    ]),
    r([...toPeer, match('!=', meta('l4proto'), 'tcp'), { drop: null }]),
  );
  return out;
}

export interface EgressState {
  /** vm_<tap> chains present. */
  chains: Set<string>;
  /** in_<tap> netdev chains present. */
  ingress: Set<string>;
  /** Sets present, by name. */
  sets: Set<string>;
  /** Dispatch rules: tap → {chain, handle, guestIp, policyHash}. */
  dispatch: { tap: string; chain: string; handle: number; guestIp?: string; policyHash?: string }[];
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

/** Parse `nft -j list ruleset`-style output of banger's egress tables; anything else ignored. */
export function parseEgressState(json: unknown): EgressState {
  const items = obj(json)?.nftables;
  if (!Array.isArray(items)) throw new HostnetError('list_egress', 'nft -j output has no "nftables" array');
  const st: EgressState = { chains: new Set(), ingress: new Set(), sets: new Set(), dispatch: [] };
  for (const item of items) {
    const o = obj(item);
    const c = obj(o?.chain);
    if (c && c.table === EGRESS_TABLE && typeof c.name === 'string') {
      if (c.family === 'inet' && c.name.startsWith('vm_') && isBangerTap(c.name.slice(3)))
        st.chains.add(c.name);
      if (c.family === 'netdev' && c.name.startsWith('in_') && isBangerTap(c.name.slice(3)))
        st.ingress.add(c.name);
    }
    const set = obj(o?.set);
    if (set && set.table === EGRESS_TABLE && set.family === 'inet' && typeof set.name === 'string')
      st.sets.add(set.name);
    const r = obj(o?.rule);
    if (!r || r.family !== 'inet' || r.table !== EGRESS_TABLE || typeof r.handle !== 'number') continue;
    if (typeof r.comment !== 'string' || !r.comment.startsWith(EGRESS_COMMENT_PREFIX)) continue;
    // `<tap>` (before policy hashes) or `<tap> <hash>`; a hash of any other shape is no hash.
    const [tap = '', hash, ...extra] = r.comment.slice(EGRESS_COMMENT_PREFIX.length).split(' ');
    if (!isBangerTap(tap) || typeof r.chain !== 'string') continue;
    const d: EgressState['dispatch'][number] = { tap, chain: r.chain, handle: r.handle };
    if (hash !== undefined && extra.length === 0 && POLICY_HASH_RE.test(hash)) d.policyHash = hash;
    for (const e of Array.isArray(r.expr) ? r.expr : []) {
      const m = obj(obj(e)?.match);
      if (m && obj(obj(m.left)?.payload)?.field === 'saddr' && isIpv4(m.right)) d.guestIp = m.right;
    }
    st.dispatch.push(d);
  }
  return st;
}

/** Commands that remove everything of a tap that `st` shows. Pure. */
export function removeCommands(tap: string, st: EgressState): NftCmd[] {
  const out: NftCmd[] = st.dispatch
    .filter((d) => d.tap === tap)
    .map((d) => ({ delete: { rule: { ...INET, chain: d.chain, handle: d.handle } } }));
  if (st.chains.has(vmChain(tap)))
    out.push(
      { flush: { chain: { ...INET, name: vmChain(tap) } } },
      { delete: { chain: { ...INET, name: vmChain(tap) } } },
    );
  for (const name of [domSet(tap), domPortSet(tap)])
    if (st.sets.has(name)) out.push({ delete: { set: { ...INET, name } } });
  if (st.ingress.has(ingressChain(tap)))
    out.push(
      { flush: { chain: { ...NETDEV, name: ingressChain(tap) } } },
      { delete: { chain: { ...NETDEV, name: ingressChain(tap) } } },
    );
  return out;
}

/** The whole batch of an apply: remove what the tap had, then write it afresh. Pure. */
export function applyCommands(s: EgressSpec, st: EgressState): NftCmd[] {
  return [
    ...egressBaseCommands(),
    ...removeCommands(s.tap, st),
    { add: { set: { ...INET, name: domSet(s.tap), type: 'ipv4_addr', flags: ['timeout'] } } },
    {
      add: {
        set: { ...INET, name: domPortSet(s.tap), type: ['ipv4_addr', 'inet_service'], flags: ['timeout'] },
      },
    },
    { add: { chain: { ...INET, name: vmChain(s.tap) } } },
    ...vmChainRules(s),
    ...(['forward', 'input'] as const).map((base) =>
      rule(
        INET,
        base,
        [
          match('==', meta('iifname'), s.bridge),
          match('==', payload('ip', 'saddr'), s.guestIp),
          { jump: { target: vmChain(s.tap) } },
        ],
        egressComment(s.tap, egressPolicyHash(s)),
      ),
    ),
    {
      add: {
        chain: {
          ...NETDEV,
          name: ingressChain(s.tap),
          type: 'filter',
          hook: 'ingress',
          dev: s.tap,
          prio: INGRESS_PRIORITY,
          policy: 'accept',
        },
      },
    },
    ...ingressRules(s),
  ];
}

/** Add-delete-add: the only way to refresh an existing element's timeout in one batch. Pure. */
export function allowCommands(tap: string, entries: EgressEntry[]): NftCmd[] {
  const out: NftCmd[] = [];
  for (const e of entries) {
    const name = e.port === undefined ? domSet(tap) : domPortSet(tap);
    const val = e.port === undefined ? e.ip : { concat: [e.ip, e.port] };
    const ttl = Math.min(MAX_TTL_S, Math.max(MIN_TTL_S, Math.round(e.ttlS)));
    const el = (elem: unknown[]): NftCmd => ({ ...INET, name, elem });
    out.push(
      { add: { element: el([{ elem: { val, timeout: ttl } }]) } },
      { delete: { element: el([val]) } },
      { add: { element: el([{ elem: { val, timeout: ttl } }]) } },
    );
  }
  return out;
}

function checkSpec(op: string, s: EgressSpec): void {
  const ok =
    isBangerTap(s.tap) &&
    isBangerBridge(s.bridge) &&
    isIpv4(s.guestIp) &&
    isIpv4(s.resolver.ip) &&
    (s.proxy === undefined || isIpv4(s.proxy.ip)) &&
    (s.mode === 'none' || s.mode === 'allow');
  if (!ok) throw new HostnetError(op, `refusing egress spec for ${String(s.tap)}`);
}

export class NftEgress implements Egress {
  private readonly run: Runner;
  private readonly nft: string;

  constructor(opts: { runner?: Runner; nftPath?: string } = {}) {
    this.run = opts.runner ?? execRunner;
    this.nft = opts.nftPath ?? DEFAULT_TOOLS.nft;
  }

  private async nftc(op: string, args: string[]): Promise<string> {
    try {
      return await this.run(this.nft, args);
    } catch (err) {
      throw new HostnetError(op, err instanceof Error ? err.message : String(err), { cause: err });
    }
  }

  private async batch(op: string, cmds: NftCmd[]): Promise<void> {
    if (cmds.length > 0) await this.nftc(op, ['-j', JSON.stringify({ nftables: cmds })]);
  }

  /** Both egress tables' state; empty when they do not exist. */
  async state(op: string): Promise<EgressState> {
    const tables = obj(
      parseJsonOutput(op, 'nft list tables', await this.nftc(op, ['-j', 'list', 'tables'])),
    )?.nftables;
    const have = (family: string): boolean =>
      Array.isArray(tables) &&
      tables.some((i) => {
        const t = obj(obj(i)?.table);
        return t?.family === family && t.name === EGRESS_TABLE;
      });
    const items: unknown[] = [];
    for (const family of ['inet', 'netdev']) {
      if (!have(family)) continue;
      const out = await this.nftc(op, ['-j', 'list', 'table', family, EGRESS_TABLE]);
      const list = obj(parseJsonOutput(op, 'nft list table', out))?.nftables;
      if (Array.isArray(list)) items.push(...(list as unknown[]));
    }
    return parseEgressState({ nftables: items });
  }

  async apply(s: EgressSpec): Promise<{ created: boolean; rules: number }> {
    const op = 'egress_apply';
    checkSpec(op, s);
    const st = await this.state(op);
    const created = !st.chains.has(vmChain(s.tap));
    await this.batch(op, applyCommands(s, st));
    return { created, rules: vmChainRules(s).length + ingressRules(s).length + 2 };
  }

  async allow(tap: string, entries: EgressEntry[]): Promise<{ added: number }> {
    const op = 'egress_allow';
    if (!isBangerTap(tap) || entries.some((e) => !isIpv4(e.ip)))
      throw new HostnetError(op, `refusing egress entries for ${String(tap)}`);
    const st = await this.state(op);
    if (!st.chains.has(vmChain(tap))) throw new HostnetError(op, `tap ${tap} has no egress chain`);
    await this.batch(op, allowCommands(tap, entries));
    return { added: entries.length };
  }

  async remove(tap: string): Promise<{ removed: boolean }> {
    const op = 'egress_remove';
    if (!isBangerTap(tap)) throw new HostnetError(op, `refusing tap ${String(tap)}`);
    const cmds = removeCommands(tap, await this.state(op));
    await this.batch(op, cmds);
    return { removed: cmds.length > 0 };
  }

  async list(): Promise<EgressChain[]> {
    const st = await this.state('list_owned');
    const taps = new Set<string>();
    for (const c of st.chains) taps.add(c.slice(3));
    for (const c of st.ingress) taps.add(c.slice(3));
    for (const d of st.dispatch) taps.add(d.tap);
    return [...taps].sort().map((tap) => {
      const mine = st.dispatch.filter((d) => d.tap === tap);
      const ip = mine.find((d) => d.guestIp)?.guestIp;
      // One hash only when every dispatch rule of the tap carries the same one (a half-written
      // or hand-edited set of rules has none, so reconcile writes it afresh).
      const hashes = new Set(mine.map((d) => d.policyHash));
      const hash = hashes.size === 1 ? [...hashes][0] : undefined;
      return {
        tap,
        ingress: st.ingress.has(ingressChain(tap)),
        ...(ip ? { guestIp: ip } : {}),
        ...(hash ? { policyHash: hash } : {}),
      };
    });
  }
}
