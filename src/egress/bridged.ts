// Egress policy of bridged VMs, daemon side (issue 16). The host enforces it: bangerd-root writes
// per-tap nftables chains (priv.egress_apply; src/hostnet/egress.ts), so root in the guest cannot
// route, resolve or spoof around it. Here live the choices: which policy becomes which chain
// (IP and CIDR rules directly; domain and wildcard rules through banger's resolver, which adds the
// addresses it hands a VM for an allowed name to that VM's sets with the answer's TTL before the
// guest sees the answer), when chains are written (VM start, a live `vm set --egress`) and removed
// (VM delete, start-up reconcile), and the kernel's denial lines becoming EgressEvents.
import type { PrivApi } from '../../generated/client.gen.ts';
import type { PrivEgressApplyParams, PrivListOwnedResult } from '../../generated/types.gen.ts';
import { egressPolicyHash, egressSpecFromParams } from '../hostnet/egress.ts';
import { tapNameFor } from '../hostnet/names.ts';
import type { Logger } from '../log/logger.ts';
import type { VmRow } from '../store/index.ts';
import type { EgressEvent } from './events.ts';
import { ruleFor, type EgressPolicy, type EgressRule } from './rules.ts';

/** The port banger's egress proxy listens on at the bridge gateway (X: [egress] proxy_port). */
export const BRIDGED_PROXY_PORT = 3128;
/** The shortest life of an address in a VM's set, whatever the answer's TTL. */
export const MIN_ALLOW_TTL_S = 30;
/** How often the helper's denial ring is read while any bridged VM is restricted. */
export const EVENTS_POLL_MS = 1000;

export type EgressPriv = Pick<PrivApi, 'egress_apply' | 'egress_allow' | 'egress_remove' | 'egress_events'>;

export type BridgedVm = Pick<VmRow, 'id' | 'name' | 'guestIp' | 'networkMode' | 'egress'>;

export interface BridgedEgressDeps {
  /** The helper's priv verbs; undefined when the daemon runs without one. */
  priv: () => EgressPriv | undefined;
  /** Banger's bridge and its address (the guests' gateway, resolver and proxy). */
  plan: { bridge: string; gateway: string };
  /** The port guests' DNS arrives at after the bridge's port-53 redirect (config dns_port). */
  dnsPort: number;
  /** The bridged proxy's port; 0: none. */
  proxyPort?: number;
  /** The VMs banger knows (the store). */
  vms: () => BridgedVm[];
  log: Logger;
  /** Where events go (E's EgressEvents.recordEgress); a log line when unset. */
  record?: (ev: EgressEvent) => void;
}

/** The IP and CIDR rules as the helper takes them. Pure. */
export function policyCidrs(p: EgressPolicy): PrivEgressApplyParams['cidrs'] {
  if (p.mode !== 'allow') return [];
  return p.rules
    .filter((r) => r.kind === 'ip' || r.kind === 'cidr')
    .map((r) => ({
      cidr: r.kind === 'ip' ? `${r.value}/32` : r.value,
      ...(r.port !== undefined ? { port: r.port } : {}),
    }));
}

/** The priv.egress_apply params of a bridged VM. Pure. */
export function applyParams(
  vm: Pick<VmRow, 'id' | 'guestIp' | 'egress'>,
  d: Pick<BridgedEgressDeps, 'plan' | 'dnsPort' | 'proxyPort'>,
): PrivEgressApplyParams {
  if (!vm.guestIp) throw new Error(`vm ${vm.id} has no guest address`);
  const proxyPort = d.proxyPort ?? BRIDGED_PROXY_PORT;
  return {
    tap: tapNameFor(vm.id),
    guest_ip: vm.guestIp,
    bridge: d.plan.bridge,
    mode: vm.egress.mode,
    cidrs: policyCidrs(vm.egress),
    // dns_port 0 (no resolver): port 53 of the gateway, where nothing answers.
    resolver: { ip: d.plan.gateway, port: d.dnsPort > 0 ? d.dnsPort : 53 },
    ...(proxyPort > 0 ? { proxy: { ip: d.plan.gateway, port: proxyPort } } : {}),
  };
}

/**
 * What the helper's chains carry for these params: the hash of the very spec the helper builds
 * from them (src/hostnet/egress.ts egressSpecFromParams). Pure.
 */
export function applyParamsHash(p: PrivEgressApplyParams): string {
  return egressPolicyHash(egressSpecFromParams(p));
}

/**
 * The domain and wildcard rules that allow a name, whatever their port: undefined when none
 * does. `ports` holds undefined when one of them allows any port. Pure.
 */
export function nameRules(
  p: EgressPolicy,
  name: string,
): { rules: EgressRule[]; anyPort: boolean; ports: number[] } | undefined {
  if (p.mode !== 'allow') return undefined;
  const rules = p.rules.filter(
    (r) =>
      (r.kind === 'domain' || r.kind === 'wildcard') &&
      ruleFor({ mode: 'allow', rules: [r] }, { host: name, port: r.port ?? 0 }) !== undefined,
  );
  if (rules.length === 0) return undefined;
  const anyPort = rules.some((r) => r.port === undefined);
  return { rules, anyPort, ports: anyPort ? [] : [...new Set(rules.map((r) => r.port!))] };
}

/** The restricted bridged VMs among `vms`, by guest address. Pure. */
export function restrictedByIp(vms: readonly BridgedVm[]): Map<string, BridgedVm> {
  const m = new Map<string, BridgedVm>();
  for (const v of vms)
    if (v.networkMode === 'bridge' && v.guestIp && v.egress.mode !== 'all' && !m.has(v.guestIp))
      m.set(v.guestIp, v);
  return m;
}

/** What the resolver is to do with one guest query (dns.ts DnsEgressHook). */
export type DnsVerdict =
  | { allow: false; deny: () => void }
  | { allow: true; admit: (answers: { ip: string; ttl: number }[]) => Promise<void> };

/**
 * egress_remove, except that a helper older than the verb (unknown_method) has no chains to
 * remove: an unrestricted VM must still start and be deleted with it.
 */
async function removeTolerant(priv: EgressPriv, vmId: string): Promise<void> {
  try {
    await priv.egress_remove({ tap: tapNameFor(vmId) });
  } catch (err) {
    // The daemon's HelperError (src/daemon/helper-link.ts, a layer above this one) carries the
    // helper's wire code; read it structurally.
    if ((err as { code?: unknown } | null)?.code === 'unknown_method') return;
    throw err;
  }
}

export class BridgedEgress {
  private readonly d: BridgedEgressDeps;
  private timer: NodeJS.Timeout | undefined;
  private cursor = 0;
  private polling = false;
  private eventsError: string | undefined;
  /**
   * The restricted bridged VMs by guest address, for the resolver's hook (every forwarded query
   * of every bridged guest asks): built from the store on first use and by reconcile, then kept
   * current by apply and remove, which every start, policy change and delete goes through.
   */
  private byIp: Map<string, BridgedVm> | undefined;

  constructor(deps: BridgedEgressDeps) {
    this.d = deps;
  }

  /** Set once the event ring exists (start-up order). */
  set record(fn: (ev: EgressEvent) => void) {
    this.d.record = fn;
  }

  private emit(ev: EgressEvent): void {
    if (this.d.record) this.d.record(ev);
    else
      this.d.log[ev.verdict === 'deny' ? 'warn' : 'info'](
        {
          vm: ev.vm,
          dest: `${ev.host ?? ev.ip ?? '?'}${ev.port ? `:${ev.port}` : ''}`,
          rule: ev.rule,
          reason: ev.reason,
        },
        `egress ${ev.verdict}`,
      );
  }

  /**
   * Write the VM's chains as its policy says (mode all: none). Call after its tap exists (start)
   * and whenever the policy changes while it runs: the chain is replaced in one batch and the
   * sets emptied (names allowed before must be resolved again).
   */
  async apply(vm: BridgedVm): Promise<void> {
    const priv = this.d.priv();
    if (!priv || vm.networkMode !== 'bridge') return;
    if (vm.egress.mode === 'all') {
      await removeTolerant(priv, vm.id);
      this.index(vm);
      return;
    }
    await priv.egress_apply(applyParams(vm, this.d));
    // After the chains: a failed apply leaves the policy the host still enforces.
    this.index(vm);
    this.ensurePolling();
  }

  /** Remove the VM's chains (its delete); none is fine. */
  async remove(vm: Pick<VmRow, 'id'>): Promise<void> {
    this.unindex(vm.id);
    const priv = this.d.priv();
    if (!priv) return;
    await removeTolerant(priv, vm.id);
  }

  /**
   * Start-up: chains of taps whose VM is gone, not bridged or unrestricted go; a restricted
   * bridged VM whose tap exists without its chain (a host reboot, a helper restart) gets it back.
   */
  async reconcile(
    owned: Pick<PrivListOwnedResult, 'taps' | 'egress'>,
  ): Promise<{ removed: string[]; applied: string[] }> {
    const done = { removed: [] as string[], applied: [] as string[] };
    const priv = this.d.priv();
    if (!priv) return done;
    const all = this.d.vms();
    this.byIp = restrictedByIp(all);
    const byTap = new Map(all.map((v) => [tapNameFor(v.id), v]));
    const chains = new Set((owned.egress ?? []).map((e) => e.tap));
    for (const tap of chains) {
      const vm = byTap.get(tap);
      if (!vm || vm.networkMode !== 'bridge' || vm.egress.mode === 'all') {
        await priv.egress_remove({ tap });
        done.removed.push(tap);
      }
    }
    const taps = new Set(owned.taps.map((t) => t.name));
    for (const [tap, vm] of byTap) {
      if (vm.networkMode !== 'bridge' || vm.egress.mode === 'all' || !vm.guestIp) continue;
      if (!taps.has(tap)) continue; // its start creates the tap and applies then
      const st = (owned.egress ?? []).find((e) => e.tap === tap);
      const params = applyParams(vm, this.d);
      // The chains must say what the store says: a vm set killed between writing them and its
      // row leaves the new policy enforced under the old row (the hash tells them apart).
      if (!st || !st.ingress || st.guest_ip !== vm.guestIp || st.policy_hash !== applyParamsHash(params)) {
        await priv.egress_apply(params);
        done.applied.push(tap);
      }
      this.ensurePolling();
    }
    return done;
  }

  /** The restricted bridged VM that owns a source address, if any. */
  private vmAt(ip: string): BridgedVm | undefined {
    this.byIp ??= restrictedByIp(this.d.vms());
    return this.byIp.get(ip);
  }

  /** The VM's entry as its (new) policy says: restricted and addressed, or none. */
  private index(vm: BridgedVm): void {
    // Built first if need be: the store may not hold this policy yet (vm set writes it after).
    const byIp = this.unindex(vm.id);
    if (vm.guestIp && vm.egress.mode !== 'all') byIp.set(vm.guestIp, vm);
  }

  private unindex(vmId: string): Map<string, BridgedVm> {
    const byIp = (this.byIp ??= restrictedByIp(this.d.vms()));
    for (const [ip, v] of byIp) if (v.id === vmId) byIp.delete(ip);
    return byIp;
  }

  /**
   * The resolver's hook: undefined for a source that is not a restricted bridged VM (answer as
   * usual); otherwise whether the name may be resolved and, if so, how to admit the answer's
   * addresses before the guest gets them.
   */
  dnsCheck(src: string, name: string): DnsVerdict | undefined {
    const vm = this.vmAt(src);
    if (!vm) return undefined;
    const allowed = nameRules(vm.egress, name);
    if (!allowed)
      return {
        allow: false,
        deny: () =>
          this.emit({
            time: new Date().toISOString(),
            vm: vm.name,
            verdict: 'deny',
            proto: 'dns',
            host: name,
            reason: "no rule allows this name: banger's resolver answered REFUSED",
          }),
      };
    return {
      allow: true,
      admit: async (answers) => {
        if (answers.length === 0) return;
        const priv = this.d.priv();
        if (!priv) throw new Error('no root helper: cannot admit resolved addresses');
        const ports: (number | undefined)[] = allowed.anyPort ? [undefined] : allowed.ports;
        const entries = answers.flatMap((a) =>
          ports.map((port) => ({
            ip: a.ip,
            ttl_s: Math.max(MIN_ALLOW_TTL_S, a.ttl),
            ...(port !== undefined ? { port } : {}),
          })),
        );
        for (let i = 0; i < entries.length; i += 64)
          await priv.egress_allow({ tap: tapNameFor(vm.id), entries: entries.slice(i, i + 64) });
        this.emit({
          time: new Date().toISOString(),
          vm: vm.name,
          verdict: 'allow',
          proto: 'dns',
          host: name,
          ip: answers[0]!.ip,
          rule: allowed.rules[0]!.text,
          reason: `resolved by banger; ${answers.map((a) => a.ip).join(', ')} allowed for ${Math.max(MIN_ALLOW_TTL_S, Math.min(...answers.map((a) => a.ttl)))} s`,
        });
      },
    };
  }

  /** Read denials from the helper while some bridged VM is restricted. */
  private ensurePolling(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.poll(), EVENTS_POLL_MS);
    this.timer.unref();
  }

  /** One read of the helper's denial ring (public for tests). */
  async poll(): Promise<void> {
    const priv = this.d.priv();
    if (!priv || this.polling) return;
    this.polling = true;
    try {
      const r = await priv.egress_events({ cursor: this.cursor });
      if (r.error && r.error !== this.eventsError)
        this.d.log.warn({ err: r.error }, 'egress denials of bridged VMs cannot be read from the kernel log');
      this.eventsError = r.error;
      this.cursor = r.cursor;
      if (r.events.length === 0) return;
      const byTap = new Map(this.d.vms().map((v) => [tapNameFor(v.id), v]));
      for (const e of r.events) {
        const vm = byTap.get(e.tap);
        if (!vm) continue;
        const dns = e.dport === 53 || e.dport === 853;
        const proto = dns ? 'dns' : e.proto === 'udp' ? 'udp' : 'tcp';
        this.emit({
          time: e.time,
          vm: vm.name,
          verdict: 'deny',
          proto,
          ip: e.dst,
          ...(e.dport !== undefined ? { port: e.dport } : {}),
          reason: dns
            ? `DNS to ${e.dst} rejected: guests resolve through banger's resolver only`
            : `${e.proto} to ${e.dst}${e.dport !== undefined ? `:${e.dport}` : ''} rejected by the bridged filter: no rule allows it`,
        });
      }
    } catch (err) {
      this.d.log.debug({ err: (err as Error).message }, 'egress events poll failed');
    } finally {
      this.polling = false;
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
