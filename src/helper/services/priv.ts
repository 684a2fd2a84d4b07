// The priv.* verbs of bangerd-root. Each validates its params against the closed vocabulary
// (../validate.ts), then makes one idempotent change through the narrow hostnet seams. Verbs run
// one at a time: two "ensure"s racing on the same bridge or table would otherwise both see
// "missing" and both create.
import type { PrivService } from '../../../generated/handlers.gen.ts';
import type * as T from '../../../generated/types.gen.ts';
import { type Egress, egressSpecFromParams } from '../../hostnet/egress.ts';
import type { EgressLogSource } from '../../hostnet/egress-log.ts';
import { formatCidr, type Links, type Nat, type Resolver, vmIdOfTap } from '../../hostnet/index.ts';
import type { RpcContext } from '../../rpc/context.ts';
import { ErrorResponse } from '../../rpc/errors.ts';
import { BANGER_VERSION } from '../../version.ts';
import {
  validateClearResolverRouting,
  validateCreateTap,
  validateDeleteTap,
  validateEgressAllow,
  validateEgressApply,
  validateEgressEvents,
  validateEgressRemove,
  validateEnsureBridge,
  validateEnsureNat,
  validateRemoveNat,
  validateSyncResolverRouting,
  type ValidateContext,
} from '../validate.ts';

export interface PrivDeps {
  links: Links;
  nat: Nat;
  resolver: Resolver;
  /** Bridged VMs' egress chains (nftables). */
  egress: Egress;
  /** Denials from the kernel log; absent: priv.egress_events says it cannot read them. */
  egressLog?: EgressLogSource & { error?: string | undefined };
  /** The daemon's uid: taps belong to it. */
  ownerUid: number;
  vocabulary: ValidateContext;
  /** The helper's JSON log file, named by priv.ping so the daemon can read op traces back. */
  logFile?: string;
  /** TEST-ONLY (env BANGER_TEST_FAIL_VERB, read at helper start): this verb always fails. */
  testFailVerb?: string;
}

export class PrivServiceImpl implements PrivService {
  private readonly d: PrivDeps;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(deps: PrivDeps) {
    this.d = deps;
  }

  /** Run fn after every verb before it. */
  private serial<R>(verb: string, body: () => Promise<R>): Promise<R> {
    const fn = async (): Promise<R> => {
      if (this.d.testFailVerb === verb)
        throw new ErrorResponse('operation_failed', `injected test fault at ${verb} (BANGER_TEST_FAIL_VERB)`);
      return body();
    };
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    // A HostnetError reaches the dispatcher as is: src/rpc/error-map.ts makes it operation_failed.
    return run;
  }

  async ping(ctx: RpcContext): Promise<T.PrivPingResult> {
    return {
      pong: true,
      version: BANGER_VERSION,
      uid: process.getuid?.() ?? -1,
      pid: process.pid,
      peer_uid: ctx.peer?.uid ?? -1,
      ...(this.d.logFile ? { log_file: this.d.logFile } : {}),
    };
  }

  async ensureBridge(params: T.PrivEnsureBridgeParams, ctx: RpcContext): Promise<T.PrivEnsureBridgeResult> {
    const p = validateEnsureBridge(params, this.d.vocabulary);
    return this.serial('priv.ensure_bridge', async () => {
      const r = await this.d.links.ensureBridge(p.bridge, p.address);
      if (r.changed)
        ctx.log.info({ bridge: p.bridge, address: p.address, created: r.created }, 'bridge ensured');
      if (p.dns_port !== undefined) {
        const gateway = p.address.split('/')[0]!;
        const d = await this.d.nat.ensureDnsRedirect(p.bridge, gateway, p.dns_port);
        if (d.created)
          ctx.log.info({ bridge: p.bridge, gateway, port: p.dns_port }, 'guest DNS redirect written');
      }
      return { bridge: p.bridge, address: p.address, created: r.created, changed: r.changed };
    });
  }

  async createTap(params: T.PrivCreateTapParams, ctx: RpcContext): Promise<T.PrivCreateTapResult> {
    const p = validateCreateTap(params);
    return this.serial('priv.create_tap', async () => {
      const r = await this.d.links.createTap(p.tap, p.bridge, this.d.ownerUid);
      ctx.log.info(
        { tap: p.tap, bridge: p.bridge, owner_uid: this.d.ownerUid, created: r.created },
        'tap ensured',
      );
      return { tap: p.tap, bridge: p.bridge, owner_uid: this.d.ownerUid, created: r.created };
    });
  }

  async deleteTap(params: T.PrivDeleteTapParams, ctx: RpcContext): Promise<T.PrivDeleteTapResult> {
    const p = validateDeleteTap(params);
    return this.serial('priv.delete_tap', async () => {
      const r = await this.d.links.deleteTap(p.tap);
      if (r.deleted) ctx.log.info({ tap: p.tap }, 'tap deleted');
      return { tap: p.tap, deleted: r.deleted };
    });
  }

  async ensureNat(params: T.PrivEnsureNatParams, ctx: RpcContext): Promise<T.PrivEnsureNatResult> {
    const p = validateEnsureNat(params, this.d.vocabulary);
    return this.serial('priv.ensure_nat', async () => {
      const r = await this.d.nat.ensure(p.vm_id, p.guest_ip, p.bridge);
      if (r.created)
        ctx.log.info({ vm_id: p.vm_id, guest_ip: p.guest_ip, bridge: p.bridge }, 'NAT rules written');
      return { vm_id: p.vm_id, guest_ip: p.guest_ip, created: r.created, rules: r.rules };
    });
  }

  async removeNat(params: T.PrivRemoveNatParams, ctx: RpcContext): Promise<T.PrivRemoveNatResult> {
    const p = validateRemoveNat(params);
    return this.serial('priv.remove_nat', async () => {
      const r = await this.d.nat.remove(p.vm_id);
      if (r.removed > 0) ctx.log.info({ vm_id: p.vm_id, removed: r.removed }, 'NAT rules removed');
      return { vm_id: p.vm_id, removed: r.removed };
    });
  }

  async syncResolverRouting(
    params: T.PrivSyncResolverRoutingParams,
    ctx: RpcContext,
  ): Promise<T.PrivSyncResolverRoutingResult> {
    const p = validateSyncResolverRouting(params);
    return this.serial('priv.sync_resolver_routing', async () => {
      const presence = await this.d.resolver.present();
      if (!presence.present) return { applied: false, detail: presence.detail };
      const dns = `127.0.0.1:${p.dns_port}`;
      await this.d.resolver.sync(p.bridge, dns);
      ctx.log.info({ bridge: p.bridge, dns }, 'resolver routes ~vm to banger');
      return { applied: true, detail: `~vm on ${p.bridge} → ${dns}` };
    });
  }

  async clearResolverRouting(
    params: T.PrivClearResolverRoutingParams,
    _ctx: RpcContext,
  ): Promise<T.PrivClearResolverRoutingResult> {
    const p = validateClearResolverRouting(params);
    return this.serial('priv.clear_resolver_routing', async () => {
      const presence = await this.d.resolver.present();
      if (!presence.present) return { applied: false, detail: presence.detail };
      await this.d.resolver.clear(p.bridge);
      return { applied: true, detail: `reverted ${p.bridge}` };
    });
  }

  async egressApply(params: T.PrivEgressApplyParams, ctx: RpcContext): Promise<T.PrivEgressApplyResult> {
    const p = validateEgressApply(params, this.d.vocabulary);
    return this.serial('priv.egress_apply', async () => {
      if (p.mode === 'all') {
        const r = await this.d.egress.remove(p.tap);
        if (r.removed) ctx.log.info({ tap: p.tap, mode: p.mode }, 'egress chains removed');
        return { tap: p.tap, mode: p.mode, created: false, rules: 0 };
      }
      // The daemon hashes the same reading of these params (src/egress/bridged.ts applyParamsHash).
      const r = await this.d.egress.apply({
        ...egressSpecFromParams(p),
        pool: formatCidr(this.d.vocabulary.pool),
      });
      ctx.log.info(
        {
          tap: p.tap,
          guest_ip: p.guest_ip,
          mode: p.mode,
          cidrs: p.cidrs.length,
          rules: r.rules,
          created: r.created,
        },
        'egress chains written',
      );
      return { tap: p.tap, mode: p.mode, created: r.created, rules: r.rules };
    });
  }

  async egressAllow(params: T.PrivEgressAllowParams, ctx: RpcContext): Promise<T.PrivEgressAllowResult> {
    const p = validateEgressAllow(params);
    return this.serial('priv.egress_allow', async () => {
      const r = await this.d.egress.allow(
        p.tap,
        p.entries.map((e) => ({
          ip: e.ip,
          ttlS: e.ttl_s,
          ...(e.port !== undefined ? { port: e.port } : {}),
        })),
      );
      ctx.log.debug({ tap: p.tap, entries: p.entries }, 'egress set elements added');
      return { tap: p.tap, added: r.added };
    });
  }

  async egressRemove(params: T.PrivEgressRemoveParams, ctx: RpcContext): Promise<T.PrivEgressRemoveResult> {
    const p = validateEgressRemove(params);
    return this.serial('priv.egress_remove', async () => {
      const r = await this.d.egress.remove(p.tap);
      if (r.removed) ctx.log.info({ tap: p.tap }, 'egress chains removed');
      return { tap: p.tap, removed: r.removed };
    });
  }

  /** Not serialised: reading the ring changes nothing on the host. */
  async egressEvents(params: T.PrivEgressEventsParams, _ctx: RpcContext): Promise<T.PrivEgressEventsResult> {
    const p = validateEgressEvents(params);
    const src = this.d.egressLog;
    if (!src)
      return { events: [], cursor: p.cursor, dropped: false, error: 'the kernel log is not followed' };
    const r = src.since(p.cursor);
    return { ...r, ...(src.error ? { error: src.error } : {}) };
  }

  async listOwned(_ctx: RpcContext): Promise<T.PrivListOwnedResult> {
    return this.serial('priv.list_owned', async () => {
      const [bridges, taps, nat, dns, ipForward, resolver, egress] = await Promise.all([
        this.d.links.listBridges(),
        this.d.links.listTaps(),
        this.d.nat.list(),
        this.d.nat.listDnsRedirects(),
        this.d.nat.forwarding(),
        this.d.resolver.present(),
        this.d.egress.list(),
      ]);
      return {
        bridges: bridges.map((b) => ({ name: b.name, up: b.up, addresses: b.addresses })),
        taps: taps.map((t) => {
          const o: T.PrivListOwnedResult['taps'][number] = {
            name: t.name,
            vm_id: vmIdOfTap(t.name) ?? '',
            up: t.up,
          };
          if (t.master !== undefined) o.bridge = t.master;
          if (t.ownerUid !== undefined) o.owner_uid = t.ownerUid;
          return o;
        }),
        nat: nat.map((r) => {
          const o: T.PrivListOwnedResult['nat'][number] = { vm_id: r.vmId, chain: r.chain, handle: r.handle };
          if (r.guestIp !== undefined) o.guest_ip = r.guestIp;
          if (r.bridge !== undefined) o.bridge = r.bridge;
          return o;
        }),
        dns_redirects: dns.map((d) => {
          const o: T.PrivListOwnedResult['dns_redirects'][number] = { bridge: d.bridge };
          if (d.gateway !== undefined) o.gateway = d.gateway;
          if (d.port !== undefined) o.port = d.port;
          return o;
        }),
        ip_forward: ipForward,
        resolver: { present: resolver.present, detail: resolver.detail },
        egress: egress.map((e) => ({
          tap: e.tap,
          ingress: e.ingress,
          ...(e.guestIp ? { guest_ip: e.guestIp } : {}),
          ...(e.policyHash ? { policy_hash: e.policyHash } : {}),
        })),
      };
    });
  }
}
