// Bridged networking on the daemon side. The daemon never touches the host network itself: every
// change is one idempotent priv.* call to bangerd-root. Here live the choices: which mode a VM
// gets, its guest address (allocated once from the configured subnet and persisted in the VM row),
// its tap name (derived from the VM id), the static guest configuration injected before boot,
// and the start-up pass that removes what no VM owns.
import type { PrivApi } from '../../generated/client.gen.ts';
import { DNS_DOMAIN, formatIpv4, netmask, parseCidr, tapNameFor, vmIdOfTap } from '../hostnet/index.ts';
import type { Logger } from '../log/logger.ts';
import { VmError } from './errors.ts';
import type { Store, VmRow } from '../store/index.ts';
import type { DaemonStatusResult } from '../../generated/types.gen.ts';
import type { BridgedEgress } from '../egress/bridged.ts';

/** The daemon configuration this module reads (DaemonConfig satisfies it). */
export interface NetworkConfig {
  network: 'auto' | 'user' | 'bridge';
  bridge_name: string;
  bridge_cidr: string;
  dns_port: number;
}

/** The link to bangerd-root as this module needs it (the daemon's HelperLink satisfies it). */
export interface HelperAccess {
  readonly client: { priv: PrivCalls } | undefined;
  health(): Promise<DaemonStatusResult['helper']>;
}

export type NetworkMode = 'user' | 'bridge';

/** The priv.* verbs the daemon uses: the generated helper client, or a test double. */
export type PrivCalls = Pick<
  PrivApi,
  | 'ensure_bridge'
  | 'create_tap'
  | 'delete_tap'
  | 'ensure_nat'
  | 'remove_nat'
  | 'list_owned'
  | 'sync_resolver_routing'
  | 'clear_resolver_routing'
>;

/** What a bridged guest is told on its kernel command line and in resolv.conf. */
export interface GuestNet {
  tap: string;
  ip: string;
  prefix: number;
  netmask: string;
  gateway: string;
  nameservers: string[];
}

export interface BridgePlan {
  bridge: string;
  /** The subnet, e.g. 10.213.0.0/24. */
  cidr: string;
  /** The bridge's own address (first host), which guests use as gateway and DNS. */
  gateway: string;
  prefix: number;
}

export function bridgePlan(config: Pick<NetworkConfig, 'bridge_name' | 'bridge_cidr'>): BridgePlan {
  const c = parseCidr(config.bridge_cidr);
  return {
    bridge: config.bridge_name,
    cidr: `${formatIpv4(c.network)}/${c.prefix}`,
    gateway: formatIpv4(c.network + 1),
    prefix: c.prefix,
  };
}

/** The dracut-style `ip=` a bridged guest boots with: no DHCP wait. */
export function bridgeIpArg(name: string, g: GuestNet): string {
  return `ip=${g.ip}::${g.gateway}:${g.netmask}:${name}:eth0:off:${g.nameservers[0] ?? g.gateway}`;
}

export interface NetworkDeps {
  config: NetworkConfig;
  store: Store;
  log: Logger;
  /** The link to bangerd-root (its client is undefined when rootless). */
  helper: HelperAccess;
  /** Tests inject PrivCalls directly. */
  priv?: PrivCalls;
  /** The .vm DNS server: told to listen on the bridge address once the bridge exists. */
  dns?: { listen(address: string, forward: boolean): Promise<void> };
  /** Egress policy enforcement on the host (src/egress/bridged.ts); none: every VM is `all`. */
  egress?: BridgedEgress;
}

export class VmNetwork {
  readonly plan: BridgePlan;
  private readonly d: NetworkDeps;

  constructor(deps: NetworkDeps) {
    this.d = deps;
    this.plan = bridgePlan(deps.config);
  }

  private get priv(): PrivCalls | undefined {
    return this.d.priv ?? this.d.helper.client?.priv;
  }

  private requirePriv(what: string): PrivCalls {
    const p = this.priv;
    if (!p) {
      throw new VmError(
        'invalid',
        `${what} needs bridge networking, which needs the root helper (bangerd-root); this daemon runs without one (--helper-socket none): use --network user`,
      );
    }
    return p;
  }

  /**
   * The mode of a new VM: the requested one, else config `network`: `auto` means bridge when
   * the helper answers, else user. Explicit bridge with no reachable helper is an error.
   */
  async chooseMode(requested: NetworkMode | undefined, nat: boolean): Promise<NetworkMode> {
    const want = requested ?? (this.d.config.network === 'auto' ? undefined : this.d.config.network);
    if (want === 'user') {
      if (nat && requested === 'user')
        throw new VmError(
          'invalid',
          '--nat applies to bridge networking; user networking always reaches out through QEMU',
        );
      return 'user';
    }
    // No root helper at all: user networking, unless bridge or NAT was asked for (said below).
    if (want === undefined && !nat && !this.priv) return 'user';
    const why = want === 'bridge' ? 'network "bridge"' : nat ? '--nat' : 'network "auto"';
    this.requirePriv(why);
    const h = await this.d.helper.health();
    if (!h.reachable && this.d.priv === undefined) {
      if (want === undefined && !nat) {
        this.d.log.warn({ helper: h.error }, 'root helper unreachable; falling back to user networking');
        return 'user';
      }
      throw new VmError(
        'failed',
        `bridge networking needs the root helper, which does not answer at ${h.socket ?? '?'} (${h.error ?? 'unknown error'}); check it with banger doctor`,
      );
    }
    return 'bridge';
  }

  /** The lowest free guest address; call inside the store transaction that records the VM. */
  allocateGuestIp(): string {
    return this.d.store.vms.nextFreeGuestIp(this.plan.cidr, [this.plan.gateway]);
  }

  guest(vm: Pick<VmRow, 'id' | 'guestIp'>): GuestNet {
    if (!vm.guestIp) throw new VmError('conflict', `vm ${vm.id} has no guest address`);
    return {
      tap: tapNameFor(vm.id),
      ip: vm.guestIp,
      prefix: this.plan.prefix,
      netmask: netmask(this.plan.prefix),
      gateway: this.plan.gateway,
      nameservers: [this.plan.gateway],
    };
  }

  /**
   * Bridge, tap and (when asked) NAT for a VM; idempotent, so start calls it too. A failure part
   * way removes what this call made before rethrowing: nothing is left behind.
   */
  async attach(vm: Pick<VmRow, 'id' | 'name' | 'guestIp' | 'nat' | 'networkMode' | 'egress'>): Promise<void> {
    const priv = this.requirePriv(`vm "${vm.name}"`);
    const g = this.guest(vm);
    const bridge = this.plan.bridge;
    await this.ensureBridge(priv);
    await priv.create_tap({ tap: g.tap, bridge });
    let natDone = false;
    try {
      if (vm.nat) {
        await priv.ensure_nat({ vm_id: vm.id, guest_ip: g.ip, bridge });
        natDone = true;
      }
      // Before the guest can send a packet: a policy that cannot be written fails the start.
      await this.applyEgress(vm);
    } catch (err) {
      if (natDone) await priv.remove_nat({ vm_id: vm.id }).catch(() => undefined);
      await priv.delete_tap({ tap: g.tap }).catch(() => undefined);
      throw err;
    }
    await this.syncResolver();
  }

  /** The bridge (and guests' DNS redirect), then the DNS listener on the bridge address. */
  private async ensureBridge(priv: PrivCalls): Promise<void> {
    const port = this.d.config.dns_port;
    await priv.ensure_bridge({
      bridge: this.plan.bridge,
      address: `${this.plan.gateway}/${this.plan.prefix}`,
      ...(port > 0 ? { dns_port: port } : {}),
    });
    await this.listenOnBridge();
  }

  private async listenOnBridge(): Promise<void> {
    if (!this.d.dns) return;
    await this.d.dns.listen(this.plan.gateway, true).catch((err: unknown) => {
      this.d.log.warn(
        { address: this.plan.gateway, err: (err as Error).message },
        'guests cannot resolve .vm names: DNS cannot listen on the bridge address',
      );
    });
  }

  /** Remove the VM's NAT rules and tap (each idempotent). */
  /**
   * A warm template's NIC while it boots: a tap on banger's bridge named from the template id's
   * first 12 hex digits (the guest has no address; each clone gets its own).
   */
  async templateTap(templateId: string): Promise<{ tap: string; release: () => Promise<void> }> {
    const priv = this.requirePriv('a bridged warm template');
    const id = /^warm-([0-9a-f]{12})/.exec(templateId)?.[1];
    if (!id) throw new VmError('invalid', `not a warm template id: ${templateId}`);
    const tap = tapNameFor(id);
    await this.ensureBridge(priv);
    await priv.create_tap({ tap, bridge: this.plan.bridge });
    return {
      tap,
      release: async () => {
        await priv.delete_tap({ tap });
      },
    };
  }

  /**
   * Write a bridged VM's egress chains as its policy now says (start, and a live vm set --egress).
   * A restricted policy without the enforcement is refused, never silently allowed.
   */
  async applyEgress(vm: Pick<VmRow, 'id' | 'name' | 'guestIp' | 'networkMode' | 'egress'>): Promise<void> {
    if (vm.networkMode !== 'bridge') return;
    if (!this.d.egress) {
      if (vm.egress.mode !== 'all')
        throw new VmError(
          'invalid',
          `vm "${vm.name}": this daemon cannot enforce egress policies of bridged VMs`,
        );
      return;
    }
    await this.d.egress.apply(vm);
  }

  async detach(vm: Pick<VmRow, 'id' | 'name'>): Promise<void> {
    const priv = this.priv;
    if (!priv) return;
    await this.d.egress?.remove(vm);
    await priv.remove_nat({ vm_id: vm.id });
    await priv.delete_tap({ tap: tapNameFor(vm.id) });
  }

  /** Route `.vm` to the daemon's DNS through systemd-resolved, when present. Never throws. */
  async syncResolver(): Promise<void> {
    const priv = this.priv;
    if (!priv || this.d.config.dns_port === 0) return;
    try {
      const r = await priv.sync_resolver_routing({
        bridge: this.plan.bridge,
        dns_port: this.d.config.dns_port,
      });
      this.d.log.debug({ applied: r.applied, detail: r.detail }, `resolver routing for .${DNS_DOMAIN}`);
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, 'could not set resolver routing');
    }
  }

  /**
   * Start-up: remove taps and NAT rules that no VM owns (the VM is gone, or is no longer bridged,
   * or no longer wants NAT), and restore NAT that a bridged VM wants but lost (host reboot).
   * Returns what it did; failures are logged, never fatal.
   */
  async reconcile(): Promise<{ removedTaps: string[]; removedNat: string[]; restoredNat: string[] }> {
    const done = { removedTaps: [] as string[], removedNat: [] as string[], restoredNat: [] as string[] };
    const priv = this.priv;
    if (!priv) return done;
    const h = this.d.priv ? { reachable: true } : await this.d.helper.health();
    if (!h.reachable) {
      this.d.log.warn('root helper unreachable; host network leftovers not reconciled');
      return done;
    }
    try {
      const owned = await priv.list_owned();
      const vms = new Map(this.d.store.vms.list().map((v) => [v.id, v]));
      for (const t of owned.taps) {
        const id = vmIdOfTap(t.name);
        const vm = id ? vms.get(id) : undefined;
        if (!vm || vm.networkMode !== 'bridge') {
          await priv.delete_tap({ tap: t.name });
          done.removedTaps.push(t.name);
        }
      }
      const natIds = new Set(owned.nat.map((r) => r.vm_id));
      for (const id of natIds) {
        const vm = vms.get(id);
        if (!vm || vm.networkMode !== 'bridge' || !vm.nat) {
          await priv.remove_nat({ vm_id: id });
          done.removedNat.push(id);
        }
      }
      for (const vm of vms.values()) {
        if (vm.networkMode === 'bridge' && vm.nat && vm.guestIp && !natIds.has(vm.id)) {
          if (!owned.bridges.some((b) => b.name === this.plan.bridge)) await this.ensureBridge(priv);
          await priv.ensure_nat({ vm_id: vm.id, guest_ip: vm.guestIp, bridge: this.plan.bridge });
          done.restoredNat.push(vm.id);
        }
      }
      if (this.d.egress) {
        const e = await this.d.egress
          .reconcile({
            taps: owned.taps.filter((t) => !done.removedTaps.includes(t.name)),
            ...(owned.egress ? { egress: owned.egress } : {}),
          })
          .catch((err: unknown) => {
            this.d.log.warn({ err: (err as Error).message }, 'egress chains not reconciled');
            return { removed: [], applied: [] };
          });
        if (e.removed.length + e.applied.length > 0)
          this.d.log.info({ removed: e.removed, applied: e.applied }, 'egress chains reconciled');
      }
      if (done.removedTaps.length + done.removedNat.length + done.restoredNat.length > 0)
        this.d.log.info(
          { removed_taps: done.removedTaps, removed_nat: done.removedNat, restored_nat: done.restoredNat },
          'host network reconciled',
        );
      if (owned.bridges.some((b) => b.name === this.plan.bridge)) {
        // The bridge survived the daemon: bring its DNS redirect and listener back too.
        await this.ensureBridge(priv);
        await this.syncResolver();
      }
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, 'host network reconciliation failed');
    }
    return done;
  }
}

/** A daemon with no VmNetwork at all (tests, or no helper wiring): user mode only. */

/**
 * The network of a daemon without a root helper (a null object: every VM gets user networking;
 * asking for bridge or NAT is a clear error). Tests use it too.
 */
export function rootlessNetwork(d: Omit<NetworkDeps, 'helper' | 'priv' | 'dns'>): VmNetwork {
  return new VmNetwork({
    ...d,
    helper: { client: undefined, health: async () => ({ configured: false, reachable: false }) },
  });
}
