// `vm set --egress` on a VM that may be running: what can change live and what waits for the
// next start. Bridged: the host chains are rewritten at once. User mode: the proxy takes a new
// policy at once, but `restrict=on` and the guestfwd are options of the running VMM's netdev, so
// a change that needs them added or removed (between `all` and a restricted policy) applies when
// the VM next starts; until then the VMM keeps enforcing what it booted with.
import { readFile } from 'node:fs/promises';
import type { VmRow } from '../store/index.ts';
import { formatEgress } from './rules.ts';
import { proxied, usesProxy, userRestricted, type EgressHooks } from './types.ts';

export interface EgressChange {
  applied: 'live' | 'next_start';
  /** With next_start: why, and what to do. */
  note?: string;
}

export interface EgressSetDeps {
  /** The VM's running VMM, if any. */
  vmmPid: (vmId: string) => number | undefined;
  /** Bridged: write the VM's chains for its policy now (VmNetwork.applyEgress). */
  applyBridged: (vm: VmRow) => Promise<void>;
  egress?: EgressHooks;
  /** The VMM's command line (default /proc/PID/cmdline); tests replace it. */
  readCmdline?: (pid: number) => Promise<string[]>;
}

/** What a running QEMU's user netdev enforces, read from its argv; undefined when unknown. */
export function userNetdevOf(argv: readonly string[]): { restricted: boolean; proxied: boolean } | undefined {
  const i = argv.findIndex((a, j) => argv[j - 1] === '-netdev' && a.startsWith('user,'));
  if (i < 0) return undefined;
  const opts = argv[i] ?? '';
  return { restricted: /(^|,)restrict=on(,|$)/.test(opts), proxied: opts.includes(',guestfwd=') };
}

async function procCmdline(pid: number): Promise<string[]> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8');
  return raw.split('\0').filter((s) => s.length > 0);
}

/**
 * Apply `after`'s policy to the VM as far as its VMM allows; `after` is the row as it will be
 * stored (the caller writes it once this returns, so a failed live apply changes nothing).
 */
export async function applyEgressChange(
  d: EgressSetDeps,
  before: VmRow,
  after: VmRow,
): Promise<EgressChange> {
  const pid = d.vmmPid(after.id);
  if (pid === undefined)
    return {
      applied: 'next_start',
      note: `vm "${after.name}" is not running: the policy applies when it starts`,
    };
  if (after.networkMode === 'bridge') {
    await d.applyBridged(after);
    // The proxy on the bridge knows the VM by its address: told the new policy, or told of the
    // VM now that it has one to enforce (an attach would drop its open connections).
    if (proxied(after)) {
      if (proxied(before)) d.egress?.update(after);
      else d.egress?.attach(after);
    }
    return { applied: 'live' };
  }
  const argv = await (d.readCmdline ?? procCmdline)(pid).catch(() => undefined);
  const now = argv ? userNetdevOf(argv) : undefined;
  const want = { restricted: userRestricted(after), proxied: usesProxy(after) };
  if (now && now.restricted === want.restricted && now.proxied === want.proxied) {
    if (want.proxied) d.egress?.update(after);
    return { applied: 'live' };
  }
  const running = now ? (now.restricted ? 'a restricted policy' : 'egress all') : 'an unknown network';
  return {
    applied: 'next_start',
    note:
      `vm "${after.name}" uses QEMU user-mode networking and its VMM runs with ${running}: ` +
      `switching to ${formatEgress(after.egress)} changes the VMM's network, so it applies at the next start ` +
      `(banger vm restart ${after.name}); until then the policy it booted with stays enforced`,
  };
}
