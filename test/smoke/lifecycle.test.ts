// Real-VM scenarios of the VM lifecycle (issue: real microVMs). Every VM is a real QEMU microvm
// guest under TCG, created by the real daemon inside the smoke network namespace.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Operation, Vm } from '../../generated/types.gen.ts';
import { banger, bangerJson, daemonLogRecords, restartSmokeDaemon, smokeEnv, uniqueName } from './harness.ts';

const created: string[] = [];
async function create(name: string, extra: string[] = []): Promise<{ operation: Operation; vm: Vm }> {
  created.push(name);
  return bangerJson<{ operation: Operation; vm: Vm }>(['vm', 'create', '--name', name, ...extra]);
}

/** Lifecycle verbs accept several names and answer with one entry per name. */
async function one<R>(args: string[]): Promise<R> {
  const r = await bangerJson<{ name: string; ok: boolean; result?: R; error?: { message: string } }[]>(args);
  expect(r).toHaveLength(1);
  if (!r[0]!.ok) throw new Error(`banger ${args.join(' ')}: ${r[0]!.error?.message}`);
  return r[0]!.result!;
}

afterAll(async () => {
  for (const n of created) await banger(['vm', 'delete', n]);
});

describe('vm lifecycle on real VMs', () => {
  it('lifecycle: create → ssh runs a command → stop → start → a file written before stop is still there → delete leaves nothing', async () => {
    const name = uniqueName('life');
    const { vm, operation } = await create(name);
    expect(vm.state).toBe('running');
    expect(operation.state).toBe('succeeded');
    const steps = operation.steps.map((s) => s.name);
    expect(steps).toEqual(
      expect.arrayContaining(['resolve_image', 'prepare_disk', 'seed', 'boot', 'wait_ready']),
    );
    for (const s of operation.steps) expect(s.state).toBe('done');

    const uname = await banger(['vm', 'ssh', name, '--', 'uname', '-a']);
    expect(uname.code).toBe(0);
    expect(uname.stdout).toMatch(/^Linux .*cloud-amd64/);
    const host = await banger(['vm', 'ssh', name, '--', 'hostname']);
    expect(host.stdout.trim()).toBe(name);

    expect(
      (await banger(['vm', 'ssh', name, '--', 'sh', '-c', 'echo persisted-$((6*7)) > /root/keep.txt'])).code,
    ).toBe(0);
    const stop = await one<{ vm: Vm; clean: boolean; forced: boolean }>(['vm', 'stop', name]);
    expect(stop.vm.state).toBe('stopped');
    expect(stop.clean).toBe(true);

    const started = await one<{ vm: Vm }>(['vm', 'start', name]);
    expect(started.vm.state).toBe('running');
    expect(started.vm.boot_count).toBe(2);
    const cat = await banger(['vm', 'ssh', name, '--', 'cat', '/root/keep.txt']);
    expect(cat.stdout.trim()).toBe('persisted-42');

    const vmDir = started.vm.vm_dir;
    expect(existsSync(vmDir)).toBe(true);
    expect((await banger(['vm', 'delete', name])).code).toBe(0);
    expect(existsSync(vmDir)).toBe(false);
    const vms = await bangerJson<Vm[]>(['vm', 'list']);
    expect(vms.map((v) => v.name)).not.toContain(name);
    const knownHosts = join(smokeEnv().stateDir, 'ssh', 'known_hosts');
    if (existsSync(knownHosts)) {
      const { readFileSync } = await import('node:fs');
      expect(readFileSync(knownHosts, 'utf8')).not.toContain(`${name}.vm`);
    }
  });

  it('exit code propagation through vm ssh, arguments arrive intact', async () => {
    const name = uniqueName('exit');
    await create(name);
    const r = await banger(['vm', 'ssh', name, '--', 'sh', '-c', 'exit 42']);
    expect(r.code).toBe(42);
    const echo = await banger(['vm', 'ssh', name, '--', 'printf', '%s|', 'a b', "it's", '$HOME', '*']);
    expect(echo.stdout).toBe("a b|it's|$HOME|*|");
    // vm logs shows the kernel banner of this boot.
    const logs = await banger(['vm', 'logs', name]);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toMatch(/Linux version \d+\.\d+/);
    expect(logs.stdout).toMatch(/banger: op-[0-9a-f]+ vm\.create begins/);
  });

  it('daemon restart keeps a running VM running and reattached', async () => {
    const name = uniqueName('keep');
    const { vm } = await create(name);
    const pid = vm.pid!;
    const bootId = (
      await banger(['vm', 'ssh', name, '--', 'cat', '/proc/sys/kernel/random/boot_id'])
    ).stdout.trim();
    await restartSmokeDaemon();
    const after = await bangerJson<Vm>(['vm', 'show', name]);
    expect(after.state).toBe('running');
    expect(after.pid).toBe(pid);
    const again = await banger(['vm', 'ssh', name, '--', 'cat', '/proc/sys/kernel/random/boot_id']);
    expect(again.stdout.trim()).toBe(bootId);
    // And it can still be stopped through the new daemon.
    const stop = await one<{ vm: Vm; clean: boolean }>(['vm', 'stop', name]);
    expect(stop.vm.state).toBe('stopped');
  });

  it('two concurrent creates both succeed', async () => {
    const a = uniqueName('conc');
    const b = uniqueName('conc');
    const [ra, rb] = await Promise.all([create(a), create(b)]);
    expect(ra.vm.state).toBe('running');
    expect(rb.vm.state).toBe('running');
    expect(ra.vm.network.ssh_port).not.toBe(rb.vm.network.ssh_port);
    const [ha, hb] = await Promise.all([
      banger(['vm', 'ssh', a, '--', 'hostname']),
      banger(['vm', 'ssh', b, '--', 'hostname']),
    ]);
    expect(ha.stdout.trim()).toBe(a);
    expect(hb.stdout.trim()).toBe(b);
  });

  it('an invalid spec fails cleanly and leaves no row and no file', async () => {
    const vmsDir = join(smokeEnv().stateDir, 'vms');
    const before = existsSync(vmsDir) ? readdirSync(vmsDir).length : 0;
    const bad = [
      ['vm', 'create', '--name', 'Bad_Name'],
      ['vm', 'create', '--name', uniqueName('inv'), '--vcpu', '0'],
      ['vm', 'create', '--name', uniqueName('inv'), '--disk-size', '1K'],
      ['vm', 'create', '--name', uniqueName('inv'), '--image', 'no-such-image'],
    ];
    for (const args of bad) {
      const r = await banger(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).not.toBe(0);
      expect(r.stderr).toMatch(/error: /);
    }
    const after = existsSync(vmsDir) ? readdirSync(vmsDir).length : 0;
    expect(after).toBe(before);
    const vms = await bangerJson<Vm[]>(['vm', 'list']);
    expect(vms.filter((v) => v.name.startsWith('inv-') || v.name === 'Bad_Name')).toEqual([]);
  });

  it('create cancel undoes everything it did', async () => {
    const name = uniqueName('cncl');
    const begin = await bangerJson<{ operation_id: string }>(['vm', 'create', '--name', name, '--detach']);
    // Let it get past recording the VM (into disk/seed/boot) before canceling.
    const deadline = Date.now() + 120_000;
    let vmDir: string | undefined;
    while (!vmDir && Date.now() < deadline) {
      const st = await banger(['vm', 'show', name, '--json']);
      if (st.code === 0) vmDir = (JSON.parse(st.stdout) as Vm).vm_dir;
      else await new Promise((r) => setTimeout(r, 300));
    }
    expect(vmDir).toBeDefined();
    const { runCancel } = await import('./ops.ts');
    const op = await runCancel(begin.operation_id);
    expect(op.state).toBe('canceled');
    expect(op.error?.code).toBe('canceled');
    expect(op.steps.some((s) => s.state === 'undone')).toBe(true);
    const show = await banger(['vm', 'show', name]);
    expect(show.code).toBe(3); // not_found
    expect(existsSync(vmDir!)).toBe(false);
    const log = daemonLogRecords().filter((r) => r.op_id === begin.operation_id);
    expect(log.some((r) => r.msg === 'step started')).toBe(true);
  });
});
