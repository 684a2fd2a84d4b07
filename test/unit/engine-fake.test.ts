import { describe, expect, it } from 'vitest';
import type { VmLaunchSpec } from '../../src/engine/driver.ts';
import { EngineError } from '../../src/engine/errors.ts';
import { FakeVmmDriver, FakeVmmHost } from '../../src/engine/fake.ts';

function spec(id: string, over: Partial<VmLaunchSpec> = {}): VmLaunchSpec {
  return {
    id,
    vmDir: `/state/vms/${id}`,
    kernel: '/k/vmlinuz',
    cmdline: 'root=/dev/vda',
    vcpus: 1,
    memoryMiB: 256,
    disks: [],
    net: { mode: 'user', sshHostPort: 2222 },
    serialLog: `/state/vms/${id}/serial.log`,
    accel: 'tcg',
    ...over,
  };
}

describe('FakeVmmDriver', () => {
  it('records a transcript of operations', async () => {
    const d = new FakeVmmDriver();
    const h = await d.start(d.prepare(spec('a')));
    expect(await h.status()).toBe('running');
    expect(await h.shutdownGraceful(1000)).toBe('clean');
    expect(await h.status()).toBe('gone');
    expect(d.ops()).toEqual(['prepare a', 'start a', 'status a', 'shutdownGraceful a', 'status a']);
    expect(d.transcript[3]).toEqual({ op: 'shutdownGraceful', target: 'a', detail: { timeoutMs: 1000 } });
  });

  it('prepare uses the real builders (invalid specs fail the same way)', () => {
    const d = new FakeVmmDriver();
    expect(() => d.prepare(spec('bad id'))).toThrow(EngineError);
    const plan = d.prepare(spec('ok'));
    expect(plan.argv).toContain('microvm');
    expect(() => new FakeVmmDriver({ name: 'firecracker' }).prepare(spec('fc'))).toThrow(/KVM/);
  });

  it('fails a named operation once, for one target, or always', async () => {
    const d = new FakeVmmDriver();
    d.failOn('start', { target: 'b' });
    await expect(d.start(d.prepare(spec('b')))).rejects.toMatchObject({ code: 'start_failed' });
    await expect(d.start(d.prepare(spec('b')))).resolves.toBeDefined();
    const h = await d.start(d.prepare(spec('c')));
    d.failOn('kill', { error: new Error('EPERM'), times: Infinity });
    await expect(h.kill()).rejects.toThrow('EPERM');
    await expect(h.kill()).rejects.toThrow('EPERM');
    // Failed ops are still in the transcript (the undo path can be asserted).
    expect(d.ops().filter((o) => o.startsWith('kill'))).toEqual(['kill c SIGKILL', 'kill c SIGKILL']);
  });

  it('graceful timeout then kill, with waitExit', async () => {
    const d = new FakeVmmDriver();
    const h = await d.start(d.prepare(spec('d')));
    d.host.setPowerdownBehaviour('d', 'timeout');
    expect(await h.shutdownGraceful(10)).toBe('timeout');
    const exit = h.waitExit();
    await h.kill();
    expect(await exit).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('a shared host lets a second driver reattach (daemon restart)', async () => {
    const host = new FakeVmmHost();
    const d1 = new FakeVmmDriver({ host });
    const h1 = await d1.start(d1.prepare(spec('e')));
    await h1.release();
    const d2 = new FakeVmmDriver({ host });
    const h2 = await d2.reattach('/state/vms/e');
    expect(h2?.pid).toBe(h1.pid);
    expect(await d2.reattach('/state/vms/nope')).toBeNull();
    await expect(d2.start(d2.prepare(spec('e')))).rejects.toMatchObject({ code: 'already_running' });
    host.exitVm('e', { code: 1, signal: null });
    expect(await h2!.waitExit()).toEqual({ code: 1, signal: null });
    expect(await d2.reattach('/state/vms/e')).toBeNull();
  });

  it('restored VMs start paused', async () => {
    const d = new FakeVmmDriver();
    const h = await d.start(d.prepare(spec('f', { incoming: 'exec:cat /s' })));
    expect(await h.status()).toBe('paused');
  });
});
