// What the egress enforcers saw: every connection the proxy handled or refused, every denial the
// bridged filter logged, every DNS answer banger's resolver gave a restricted VM. One ring per VM
// (the last EGRESS_RING_SIZE events, in memory: `banger vm egress NAME` reads it) and one daemon
// log line per event, carrying the op id that set the VM's policy, so `banger op trace <op>` of a
// create or a `vm set --egress` shows what the policy then let through or stopped.
import type { Logger } from '../log/logger.ts';
import { Ring } from '../util/ring.ts';

export interface EgressEvent {
  time: string;
  /** The VM's name. */
  vm: string;
  verdict: 'allow' | 'deny';
  proto: 'tcp' | 'udp' | 'dns' | 'http';
  host?: string;
  ip?: string;
  port?: number;
  /** The rule that allowed it (rules.ts EgressRule.text; `all` under the policy all). */
  rule?: string;
  reason: string;
  /** The op that set the policy: the VM's record says (vms.egress_op_id), else the enforcer's. */
  op_id?: string;
}

export const EGRESS_RING_SIZE = 1000;
/** Log lines per VM per window; more are counted and summarised (a guest can loop on a denial). */
export const EGRESS_LOG_BURST = 100;
export const EGRESS_LOG_WINDOW_MS = 10_000;

export interface EgressEventsDeps {
  log: Logger;
  /**
   * The op id stored with a VM's policy (vms.egress_op_id), by VM name: null when the VM has
   * none, undefined when there is no such VM. Asked once per VM (then cached: setOpId and
   * forget keep the cache current), not once per event.
   */
  opIdOf?: (vm: string) => string | null | undefined;
  now?: () => number;
}

/** `host:port (ip)` as far as known: the `dest` of a log line. */
export function egressDest(ev: Pick<EgressEvent, 'host' | 'ip' | 'port'>): string {
  const where = ev.host ?? ev.ip ?? '?';
  const port = ev.port !== undefined ? `:${ev.port}` : '';
  const ip = ev.host !== undefined && ev.ip !== undefined && ev.ip !== ev.host ? ` (${ev.ip})` : '';
  return `${where}${port}${ip}`;
}

interface VmLog {
  events: Ring<EgressEvent>;
  windowStart: number;
  logged: number;
  suppressed: number;
}

export class EgressEvents {
  private readonly d: EgressEventsDeps;
  private readonly rings = new Map<string, VmLog>();
  /** The policy's op id by VM name (null: the VM has none); see EgressEventsDeps.opIdOf. */
  private readonly opIds = new Map<string, string | null>();
  private readonly watchers = new Map<string, Set<(ev: EgressEvent) => void>>();

  constructor(deps: EgressEventsDeps) {
    this.d = deps;
  }

  /** Record one event (the enforcers' `record` callback: bound, so it can be passed around). */
  readonly recordEgress = (ev0: EgressEvent): void => {
    // The stored op id first: a vm set changes it while the enforcers may still know the old one.
    const opId = this.opIdOf(ev0.vm) ?? ev0.op_id;
    const ev: EgressEvent = opId !== undefined ? { ...ev0, op_id: opId } : { ...ev0 };
    const ring = this.ring(ev.vm);
    ring.events.push(ev);
    this.logLine(ring, ev);
    for (const w of this.watchers.get(ev.vm) ?? []) w(ev);
  };

  private opIdOf(vm: string): string | undefined {
    const cached = this.opIds.get(vm);
    if (cached !== undefined) return cached ?? undefined;
    const stored = this.d.opIdOf?.(vm);
    // No such VM (yet): not cached, so its row is read once it exists.
    if (stored === undefined) return undefined;
    this.opIds.set(vm, stored);
    return stored ?? undefined;
  }

  /** A VM's policy was set by `opId` (vm set --egress): its events carry that id from now on. */
  setOpId(vm: string, opId: string | null): void {
    this.opIds.set(vm, opId);
  }

  private ring(vm: string): VmLog {
    let r = this.rings.get(vm);
    if (!r) {
      r = { events: new Ring(EGRESS_RING_SIZE), windowStart: this.now(), logged: 0, suppressed: 0 };
      this.rings.set(vm, r);
    }
    return r;
  }

  private now(): number {
    return this.d.now?.() ?? Date.now();
  }

  private logLine(ring: VmLog, ev: EgressEvent): void {
    const now = this.now();
    if (now - ring.windowStart >= EGRESS_LOG_WINDOW_MS) {
      if (ring.suppressed > 0)
        this.d.log.warn(
          { vm: ev.vm, suppressed: ring.suppressed, ...(ev.op_id ? { op_id: ev.op_id } : {}) },
          'egress: log lines suppressed (too many events; all are in banger vm egress)',
        );
      ring.windowStart = now;
      ring.logged = 0;
      ring.suppressed = 0;
    }
    if (ring.logged >= EGRESS_LOG_BURST) {
      ring.suppressed++;
      return;
    }
    ring.logged++;
    // An explicit op_id wins over the RPC context's (the mixin): the policy's op, not the caller's.
    const fields = {
      vm: ev.vm,
      dest: egressDest(ev),
      rule: ev.rule,
      proto: ev.proto,
      reason: ev.reason,
      ...(ev.op_id ? { op_id: ev.op_id } : {}),
    };
    if (ev.verdict === 'deny') this.d.log.warn(fields, 'egress deny');
    else this.d.log.info(fields, 'egress allow');
  }

  /** The most recent `limit` events of a VM, oldest first. */
  recent(vm: string, limit = 100): EgressEvent[] {
    return this.rings.get(vm)?.events.last(limit) ?? [];
  }

  /** Call `fn` for each new event of `vm` until the returned function is called. */
  watch(vm: string, fn: (ev: EgressEvent) => void): () => void {
    let set = this.watchers.get(vm);
    if (!set) {
      set = new Set();
      this.watchers.set(vm, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.watchers.delete(vm);
    };
  }

  /** A deleted VM's events and op id go (a new VM of the same name starts empty). */
  forget(vm: string): void {
    this.rings.delete(vm);
    this.opIds.delete(vm);
  }
}
