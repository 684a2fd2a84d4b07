// Host-side detection of SSH sessions into VMs, for idle pause: read the kernel's TCP table of
// the daemon's network namespace (/proc/net/tcp) instead of asking the guest, which would wake
// it (and an idle VM is exactly one we should not wake every few seconds).
//
// What is seen: an established TCP connection
// - user mode: to the VM's forwarded SSH port on 127.0.0.1 (QEMU's hostfwd listens in the
//   daemon's namespace; both the client's socket and QEMU's accepted one are in the table);
// - bridged: from this namespace to the guest's address, port 22.
// What is not: connections made in another network namespace or from another host straight to
// a bridged guest (routed, not ours), IPv6, anything that is not SSH (a web server in the guest
// reached through a port of its own, the guest's own outbound traffic). `vm ssh` heartbeats with
// vm.touch and every vm.ssh RPC marks the VM used, so a session from banger's CLI is covered
// even where the table is not.
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';

/** TCP_ESTABLISHED in the kernel's state numbering (include/net/tcp_states.h). */
const ESTABLISHED = '01';

export interface TcpConn {
  localIp: string;
  localPort: number;
  remoteIp: string;
  remotePort: number;
  established: boolean;
}

/**
 * An address of /proc/net/tcp ("0100007F:0016"): the IPv4 address is the raw 32-bit value in
 * the host's byte order printed as hex, the port is plain hex.
 */
function parseAddr(text: string, littleEndian: boolean): { ip: string; port: number } | undefined {
  const m = /^([0-9A-Fa-f]{8}):([0-9A-Fa-f]{4})$/.exec(text);
  if (!m) return undefined;
  const n = parseInt(m[1]!, 16);
  const bytes = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  if (littleEndian) bytes.reverse();
  return { ip: bytes.join('.'), port: parseInt(m[2]!, 16) };
}

/** The connections of a /proc/net/tcp text (header and malformed lines skipped). */
export function parseProcNetTcp(text: string, littleEndian = endianness() === 'LE'): TcpConn[] {
  const out: TcpConn[] = [];
  for (const line of text.split('\n')) {
    // "  sl  local_address rem_address   st ..." then "   0: 0100007F:1F90 00000000:0000 0A ..."
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !/^\d+:$/.test(f[0]!)) continue;
    const local = parseAddr(f[1]!, littleEndian);
    const remote = parseAddr(f[2]!, littleEndian);
    if (!local || !remote) continue;
    out.push({
      localIp: local.ip,
      localPort: local.port,
      remoteIp: remote.ip,
      remotePort: remote.port,
      established: f[3]!.toUpperCase() === ESTABLISHED,
    });
  }
  return out;
}

/** Where a VM's SSH is reached from the host. */
export type SshEndpoint = { mode: 'user'; port: number } | { mode: 'bridge'; ip: string };

/** Whether the table holds an established SSH connection to `ep`. */
export function hasSshSession(conns: readonly TcpConn[], ep: SshEndpoint): boolean {
  return conns.some((c) => {
    if (!c.established) return false;
    if (ep.mode === 'user')
      // QEMU's accepted socket (local = the forwarded port) or the client's (remote = it).
      return (
        (c.localIp === '127.0.0.1' && c.localPort === ep.port) ||
        (c.remoteIp === '127.0.0.1' && c.remotePort === ep.port)
      );
    return c.remoteIp === ep.ip && c.remotePort === 22;
  });
}

/** The daemon namespace's IPv4 TCP table (empty when it cannot be read). */
export async function readTcpTable(path = '/proc/net/tcp'): Promise<TcpConn[]> {
  try {
    return parseProcNetTcp(await readFile(path, 'utf8'));
  } catch {
    return [];
  }
}
