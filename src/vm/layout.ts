// Where a VM's files live: everything host-side derives from the VM id.
import { join } from 'node:path';

export interface VmFiles {
  dir: string;
  overlay: string;
  seed: string;
  serialLog: string;
  agentSocket: string;
  /** qemu-guest-agent's channel (warm clones are re-identified through it). */
  qgaSocket: string;
}

export function vmFiles(stateDir: string, id: string): VmFiles {
  const dir = join(stateDir, 'vms', id);
  return {
    dir,
    overlay: join(dir, 'root.qcow2'),
    seed: join(dir, 'seed.ext4'),
    serialLog: join(dir, 'serial.log'),
    agentSocket: join(dir, 'agent.sock'),
    qgaSocket: join(dir, 'qga.sock'),
  };
}

/** A locally administered MAC derived from the VM id (stable across restarts). */
export function macFor(id: string): string {
  const h = id
    .replace(/[^0-9a-f]/g, '')
    .padEnd(8, '0')
    .slice(0, 8);
  return `52:54:${h.slice(0, 2)}:${h.slice(2, 4)}:${h.slice(4, 6)}:${h.slice(6, 8)}`;
}
