// The accel probe's decisions that need no VM boot. (The test boot itself runs in
// test/integration/engine-qemu.test.ts.)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { probeAccel, qemuVersion, resetAccelMemo } from '../../src/engine/accel.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-accel-'));
  resetAccelMemo();
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
  resetAccelMemo();
});

function haveQemu(): boolean {
  try {
    execFileSync('qemu-system-x86_64', ['-version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('probeAccel', () => {
  it('config tcg / kvm decide without probing', async () => {
    expect(await probeAccel({ config: 'tcg', qemuBinary: '/nonexistent' })).toMatchObject({
      accel: 'tcg',
      source: 'config',
      verified: true,
    });
    expect(await probeAccel({ config: 'kvm', qemuBinary: '/nonexistent' })).toMatchObject({
      accel: 'kvm',
      source: 'config',
    });
  });

  it('auto without a runnable QEMU is an error (and is not memoized)', async () => {
    await expect(probeAccel({ config: 'auto', qemuBinary: '/nonexistent/qemu' })).rejects.toMatchObject({
      code: 'unsupported',
    });
    await expect(probeAccel({ config: 'auto', qemuBinary: '/nonexistent/qemu' })).rejects.toMatchObject({
      code: 'unsupported',
    });
  });

  it.skipIf(!haveQemu())('auto without /dev/kvm: TCG, fast', async () => {
    const r = await probeAccel({ config: 'auto', devKvm: join(dir, 'kvm') });
    expect(r.accel).toBe('tcg');
    expect(r.reason).toMatch(/does not exist/);
    expect(r.durationMs).toBeLessThan(2_000);
  });

  it.skipIf(!haveQemu())('memoizes per options: concurrent callers share one probe', async () => {
    const opts = { config: 'auto' as const, devKvm: join(dir, 'kvm') };
    const [a, b] = await Promise.all([probeAccel(opts), probeAccel(opts)]);
    expect(a).toBe(b);
  });

  it.skipIf(!haveQemu())('qemuVersion parses -version', async () => {
    expect(await qemuVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe.skipIf(!haveQemu())('probeAccel without a kernel', () => {
  it('cannot verify KVM: TCG, unverified or with QEMU’s own reason, in ~1.5 s (with or without /dev/kvm)', async () => {
    // A host without /dev/kvm: a stand-in file gets past the access check, so QEMU itself tries
    // KVM and fails. With one: QEMU starts (unverified: no kernel to prove a guest boots) or fails.
    const real = existsSync('/dev/kvm');
    const devKvm = real ? '/dev/kvm' : join(dir, 'kvm');
    if (!real) writeFileSync(devKvm, '');
    const r = await probeAccel({ config: 'auto', devKvm });
    expect(r.accel).toBe('tcg');
    expect(r.durationMs).toBeLessThan(5_000);
    expect(r.reason).toMatch(r.verified ? /^QEMU cannot start under KVM: / : /no kernel was given/);
    if (!real) expect(r.verified).toBe(true);
  });
});
