// Start-up sweeps of what a crash left in the egress side's directories: the per-VM proxy sockets
// of VMs that no longer exist (STATE/egress/px), and the temp names of interrupted writes (a
// secret's temp copy, the CA's temp dirs, the placeholder key's temp file). All go through
// sweepDir, the one loop.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Remove the entries of `dir` whose name `pick` chooses (a directory goes whole); returns their
 * names. A missing `dir` has nothing to sweep.
 */
export async function sweepDir(dir: string, pick: (name: string) => boolean): Promise<string[]> {
  const removed: string[] = [];
  for (const n of await readdir(dir).catch(() => [] as string[])) {
    if (!pick(n)) continue;
    await rm(join(dir, n), { recursive: true, force: true });
    removed.push(n);
  }
  return removed;
}

/** What a VM's proxy socket is called (src/egress/types.ts userProxySocket). */
const VM_SOCKET_RE = /^([0-9a-f]{12})\.sock$/;

/**
 * Remove the sockets in `socketDir` whose VM id `exists` does not know; returns their names.
 * A VM deleted across a daemon crash (its row gone, the proxy's detach never run) leaves its
 * socket behind; nothing else would ever remove it. Sockets of VMs that still have a row are left
 * to the proxy, which replaces them when it attaches the VM again.
 */
export function sweepProxySockets(socketDir: string, exists: (vmId: string) => boolean): Promise<string[]> {
  return sweepDir(socketDir, (n) => {
    const id = VM_SOCKET_RE.exec(n)?.[1];
    return id !== undefined && !exists(id);
  });
}
