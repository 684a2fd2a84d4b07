// The daemon's egress proxy side, made once at start-up: the secret store, the CA, the install's
// placeholder key, the proxy, and what a new guest needs (src/egress/guest.ts). start.ts wires
// it; the VM lifecycle attaches VMs to `proxy` through E's hooks (src/egress/types.ts).
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { Logger } from '../log/logger.ts';
import { EgressCa } from './ca.ts';
import { DEFAULT_EGRESS_CONFIG, loadCaBundles, type EgressConfig } from './config.ts';
import type { EgressEvent, EgressEvents } from './events.ts';
import type { VmRow } from '../store/index.ts';
import { guestEgressFor, type GuestEgressSetup, type GuestEgressVm } from './guest.ts';
import { EgressProxy, type AttachVm } from './proxy.ts';
import { derivePlaceholder, loadPlaceholderKey, SecretStore } from './secrets.ts';
import { sweepDir } from './sweep.ts';
import { USER_PROXY_URL, usesProxy, type EgressHooks } from './types.ts';
import { assertRelayBuilt } from './relay.ts';

export interface EgressSide {
  secrets: SecretStore;
  ca: EgressCa;
  proxy: EgressProxy;
  placeholder: (vmId: string, name: string) => string;
  /** What a VM's guest needs at create (undefined: nothing). */
  guestEgress: (vm: GuestEgressVm) => Promise<GuestEgressSetup | undefined>;
}

export async function startEgressSide(o: {
  stateDir: string;
  config: EgressConfig | undefined;
  log: Logger;
  record: (ev: EgressEvent) => void;
  /** The bridge's address (the bridged guests' gateway), when bridged networking is possible. */
  gateway?: string;
}): Promise<EgressSide> {
  const cfg = o.config ?? DEFAULT_EGRESS_CONFIG;
  const dir = join(o.stateDir, 'egress');
  const socketDir = join(dir, 'px');
  mkdirSync(socketDir, { recursive: true, mode: 0o700 });
  const secrets = new SecretStore(join(o.stateDir, 'secrets'));
  // What a crash mid-write left: a secret's temp copy, the CA's temp dir, the key's temp file.
  const leftovers = [...(await secrets.sweepTemp()), ...(await sweepEgressTemp(dir))];
  if (leftovers.length > 0)
    o.log.info({ removed: leftovers }, 'removed leftovers of interrupted egress writes');
  const ca = new EgressCa(dir);
  const key = await loadPlaceholderKey(join(dir, 'placeholder.key'));
  const placeholder = (vmId: string, name: string): string => derivePlaceholder(key, vmId, name);
  const proxy = new EgressProxy({
    log: o.log,
    socketDir,
    ca,
    placeholder,
    secretValue: (name) => secrets.get(name),
    record: o.record,
    upstreamCa: loadCaBundles(cfg.ca_bundles),
    ...(o.gateway ? { bridge: { host: o.gateway, port: cfg.proxy_port } } : {}),
  });
  const bridgedUrl = o.gateway ? `http://${o.gateway}:${cfg.proxy_port}` : undefined;
  return {
    secrets,
    ca,
    proxy,
    placeholder,
    guestEgress: (vm) =>
      guestEgressFor(
        {
          caPem: () => ca.certPem(),
          placeholder,
          proxyUrl: (v) => (v.networkMode === 'bridge' && bridgedUrl ? bridgedUrl : USER_PROXY_URL),
        },
        vm,
      ),
  };
}

/**
 * The lifecycle's hooks (src/egress/types.ts) over the proxy: a VM row becomes an attach with
 * its policy, secrets, the op id its events carry and, bridged, the address it is known by.
 */
export function proxyHooks(side: Pick<EgressSide, 'proxy'>, events: EgressEvents): EgressHooks {
  const attachOf = (vm: VmRow): AttachVm => ({
    id: vm.id,
    name: vm.name,
    policy: vm.egress,
    secrets: vm.secrets,
    ...(vm.egressOpId ? { opId: vm.egressOpId } : {}),
    ...(vm.networkMode === 'bridge' && vm.guestIp ? { ip: vm.guestIp } : {}),
  });
  return {
    events,
    attach: (vm, o) => {
      // A user-mode VM's guestfwd runs the relay: a VMM must not start without it. One that runs
      // already is reattached regardless (attachEgress warns): refusing would not stop it.
      if (usesProxy(vm) && !o?.running) assertRelayBuilt();
      side.proxy.attach(attachOf(vm));
    },
    update: (vm) => side.proxy.update(vm.id, vm.egress),
    detach: (vmId) => side.proxy.detach(vmId),
  };
}

/** STATE/egress's temp names (EgressCa's `.ca-*` and `.leaf-*` dirs with private keys, loadPlaceholderKey's `placeholder.key.tmp-*`). */
async function sweepEgressTemp(dir: string): Promise<string[]> {
  return sweepDir(dir, (n) => ['.ca-', '.leaf-', 'placeholder.key.tmp-'].some((p) => n.startsWith(p)));
}
