// vm.ports: what a guest listens on, from `ss -Htlnp` run over SSH. Pure parsing here, so it is
// table-tested; the service does the SSH.
import type { VmPortsResult } from '../../generated/types.gen.ts';

export type GuestPort = VmPortsResult['ports'][number];

/** The command run in the guest: TCP, listening, numeric, with processes, no header. */
export const SS_COMMAND = 'ss -Htlnp';

function isLoopback(addr: string): boolean {
  return addr.startsWith('127.') || addr === '::1' || addr === 'localhost';
}

/** "0.0.0.0:22", "[::]:22", "127.0.0.53%lo:53", "*:80" → address and port. */
function splitLocal(local: string): { address: string; port: number } | undefined {
  const i = local.lastIndexOf(':');
  if (i <= 0) return undefined;
  const port = Number(local.slice(i + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  let address = local.slice(0, i);
  if (address.startsWith('[') && address.endsWith(']')) address = address.slice(1, -1);
  const pct = address.indexOf('%');
  if (pct > 0) address = address.slice(0, pct);
  if (address === '*') address = '0.0.0.0';
  return { address, port };
}

/**
 * One entry per port (IPv4 and IPv6 sockets of one service merge), sorted by port. A port is
 * loopback_only when every socket on it is bound to loopback.
 */
export function parseSsListen(output: string, endpointHost?: string): GuestPort[] {
  const byPort = new Map<number, { addresses: string[]; process?: string }>();
  for (const line of output.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || f[0] !== 'LISTEN') continue;
    const local = splitLocal(f[3]!);
    if (!local) continue;
    const proc = /users:\(\("([^"]{1,64})"/.exec(line)?.[1];
    const cur = byPort.get(local.port) ?? { addresses: [] };
    if (!cur.addresses.includes(local.address)) cur.addresses.push(local.address);
    if (cur.process === undefined && proc !== undefined) cur.process = proc;
    byPort.set(local.port, cur);
  }
  return [...byPort.entries()]
    .sort(([a], [b]) => a - b)
    .map(([port, e]) => {
      const loopbackOnly = e.addresses.every(isLoopback);
      const p: GuestPort = {
        port,
        proto: 'tcp',
        address: e.addresses.find((a) => !isLoopback(a)) ?? e.addresses[0]!,
        loopback_only: loopbackOnly,
      };
      if (e.process !== undefined) p.process = e.process;
      if (endpointHost !== undefined && !loopbackOnly) p.endpoint = `${endpointHost}:${port}`;
      return p;
    });
}
