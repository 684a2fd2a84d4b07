import { describe, expect, it } from 'vitest';
import { hostStatus, vmCommitment } from '../../src/daemon/services/daemon.ts';

describe('daemon.status host', () => {
  it('counts only VMs with a live VMM (not stopped, not paused to disk)', () => {
    const c = vmCommitment([
      { state: 'running', vcpus: 2, memoryMib: 1024, savedState: null },
      { state: 'starting', vcpus: 1, memoryMib: 512, savedState: null },
      { state: 'paused', vcpus: 4, memoryMib: 4096, savedState: null },
      { state: 'paused', vcpus: 8, memoryMib: 8192, savedState: { bytes: 1, savedAt: '' } as never },
      { state: 'stopped', vcpus: 16, memoryMib: 16384, savedState: null },
      { state: 'error', vcpus: 16, memoryMib: 16384, savedState: null },
    ]);
    expect(c).toEqual({ vcpus: 7, memoryMib: 5632 });
  });

  it('reports this machine and the commitment it is given', async () => {
    const h = await hostStatus(() => ({ vcpus: 3, memoryMib: 300 }));
    expect(h.cpus).toBeGreaterThan(0);
    expect(h.memory_total_mib).toBeGreaterThan(0);
    expect(h.memory_available_mib).toBeLessThanOrEqual(h.memory_total_mib);
    expect(h.committed_vcpus).toBe(3);
    expect(h.committed_memory_mib).toBe(300);
    expect(h.hostname.length).toBeGreaterThan(0);
  });
});
