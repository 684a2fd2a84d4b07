// A recording fake of Links, Nat and Resolver: an in-memory host that keeps a transcript of every
// operation and can be told to fail a named one. Service and daemon tests use it to prove revert
// paths ("tap creation fails → nothing left behind") without root.
import { HostnetError } from './exec.ts';
import type { BridgeState, Links, TapState } from './links.ts';
import { natComment } from './names.ts';
import { FORWARD, POSTROUTING, type DnsRedirect, type Nat, type NatRule } from './nat.ts';
import type { Resolver, ResolverPresence } from './resolver.ts';

export type FakeOp =
  | 'ensure_bridge'
  | 'create_tap'
  | 'delete_tap'
  | 'delete_bridge'
  | 'list_bridges'
  | 'list_taps'
  | 'ensure_nat'
  | 'remove_nat'
  | 'list_nat'
  | 'purge_nat'
  | 'ensure_dns_redirect'
  | 'sync_resolver_routing'
  | 'clear_resolver_routing';

export class RecordingHostnet implements Links, Nat, Resolver {
  readonly transcript: string[] = [];
  readonly bridges = new Map<string, BridgeState>();
  readonly taps = new Map<string, TapState>();
  /** vm id → guest ip and bridge. */
  readonly natRules = new Map<string, { guestIp: string; bridge: string }>();
  readonly resolverLinks = new Map<string, string>();
  /** bridge → gateway:port its guests' DNS is redirected to. */
  readonly dnsRedirects = new Map<string, { gateway: string; port: number }>();
  ipForward = false;
  resolverPresent: boolean;
  private readonly failures = new Map<FakeOp, string>();
  private nextHandle = 1;

  constructor(opts: { resolverPresent?: boolean } = {}) {
    this.resolverPresent = opts.resolverPresent ?? false;
  }

  /** Make the next call of op fail (once) with message. */
  failOn(op: FakeOp, message = 'injected failure'): this {
    this.failures.set(op, message);
    return this;
  }

  /** The transcript as printable text, one operation a line. */
  print(): string {
    return this.transcript.join('\n');
  }

  private enter(op: FakeOp, args: string): void {
    const fail = this.failures.get(op);
    if (fail !== undefined) {
      this.failures.delete(op);
      this.transcript.push(`${op} ${args} -> FAILED: ${fail}`);
      throw new HostnetError(op, fail);
    }
    this.transcript.push(`${op} ${args}`.trimEnd());
  }

  async ensureBridge(name: string, address: string): Promise<{ created: boolean; changed: boolean }> {
    this.enter('ensure_bridge', `${name} ${address}`);
    const cur = this.bridges.get(name);
    const changed = !cur || !cur.up || cur.addresses.length !== 1 || cur.addresses[0] !== address;
    this.bridges.set(name, { name, up: true, addresses: [address] });
    return { created: !cur, changed };
  }

  async createTap(name: string, bridge: string, ownerUid: number): Promise<{ created: boolean }> {
    this.enter('create_tap', `${name} master=${bridge} owner=${ownerUid}`);
    if (!this.bridges.has(bridge)) throw new HostnetError('create_tap', `bridge ${bridge} does not exist`);
    const created = !this.taps.has(name);
    this.taps.set(name, { name, up: true, master: bridge, ownerUid });
    return { created };
  }

  async deleteTap(name: string): Promise<{ deleted: boolean }> {
    this.enter('delete_tap', name);
    return { deleted: this.taps.delete(name) };
  }

  async deleteBridge(name: string): Promise<{ deleted: boolean }> {
    this.enter('delete_bridge', name);
    return { deleted: this.bridges.delete(name) };
  }

  async listBridges(): Promise<BridgeState[]> {
    this.enter('list_bridges', '');
    return [...this.bridges.values()].map((b) => ({ ...b, addresses: [...b.addresses] }));
  }

  async listTaps(): Promise<TapState[]> {
    this.enter('list_taps', '');
    return [...this.taps.values()].map((t) => ({ ...t }));
  }

  async ensure(vmId: string, guestIp: string, bridge: string): Promise<{ created: boolean; rules: number }> {
    this.enter('ensure_nat', `${natComment(vmId)} ${guestIp} via ${bridge}`);
    const cur = this.natRules.get(vmId);
    this.natRules.set(vmId, { guestIp, bridge });
    this.ipForward = true;
    return { created: !cur || cur.guestIp !== guestIp || cur.bridge !== bridge, rules: 3 };
  }

  async ensureDnsRedirect(bridge: string, gateway: string, port: number): Promise<{ created: boolean }> {
    this.enter('ensure_dns_redirect', `${bridge} ${gateway}:53 -> :${port}`);
    const cur = this.dnsRedirects.get(bridge);
    this.dnsRedirects.set(bridge, { gateway, port });
    return { created: !cur || cur.gateway !== gateway || cur.port !== port };
  }

  async listDnsRedirects(): Promise<DnsRedirect[]> {
    return [...this.dnsRedirects.entries()].map(([bridge, d]) => ({
      bridge,
      gateway: d.gateway,
      port: d.port,
      handles: [1, 2],
    }));
  }

  async remove(vmId: string): Promise<{ removed: number }> {
    this.enter('remove_nat', natComment(vmId));
    return { removed: this.natRules.delete(vmId) ? 3 : 0 };
  }

  async list(): Promise<NatRule[]> {
    this.enter('list_nat', '');
    const out: NatRule[] = [];
    for (const [vmId, r] of this.natRules) {
      for (const chain of [POSTROUTING, FORWARD, FORWARD])
        out.push({ vmId, chain, handle: this.nextHandle++, guestIp: r.guestIp, bridge: r.bridge });
    }
    return out;
  }

  async forwarding(): Promise<boolean> {
    return this.ipForward;
  }

  async purge(): Promise<{ deleted: boolean }> {
    this.enter('purge_nat', '');
    const had = this.natRules.size > 0;
    this.natRules.clear();
    return { deleted: had };
  }

  async present(): Promise<ResolverPresence> {
    return this.resolverPresent
      ? { present: true, detail: 'systemd-resolved is running (fake)' }
      : { present: false, detail: 'systemd-resolved is not running (fake)' };
  }

  async sync(link: string, dns: string): Promise<void> {
    this.enter('sync_resolver_routing', `${link} ${dns} ~vm`);
    this.resolverLinks.set(link, dns);
  }

  async clear(link: string): Promise<void> {
    this.enter('clear_resolver_routing', link);
    this.resolverLinks.delete(link);
  }
}
