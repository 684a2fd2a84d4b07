// Opt-in outbound NAT per VM, in a table banger owns (`table ip banger`), through nftables' JSON
// interface: rules are read with `nft -j list table` and written as one JSON batch passed as a
// single argv element (`nft -j '<json>'`, no shell, no temp file), which nftables applies
// atomically. (Not stdin: nft opens /dev/stdin, which fails on the socket Node gives a child.) A VM's rules carry the comment
// "banger vm <id>", so each is attributable and a restarted daemon can collect the orphans.
import { readFile, writeFile } from 'node:fs/promises';
import { DEFAULT_TOOLS, execRunner, HostnetError, parseJsonOutput, type Runner } from './exec.ts';
import { isIpv4 } from './ipv4.ts';
import { isBangerBridge, isVmId, natComment, NFT_FAMILY, NFT_TABLE, vmIdOfNatComment } from './names.ts';

export interface NatRule {
  vmId: string;
  chain: string;
  handle: number;
  /** The guest address the rule matches (saddr or daddr). */
  guestIp?: string;
  /** The bridge the rule names (iifname/oifname). */
  bridge?: string;
}

/** The rule that sends guests' DNS (bridge address, port 53) to bangerd's listener port. */
export interface DnsRedirect {
  bridge: string;
  gateway?: string;
  port?: number;
  handles: number[];
}

export interface Nat {
  /**
   * Guests' queries to <gateway>:53 (udp and tcp) on the bridge are redirected to <gateway>:port,
   * where the unprivileged daemon listens. Exactly one pair of rules per bridge.
   */
  ensureDnsRedirect(bridge: string, gateway: string, port: number): Promise<{ created: boolean }>;
  /** The DNS redirects in banger's table. */
  listDnsRedirects(): Promise<DnsRedirect[]>;
  /** The VM's masquerade + forward rules exist exactly once; IPv4 forwarding is on. */
  ensure(vmId: string, guestIp: string, bridge: string): Promise<{ created: boolean; rules: number }>;
  /** Remove every rule of the VM (none is fine). */
  remove(vmId: string): Promise<{ removed: number }>;
  /** Banger's per-VM rules. */
  list(): Promise<NatRule[]>;
  /** Whether IPv4 forwarding is on in this network namespace. */
  forwarding(): Promise<boolean>;
  /** Drop banger's whole table (uninstall --purge). */
  purge(): Promise<{ deleted: boolean }>;
}

export const POSTROUTING = 'postrouting';
export const FORWARD = 'forward';
export const PREROUTING = 'prerouting';
export const DNS_COMMENT_PREFIX = 'banger dns ';
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

/** net.ipv4.ip_forward of the network namespace banger works in. */
export interface ForwardingControl {
  get(): Promise<boolean>;
  enable(): Promise<void>;
}

/** Through the sysctl file (per network namespace: that of the process). */
export function fileForwarding(path = IP_FORWARD): ForwardingControl {
  return {
    get: async () => (await readFile(path, 'utf8').catch(() => '0')).trim() === '1',
    enable: () => writeFile(path, '1\n'),
  };
}

type NftCmd = Record<string, unknown>;

const match = (op: string, left: unknown, right: unknown): NftCmd => ({ match: { op, left, right } });
const saddr = { payload: { protocol: 'ip', field: 'saddr' } };
const daddr = { payload: { protocol: 'ip', field: 'daddr' } };
const meta = (key: string): NftCmd => ({ meta: { key } });

/** The table and its two base chains; `add` of an existing object is a no-op in nftables. */
export function baseCommands(): NftCmd[] {
  const t = { family: NFT_FAMILY, table: NFT_TABLE };
  return [
    { add: { table: { family: NFT_FAMILY, name: NFT_TABLE } } },
    {
      add: {
        chain: { ...t, name: POSTROUTING, type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' },
      },
    },
    { add: { chain: { ...t, name: FORWARD, type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } } },
    {
      add: {
        chain: { ...t, name: PREROUTING, type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' },
      },
    },
  ];
}

/** udp and tcp: <bridge> in, daddr <gateway>, dport 53 → redirect to :port. Pure. */
export function dnsRedirectCommands(bridge: string, gateway: string, port: number): NftCmd[] {
  const t = { family: NFT_FAMILY, table: NFT_TABLE };
  return ['udp', 'tcp'].map((proto) => ({
    add: {
      rule: {
        ...t,
        chain: PREROUTING,
        comment: `${DNS_COMMENT_PREFIX}${bridge}`,
        expr: [
          match('==', meta('iifname'), bridge),
          match('==', daddr, gateway),
          match('==', { payload: { protocol: proto, field: 'dport' } }, 53),
          { redirect: { port } },
        ],
      },
    },
  }));
}

/** Parse the DNS redirect rules out of `nft -j list table ip banger`. */
export function parseDnsRedirects(json: unknown): DnsRedirect[] {
  const items = obj(json)?.nftables;
  if (!Array.isArray(items)) throw new HostnetError('list_dns', 'nft -j output has no "nftables" array');
  const by = new Map<string, DnsRedirect>();
  for (const item of items) {
    const r = obj(obj(item)?.rule);
    if (!r || r.family !== NFT_FAMILY || r.table !== NFT_TABLE || typeof r.handle !== 'number') continue;
    if (typeof r.comment !== 'string' || !r.comment.startsWith(DNS_COMMENT_PREFIX)) continue;
    const bridge = r.comment.slice(DNS_COMMENT_PREFIX.length);
    if (!isBangerBridge(bridge)) continue;
    const d = by.get(bridge) ?? { bridge, handles: [] };
    d.handles.push(r.handle);
    for (const e of Array.isArray(r.expr) ? r.expr : []) {
      const m = obj(obj(e)?.match);
      if (m && obj(obj(m.left)?.payload)?.field === 'daddr' && isIpv4(m.right)) d.gateway = m.right;
      const red = obj(obj(e)?.redirect);
      if (red && typeof red.port === 'number') d.port = red.port;
    }
    by.set(bridge, d);
  }
  return [...by.values()];
}

/**
 * A VM's rules: masquerade what the guest sends anywhere but its own bridge, accept its forwarded
 * traffic out, and accept replies back in. Pure: table-tested.
 */
export function vmRuleCommands(vmId: string, guestIp: string, bridge: string): NftCmd[] {
  const t = { family: NFT_FAMILY, table: NFT_TABLE };
  const comment = natComment(vmId);
  return [
    {
      add: {
        rule: {
          ...t,
          chain: POSTROUTING,
          comment,
          expr: [match('==', saddr, guestIp), match('!=', meta('oifname'), bridge), { masquerade: null }],
        },
      },
    },
    {
      add: {
        rule: {
          ...t,
          chain: FORWARD,
          comment,
          expr: [match('==', meta('iifname'), bridge), match('==', saddr, guestIp), { accept: null }],
        },
      },
    },
    {
      add: {
        rule: {
          ...t,
          chain: FORWARD,
          comment,
          expr: [
            match('==', meta('oifname'), bridge),
            match('==', daddr, guestIp),
            match('in', { ct: { key: 'state' } }, ['established', 'related']),
            { accept: null },
          ],
        },
      },
    },
  ];
}

function obj(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

/** Parse `nft -j list table ip banger` into banger's per-VM rules; anything else is ignored. */
export function parseNatRules(json: unknown): NatRule[] {
  const items = obj(json)?.nftables;
  if (!Array.isArray(items)) throw new HostnetError('list_nat', 'nft -j output has no "nftables" array');
  const out: NatRule[] = [];
  for (const item of items) {
    const r = obj(obj(item)?.rule);
    if (!r || r.family !== NFT_FAMILY || r.table !== NFT_TABLE) continue;
    const vmId = vmIdOfNatComment(r.comment);
    if (!vmId || typeof r.chain !== 'string' || typeof r.handle !== 'number') continue;
    const rule: NatRule = { vmId, chain: r.chain, handle: r.handle };
    for (const e of Array.isArray(r.expr) ? r.expr : []) {
      const m = obj(obj(e)?.match);
      if (!m) continue;
      const left = obj(m.left);
      const field = obj(left?.payload)?.field;
      const key = obj(left?.meta)?.key;
      if ((field === 'saddr' || field === 'daddr') && isIpv4(m.right)) rule.guestIp = m.right;
      if ((key === 'iifname' || key === 'oifname') && typeof m.right === 'string') rule.bridge = m.right;
    }
    out.push(rule);
  }
  return out;
}

/** Whether the VM's current rules are exactly the three wanted ones. */
function upToDate(rules: NatRule[], guestIp: string, bridge: string): boolean {
  const post = rules.filter((r) => r.chain === POSTROUTING);
  const fwd = rules.filter((r) => r.chain === FORWARD);
  return (
    post.length === 1 &&
    fwd.length === 2 &&
    rules.length === 3 &&
    rules.every((r) => r.guestIp === guestIp && r.bridge === bridge)
  );
}

export class NftNat implements Nat {
  private readonly run: Runner;
  private readonly nft: string;
  private readonly fwd: ForwardingControl;

  constructor(opts: { runner?: Runner; nftPath?: string; forwarding?: ForwardingControl } = {}) {
    this.run = opts.runner ?? execRunner;
    this.nft = opts.nftPath ?? DEFAULT_TOOLS.nft;
    this.fwd = opts.forwarding ?? fileForwarding();
  }

  private async nftc(op: string, args: string[]): Promise<string> {
    try {
      return await this.run(this.nft, args);
    } catch (err) {
      throw new HostnetError(op, err instanceof Error ? err.message : String(err), { cause: err });
    }
  }

  private async apply(op: string, cmds: NftCmd[]): Promise<void> {
    await this.nftc(op, ['-j', JSON.stringify({ nftables: cmds })]);
  }

  private async tableExists(op: string): Promise<boolean> {
    const items = obj(
      parseJsonOutput(op, 'nft list tables', await this.nftc(op, ['-j', 'list', 'tables'])),
    )?.nftables;
    if (!Array.isArray(items)) throw new HostnetError(op, 'nft -j list tables: no "nftables" array');
    return items.some((i) => {
      const t = obj(obj(i)?.table);
      return t?.family === NFT_FAMILY && t.name === NFT_TABLE;
    });
  }

  private async rules(op: string): Promise<NatRule[]> {
    if (!(await this.tableExists(op))) return [];
    const out = await this.nftc(op, ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE]);
    return parseNatRules(parseJsonOutput(op, 'nft list table', out));
  }

  async list(): Promise<NatRule[]> {
    return this.rules('list_owned');
  }

  async ensure(vmId: string, guestIp: string, bridge: string): Promise<{ created: boolean; rules: number }> {
    const op = 'ensure_nat';
    if (!isVmId(vmId) || !isIpv4(guestIp) || !isBangerBridge(bridge))
      throw new HostnetError(op, `refusing rule for vm ${vmId}, ${guestIp} on ${bridge}`);
    const mine = (await this.rules(op)).filter((r) => r.vmId === vmId);
    let created = false;
    if (!upToDate(mine, guestIp, bridge)) {
      // Replace whatever the VM had in one atomic batch.
      const cmds = [
        ...baseCommands(),
        ...mine.map((r) => ({
          delete: { rule: { family: NFT_FAMILY, table: NFT_TABLE, chain: r.chain, handle: r.handle } },
        })),
        ...vmRuleCommands(vmId, guestIp, bridge),
      ];
      await this.apply(op, cmds);
      created = true;
    }
    if (!(await this.fwd.get())) {
      try {
        await this.fwd.enable();
      } catch (err) {
        throw new HostnetError(op, `cannot enable IPv4 forwarding: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    return { created, rules: 3 };
  }

  async listDnsRedirects(): Promise<DnsRedirect[]> {
    const op = 'list_owned';
    if (!(await this.tableExists(op))) return [];
    return parseDnsRedirects(
      parseJsonOutput(
        op,
        'nft list table',
        await this.nftc(op, ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE]),
      ),
    );
  }

  async ensureDnsRedirect(bridge: string, gateway: string, port: number): Promise<{ created: boolean }> {
    const op = 'ensure_dns_redirect';
    if (!isBangerBridge(bridge) || !isIpv4(gateway) || !Number.isInteger(port) || port < 1 || port > 65535)
      throw new HostnetError(op, `refusing DNS redirect ${bridge} ${gateway}:${port}`);
    const cur = (await this.listDnsRedirects()).find((d) => d.bridge === bridge);
    if (cur && cur.handles.length === 2 && cur.gateway === gateway && cur.port === port)
      return { created: false };
    await this.apply(op, [
      ...baseCommands(),
      ...(cur?.handles ?? []).map((handle) => ({
        delete: { rule: { family: NFT_FAMILY, table: NFT_TABLE, chain: PREROUTING, handle } },
      })),
      ...dnsRedirectCommands(bridge, gateway, port),
    ]);
    return { created: true };
  }

  async remove(vmId: string): Promise<{ removed: number }> {
    const op = 'remove_nat';
    if (!isVmId(vmId)) throw new HostnetError(op, `refusing vm id ${vmId}`);
    const mine = (await this.rules(op)).filter((r) => r.vmId === vmId);
    if (mine.length === 0) return { removed: 0 };
    await this.apply(
      op,
      mine.map((r) => ({
        delete: { rule: { family: NFT_FAMILY, table: NFT_TABLE, chain: r.chain, handle: r.handle } },
      })),
    );
    return { removed: mine.length };
  }

  async forwarding(): Promise<boolean> {
    return this.fwd.get();
  }

  async purge(): Promise<{ deleted: boolean }> {
    const op = 'purge_nat';
    if (!(await this.tableExists(op))) return { deleted: false };
    await this.apply(op, [{ delete: { table: { family: NFT_FAMILY, name: NFT_TABLE } } }]);
    return { deleted: true };
  }
}
