// What the VM lifecycle needs from the egress side (issue 16): the event ring, and for user-mode
// VMs with a restricted policy or secrets the daemon's egress proxy (src/egress/proxy.ts),
// reached from the guest through QEMU's guestfwd. An interface here so the lifecycle and its
// tests do not depend on the proxy's implementation; src/egress/wiring.ts adapts the real one.
import { join } from 'node:path';
import type { GuestForward } from '../engine/index.ts';
import type { VmRow } from '../store/index.ts';
import type { EgressEvents } from './events.ts';
import { relayBinaryPath } from './relay.ts';

/** The guest-side address of the proxy in user mode (QEMU guestfwd; not a host address). */
export const USER_PROXY_IP = '10.0.2.100';
export const USER_PROXY_PORT = 3128;
export const USER_PROXY_URL = `http://${USER_PROXY_IP}:${USER_PROXY_PORT}`;

export interface EgressHooks {
  events: EgressEvents;
  /**
   * Start proxying for the VM (before its VMM starts); idempotent (a re-attach replaces).
   * `running`: its VMM runs already (a reattach after a daemon restart): no new argv is built.
   */
  attach(vm: VmRow, o?: { running?: boolean }): void;
  /** The VM's policy changed: connections from now on are checked against the new one. */
  update(vm: VmRow): void;
  /** Stop proxying for the VM (its VMM stopped, or it is deleted); idempotent. */
  detach(vmId: string): void;
}

/** Whether the proxy serves the VM (any network mode): a restricted policy, or secrets to inject. */
export function proxied(vm: Pick<VmRow, 'egress' | 'secrets'>): boolean {
  return vm.egress.mode !== 'all' || vm.secrets.length > 0;
}

/** Whether a user-mode VM reaches the proxy through a guestfwd (see proxied). */
export function usesProxy(vm: Pick<VmRow, 'networkMode' | 'egress' | 'secrets'>): boolean {
  return vm.networkMode !== 'bridge' && proxied(vm);
}

/**
 * Whether a user-mode VM's VMM runs with `restrict=on`: every restricted policy. (Secrets alone
 * under `all` keep the normal network; the proxy is then a convenience the guest is pointed at.)
 */
export function userRestricted(vm: Pick<VmRow, 'networkMode' | 'egress'>): boolean {
  return vm.networkMode !== 'bridge' && vm.egress.mode !== 'all';
}

/**
 * The unix socket a user-mode VM's guestfwd connects to (the proxy listens there while the VM
 * runs). Deterministic from the VM id: the VMM's argv is rebuilt the same way after a daemon
 * restart (pause compares argv hashes). Kept short: a socket path has at most 107 bytes.
 */
export function userProxySocket(stateDir: string, vmId: string): string {
  return join(stateDir, 'egress', 'px', `${vmId}.sock`);
}

/**
 * What a user-mode VM's netdev adds for its policy: `restrict=on` (nothing leaves QEMU's network
 * but the forwards) for a restricted policy, and the guestfwd to the proxy whenever the proxy is
 * used. `none` gets the forward too: the proxy then refuses and records every attempt.
 */
export function userNetEgress(
  vm: Pick<VmRow, 'id' | 'networkMode' | 'egress' | 'secrets'>,
  stateDir: string,
): { restrict?: true; guestfwd?: GuestForward } {
  if (!usesProxy(vm)) return {};
  const guestfwd: GuestForward = {
    ip: USER_PROXY_IP,
    port: USER_PROXY_PORT,
    unixSocket: userProxySocket(stateDir, vm.id),
    relay: relayBinaryPath(),
  };
  return userRestricted(vm) ? { restrict: true, guestfwd } : { guestfwd };
}
