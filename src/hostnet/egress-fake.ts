// Test doubles of the egress seam: a recording in-memory fake (transcript, failure injection)
// and the stand-in a helper started with injected host networking but no egress gets, so a test
// never writes the real host's nftables by accident.
import { HostnetError } from './exec.ts';
import {
  egressPolicyHash,
  type Egress,
  type EgressChain,
  type EgressEntry,
  type EgressSpec,
} from './egress.ts';

export class RecordingEgress implements Egress {
  readonly transcript: string[] = [];
  readonly chains = new Map<string, EgressSpec>();
  /** tap → "ip[:port]" → ttl seconds. */
  readonly sets = new Map<string, Map<string, number>>();
  private readonly failures = new Map<string, string>();

  failOn(op: 'egress_apply' | 'egress_allow' | 'egress_remove', message = 'injected failure'): this {
    this.failures.set(op, message);
    return this;
  }

  private enter(op: string, args: string): void {
    const fail = this.failures.get(op);
    if (fail !== undefined) {
      this.failures.delete(op);
      this.transcript.push(`${op} ${args} -> FAILED: ${fail}`);
      throw new HostnetError(op, fail);
    }
    this.transcript.push(`${op} ${args}`);
  }

  async apply(s: EgressSpec): Promise<{ created: boolean; rules: number }> {
    const cidrs = s.cidrs.map((c) => (c.port ? `${c.cidr}:${c.port}` : c.cidr)).join(',');
    this.enter('egress_apply', `${s.tap} ${s.guestIp} ${s.mode} [${cidrs}]`);
    const created = !this.chains.has(s.tap);
    this.chains.set(s.tap, { ...s, cidrs: [...s.cidrs] });
    this.sets.set(s.tap, new Map());
    return { created, rules: 10 + s.cidrs.length };
  }

  async allow(tap: string, entries: EgressEntry[]): Promise<{ added: number }> {
    this.enter(
      'egress_allow',
      `${tap} ${entries.map((e) => `${e.ip}${e.port ? `:${e.port}` : ''}/${e.ttlS}s`).join(',')}`,
    );
    const set = this.sets.get(tap);
    if (!set) throw new HostnetError('egress_allow', `tap ${tap} has no egress chain`);
    for (const e of entries) set.set(e.port ? `${e.ip}:${e.port}` : e.ip, Math.max(30, e.ttlS));
    return { added: entries.length };
  }

  async remove(tap: string): Promise<{ removed: boolean }> {
    this.enter('egress_remove', tap);
    this.sets.delete(tap);
    return { removed: this.chains.delete(tap) };
  }

  async list(): Promise<EgressChain[]> {
    return [...this.chains.values()].map((s) => ({
      tap: s.tap,
      guestIp: s.guestIp,
      ingress: true,
      policyHash: egressPolicyHash(s),
    }));
  }
}

/** Egress for a helper whose host networking was injected without one: lists nothing, writes nothing. */
export const noEgress: Egress = {
  apply: () => Promise.reject(new HostnetError('egress_apply', 'no egress backend in this helper')),
  allow: () => Promise.reject(new HostnetError('egress_allow', 'no egress backend in this helper')),
  remove: async () => ({ removed: false }),
  list: async () => [],
};
