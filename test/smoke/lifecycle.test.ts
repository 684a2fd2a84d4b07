// Real-VM scenarios of the VM lifecycle. Every VM is a real QEMU microvm guest under TCG, created
// by the real daemon inside the smoke network namespace. Each scenario's name starts with its id
// (`npm run smoke -- -t vm_logs`). The scenarios that only need "a running VM" share one, made on
// first use, so running them together costs one boot.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Operation, Vm } from '../../generated/types.gen.ts';
import {
  banger,
  bangerJson,
  daemonLogRecords,
  pinnedHosts,
  restartSmokeDaemon,
  smokeEnv,
  uniqueName,
  vmDirs,
} from './harness.ts';

const created: string[] = [];
async function create(name: string, extra: string[] = []): Promise<{ operation: Operation; vm: Vm }> {
  created.push(name);
  return bangerJson<{ operation: Operation; vm: Vm }>(['vm', 'create', '--name', name, ...extra]);
}

afterAll(async () => {
  for (const n of created) await banger(['vm', 'delete', n]);
});

// The shared running VM (ssh_args, vm_logs, daemon_restart, ssh_host_key — in that order,
// since ssh_host_key leaves it unreachable over ssh).
let shared: Promise<Vm> | undefined;
function sharedVm(): Promise<Vm> {
  shared ??= create(uniqueName('life')).then((r) => r.vm);
  return shared;
}

describe('vm lifecycle on real VMs', () => {
  it('create_delete: vm create (named steps) → vm ssh runs a command → vm delete leaves nothing', async () => {
    const dirs = vmDirs();
    const name = uniqueName('crdl');
    const { vm, operation } = await create(name);
    expect(vm.state).toBe('running');
    expect(operation.state).toBe('succeeded');
    const steps = operation.steps.map((s) => s.name);
    expect(steps).toEqual(
      expect.arrayContaining(['resolve_image', 'prepare_disk', 'seed', 'boot', 'wait_ready']),
    );
    // Every step ran, but `warm`: no template of this spec, said so (the create boots cold).
    for (const s of operation.steps) expect(s.state).toBe(s.name === 'warm' ? 'skipped' : 'done');
    expect(operation.steps.find((s) => s.name === 'warm')?.detail).toMatch(
      /^booting cold: no warm template for this spec \(make one with: banger image warm debian-bookworm\)$/,
    );
    expect(pinnedHosts()).toContain(`${name}.vm`);

    const uname = await banger(['vm', 'ssh', name, '--', 'uname', '-a']);
    expect(uname.code).toBe(0);
    expect(uname.stdout).toMatch(/^Linux .*cloud-amd64/);
    const host = await banger(['vm', 'ssh', name, '--', 'hostname']);
    expect(host.stdout.trim()).toBe(name);

    expect(existsSync(vm.vm_dir)).toBe(true);
    expect((await banger(['vm', 'delete', name])).code).toBe(0);
    expect(existsSync(vm.vm_dir)).toBe(false);
    expect(vmDirs()).toEqual(dirs);
    const vms = await bangerJson<Vm[]>(['vm', 'list']);
    expect(vms.map((v) => v.name)).not.toContain(name);
    expect(pinnedHosts()).not.toContain(`${name}.vm`);
  });

  it('ssh_args: vm ssh exits with the remote exit code; arguments arrive intact', async () => {
    const vm = await sharedVm();
    const r = await banger(['vm', 'ssh', vm.name, '--', 'sh', '-c', 'exit 42']);
    expect(r.code).toBe(42);
    const echo = await banger(['vm', 'ssh', vm.name, '--', 'printf', '%s|', 'a b', "it's", '$HOME', '*']);
    expect(echo.stdout).toBe("a b|it's|$HOME|*|");
  });

  it('vm_logs: vm logs shows the boot (kernel banner after the create marker)', async () => {
    const vm = await sharedVm();
    const logs = await banger(['vm', 'logs', vm.name]);
    expect(logs.code).toBe(0);
    const marker = logs.stdout.search(/banger: op-[0-9a-f]+ vm\.create begins/);
    expect(marker).toBeGreaterThanOrEqual(0);
    expect(logs.stdout.slice(marker)).toMatch(/Linux version \d+\.\d+/);
  });

  it('daemon_restart: a restarted daemon finds the running VM (same VMM, same boot) and still controls it', async () => {
    const vm = await sharedVm();
    const bootId = (
      await banger(['vm', 'ssh', vm.name, '--', 'cat', '/proc/sys/kernel/random/boot_id'])
    ).stdout.trim();
    expect(bootId).toMatch(/^[0-9a-f-]{36}$/);
    await restartSmokeDaemon();
    const after = await bangerJson<Vm>(['vm', 'show', vm.name]);
    expect(after.state).toBe('running');
    expect(after.pid).toBe(vm.pid);
    const again = await banger(['vm', 'ssh', vm.name, '--', 'cat', '/proc/sys/kernel/random/boot_id']);
    expect(again.stdout.trim()).toBe(bootId);
    const health = await bangerJson<{ ssh_ready: boolean; boot_id?: string }>(['vm', 'health', vm.name]);
    expect(health).toMatchObject({ ssh_ready: true, boot_id: bootId });
  });

  it('ssh_host_key: vm ssh pins the host key; a guest whose key changed is refused', async () => {
    const vm = await sharedVm();
    const knownHosts = join(smokeEnv().stateDir, 'ssh', 'known_hosts');
    const pinned = readFileSync(knownHosts, 'utf8');
    expect(pinnedHosts()).toContain(`${vm.name}.vm`);
    // The guest gets a new host key and sshd restarts with it (detached: our session goes).
    const regen = await banger([
      'vm',
      'ssh',
      vm.name,
      '--',
      'sh',
      '-c',
      "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && (setsid systemctl restart ssh >/dev/null 2>&1 &)",
    ]);
    expect(regen.code, regen.stderr).toBe(0);
    let refused: { code: number | null; stderr: string } | undefined;
    for (let i = 0; i < 60 && !refused; i++) {
      const r = await banger(['vm', 'ssh', vm.name, '--', 'true']);
      if (
        r.code === 255 &&
        /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/.test(r.stderr)
      )
        refused = r;
      else await new Promise((res) => setTimeout(res, 500));
    }
    expect(refused, 'ssh kept connecting after the guest changed its host key').toBeDefined();
    // Nothing re-pinned it behind the user's back; vm exec is refused the same way.
    expect(readFileSync(knownHosts, 'utf8')).toBe(pinned);
    const ex = await banger(['vm', 'exec', vm.name, '--', 'true']);
    expect(ex.code).toBe(255);
    // vm health says so too (and exits non-zero: the VM is not healthy).
    const health = await banger(['vm', 'health', vm.name, '--json']);
    expect(health.code).not.toBe(0);
    expect(JSON.parse(health.stdout)).toMatchObject({ kernel_up: true, ssh_ready: false });
  });

  it('create_cancel: canceling a create undoes everything it did', async () => {
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

  it('op_id: the op id printed with a CLI error is the one on the daemon log lines of that call', async () => {
    const cases: [string[], string, string][] = [
      [
        ['vm', 'create', '--name', uniqueName('opid'), '--image', 'no-such-image'],
        'vm.create.begin',
        'not_found',
      ],
      [['vm', 'workspace', 'export', 'no-such-vm'], 'vm.workspace.export', 'not_found'],
      [['vm', 'set', 'no-such-vm', '--vcpu', '2'], 'vm.set', 'not_found'],
    ];
    const seen = new Set<string>();
    for (const [args, method, code] of cases) {
      const r = await banger(args);
      expect(r.code, r.stderr).toBe(3);
      const m = /^error: .* \((op-[0-9a-f]{6,32})\)$/m.exec(r.stderr);
      expect(m, r.stderr).not.toBeNull();
      const opId = m![1]!;
      expect(seen.has(opId)).toBe(false);
      seen.add(opId);
      const lines = daemonLogRecords().filter((l) => l.op_id === opId);
      expect(lines.length, `daemon log lines with ${opId}`).toBeGreaterThan(0);
      expect(lines.find((l) => l.msg === 'rpc failed')).toMatchObject({ method, code, op_id: opId });
      // And no other call's lines carry it.
      expect(lines.every((l) => l.method === undefined || l.method === method)).toBe(true);
    }
  });
});
