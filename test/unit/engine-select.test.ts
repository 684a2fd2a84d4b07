// Which driver a daemon runs (src/engine/select.ts): the configured one, or QEMU with the reason
// when a configured Firecracker cannot run (no binary, no usable KVM). Firecracker itself cannot
// run on these machines (no KVM): its driver is tested against a fake API server
// (engine-firecracker.test.ts).
import { describe, expect, it } from 'vitest';
import { hostEngine, selectEngine, type EngineHost } from '../../src/engine/index.ts';
import { parseConfig } from '../../src/daemon/config.ts';

const host = (binary: string | undefined, kvm: boolean): EngineHost => ({
  findBinary: (n) => (n === 'firecracker' ? binary : undefined),
  kvm: () => (kvm ? { usable: true } : { usable: false, why: 'there is no /dev/kvm' }),
});

describe('selectEngine', () => {
  it('qemu by default, whatever the host has', () => {
    expect(selectEngine('qemu', host('/usr/bin/firecracker', true))).toEqual({
      driver: 'qemu',
      reason: 'engine = "qemu" (the default)',
    });
  });
  it('firecracker where its binary and KVM are', () => {
    expect(selectEngine('firecracker', host('/usr/local/bin/firecracker', true))).toEqual({
      driver: 'firecracker',
      binary: '/usr/local/bin/firecracker',
      reason: 'engine = "firecracker" (/usr/local/bin/firecracker)',
    });
  });
  it('QEMU, with the reason, when the binary or KVM is missing', () => {
    expect(selectEngine('firecracker', host(undefined, true))).toMatchObject({
      driver: 'qemu',
      reason: expect.stringContaining('no firecracker binary is on PATH'),
    });
    expect(selectEngine('firecracker', host('/x/firecracker', false))).toMatchObject({
      driver: 'qemu',
      reason: expect.stringContaining('Firecracker needs KVM and there is no /dev/kvm'),
    });
  });
  it('this host: the answer matches what is here', () => {
    const s = selectEngine('firecracker', hostEngine);
    const usable = hostEngine.findBinary('firecracker') !== undefined && hostEngine.kvm().usable;
    expect(s.driver).toBe(usable ? 'firecracker' : 'qemu');
  });
  it('the config key is validated', () => {
    expect(parseConfig('engine = "firecracker"').engine).toBe('firecracker');
    expect(parseConfig('').engine).toBe('qemu');
    expect(() => parseConfig('engine = "docker"')).toThrow(/engine must be one of qemu, firecracker/);
  });
});
