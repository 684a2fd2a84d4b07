// daemon.status's engine part: the accelerator before, during and after its probe.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type * as Engine from '../../src/engine/index.ts';
import type { AccelProbeResult } from '../../src/engine/index.ts';
import { DEFAULT_CONFIG, type DaemonConfig } from '../../src/daemon/config.ts';
import { EngineInfo } from '../../src/daemon/engine-info.ts';
import { createLogger } from '../../src/log/logger.ts';
import type { Store } from '../../src/store/index.ts';
import { MemoryLog } from '../helpers/logs.ts';

const probe = vi.hoisted(() => ({ next: undefined as Promise<AccelProbeResult> | undefined }));
vi.mock('../../src/engine/index.ts', async (orig) => ({
  ...(await orig<typeof Engine>()),
  probeAccel: () => probe.next!,
  qemuVersion: async () => '7.2.0',
}));

const store = {
  images: { getDefault: () => undefined },
  kernels: { getById: () => undefined },
} as unknown as Store;
const info = (over: Partial<DaemonConfig> = {}): EngineInfo =>
  new EngineInfo(
    { ...DEFAULT_CONFIG, ...over },
    store,
    '/nonexistent',
    createLogger({ name: 't', stream: new MemoryLog() }),
  );

function deferred(): {
  promise: Promise<AccelProbeResult>;
  resolve: (r: AccelProbeResult) => void;
  reject: (e: Error) => void;
} {
  let resolve!: (r: AccelProbeResult) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<AccelProbeResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('EngineInfo.status', () => {
  beforeEach(() => (probe.next = undefined));

  it('auto: not probed yet (says why), then probing, then the answer with its reason', async () => {
    const e = info();
    expect(await e.status()).toEqual({
      driver: 'qemu',
      driver_reason: 'engine = "qemu" (the default)',
      qemu_version: '7.2.0',
      accel_reason: 'not probed yet: the first VM start test-boots KVM to decide',
    });
    const d = deferred();
    probe.next = d.promise;
    const chosen = e.accel();
    expect(await e.status()).toMatchObject({
      accel: 'probing',
      accel_reason: expect.stringMatching(/test boot/),
    });
    d.resolve({
      accel: 'tcg',
      reason: '/dev/kvm does not exist',
      verified: true,
      source: 'probe',
      durationMs: 3,
    });
    expect(await chosen).toBe('tcg');
    expect(await e.status()).toMatchObject({ accel: 'tcg', accel_reason: '/dev/kvm does not exist' });
  });

  it('a probe that fails does not leave the status at probing, and is retried', async () => {
    const e = info();
    const d = deferred();
    probe.next = d.promise;
    const chosen = e.accel();
    d.reject(new Error('qemu missing'));
    await expect(chosen).rejects.toThrow(/qemu missing/);
    expect((await e.status()).accel).toBeUndefined();
    // The next start probes again rather than repeating the old failure.
    probe.next = Promise.resolve({
      accel: 'tcg',
      reason: 'configured',
      verified: true,
      source: 'probe',
      durationMs: 1,
    } satisfies AccelProbeResult);
    expect(await e.accel()).toBe('tcg');
  });

  it('configured accel is known without probing', async () => {
    expect(await info({ accel: 'tcg' }).status()).toMatchObject({
      accel: 'tcg',
      accel_reason: 'configured: accel = tcg',
    });
    expect((await info({ accel: 'kvm' }).status()).accel).toBe('kvm');
  });
});
