// Start-up: the per-VM proxy sockets (STATE/egress/px/<vm id>.sock) of VMs that no longer exist.
// A VM deleted across a daemon crash (its row gone, the proxy's detach never run) leaves its
// socket behind; nothing would ever remove it. Sockets of VMs that still have a row are left to
// the proxy, which replaces them when it attaches the VM again.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** What a VM's proxy socket is called (src/egress/types.ts userProxySocket). */
const VM_SOCKET_RE = /^([0-9a-f]{12})\.sock$/;

/** Remove the sockets in `socketDir` whose VM id `exists` does not know; returns their names. */
export async function sweepProxySockets(
  socketDir: string,
  exists: (vmId: string) => boolean,
): Promise<string[]> {
  const removed: string[] = [];
  for (const n of await readdir(socketDir).catch(() => [] as string[])) {
    const id = VM_SOCKET_RE.exec(n)?.[1];
    if (id === undefined || exists(id)) continue;
    await rm(join(socketDir, n), { force: true });
    removed.push(n);
  }
  return removed;
}
