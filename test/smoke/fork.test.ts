// vm fork on real VMs (issue 14). vm_fork: a tmpfs file and a counter loop in the source are in
// the fork and the loop runs on there; the fork has its own hostname, machine-id and SSH host
// key; the source keeps running and counting; the fork's RAM file is read-only and unchanged by
// the running forks. fork_workspace: a VM made by `vm run REPO -d` with a workspace, forked
// twice, different edits in each fork, each fork on its own branch, `vm workspace export` gives
// each fork's own patch. Scenario ids: vm_fork, fork_workspace (`npm run smoke -- -t vm_fork`).
import { execFileSync } from 'node:child_process';
import { chmodSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Vm, VmForkStatusResult } from '../../generated/types.gen.ts';
import { makeTestRepo, type TestRepo } from '../helpers/git-repo.ts';
import { banger, bangerJson, smokeEnv, uniqueName } from './harness.ts';

const leftovers: string[] = [];
const repos: TestRepo[] = [];

afterAll(async () => {
  // Forks first: the source's delete must work while they use its frozen disk either way.
  for (const n of leftovers.reverse()) await banger(['vm', 'delete', n]);
  for (const r of repos) r.cleanup();
});

async function sh(n: string, script: string): Promise<string> {
  const r = await banger(['vm', 'ssh', n, '--', 'sh', '-c', script], { timeoutMs: 120_000 });
  expect(r.code, `ssh ${n} ${script}: ${r.stderr}`).toBe(0);
  return r.stdout.trim();
}

// sha256sum streams the file (a guest's RAM: up to its memory size).
const sha256 = (path: string): string =>
  execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0]!;

async function fork(source: string, names: string[]): Promise<VmForkStatusResult> {
  leftovers.push(...names);
  const args = ['vm', 'fork', source, ...names.flatMap((n) => ['--name', n])];
  return bangerJson<VmForkStatusResult>(args, { timeoutMs: 600_000 });
}

describe('vm fork on real VMs', () => {
  it('vm_fork: tmpfs and a running counter follow into the fork, which has its own identity; the source runs on', async () => {
    const src = uniqueName('fsrc');
    const kid = uniqueName('fkid');
    leftovers.push(src);
    const created = await bangerJson<{ vm: Vm }>(['vm', 'create', '--name', src, '--network', 'user'], {
      timeoutMs: 600_000,
    });
    expect(created.vm.state).toBe('running');
    await sh(
      src,
      'mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t && echo kept-in-ram > /mnt/t/f && ' +
        '(setsid sh -c "i=0; while true; do i=\\$((i+1)); echo \\$i > /mnt/t/counter; sleep 1; done" </dev/null >/dev/null 2>&1 &) && sleep 3',
    );
    const srcId = {
      machineId: await sh(src, 'cat /etc/machine-id'),
      hostKey: await sh(src, 'cat /etc/ssh/ssh_host_ed25519_key.pub'),
    };
    const before = Number(await sh(src, 'cat /mnt/t/counter'));
    expect(before).toBeGreaterThan(0);

    const t0 = Date.now();
    const r = await fork(src, [kid]);
    const forkMs = Date.now() - t0;
    expect(r.operation.state).toBe('succeeded');
    expect(r.source).toBe(src);
    expect(r.vms.map((v) => [v.name, v.state])).toEqual([[kid, 'running']]);
    expect(r.source_pause_ms).toBeGreaterThan(0);
    expect(r.operation.steps.map((s) => s.name)).toEqual([
      'prepare',
      'pause_source',
      'freeze_disk',
      'resume_source',
      'save',
      'start_children',
    ]);

    // The fork: the tmpfs file, and the counter loop running on from the source's count.
    expect(await sh(kid, 'cat /mnt/t/f')).toBe('kept-in-ram');
    const k1 = Number(await sh(kid, 'cat /mnt/t/counter'));
    expect(k1).toBeGreaterThanOrEqual(before);
    // Its own identity.
    expect(await sh(kid, 'hostname')).toBe(kid);
    expect(await sh(kid, 'cat /etc/machine-id')).not.toBe(srcId.machineId);
    expect(await sh(kid, 'cat /etc/ssh/ssh_host_ed25519_key.pub')).not.toBe(srcId.hostKey);
    // The source: running, same identity, counting on.
    const s = await bangerJson<Vm>(['vm', 'show', src]);
    expect(s.state).toBe('running');
    expect(await sh(src, 'hostname')).toBe(src);
    expect(await sh(src, 'cat /etc/machine-id')).toBe(srcId.machineId);
    const s1 = Number(await sh(src, 'cat /mnt/t/counter'));
    expect(s1).toBeGreaterThan(before);
    // Writes in one do not show in the other (own overlays, own RAM).
    await sh(kid, 'echo kid-only > /root/only && echo kid-tmp > /mnt/t/g');
    expect(await sh(src, 'cat /root/only /mnt/t/g 2>/dev/null || echo none')).toBe('none');
    await new Promise((res) => setTimeout(res, 3000));
    expect(Number(await sh(kid, 'cat /mnt/t/counter'))).toBeGreaterThan(k1);
    expect(Number(await sh(src, 'cat /mnt/t/counter'))).toBeGreaterThan(s1);
    // The fork's RAM file: read-only, and the running fork (balloon driver unbound) never changed it.
    // This fork's directory: the last fork the child's forks.json names (its disk and RAM's).
    const stateDir = smokeEnv().stateDir;
    const deps = JSON.parse(
      readFileSync(join(stateDir, 'vms', r.vms[0]!.id, 'forks.json'), 'utf8'),
    ) as string[];
    const forkId = deps[deps.length - 1];
    expect(forkId).toMatch(/^[0-9a-f]+$/);
    const ram = join(stateDir, 'forks', forkId!, 'ram');
    expect(statSync(ram).mode & 0o777).toBe(0o444);
    const h1 = sha256(ram);
    await sh(
      kid,
      'dd if=/dev/zero of=/dev/null bs=1M count=1 && head -c 64m /dev/zero > /mnt/t/big && rm /mnt/t/big && sync && sleep 3',
    );
    expect(sha256(ram)).toBe(h1);
    expect(await sh(kid, 'ls /sys/bus/virtio/drivers/virtio_balloon/ | grep -c virtio || true')).toBe('0');
    const step = (n: string): number | undefined => r.operation.steps.find((x) => x.name === n)?.duration_ms;
    process.stderr.write(
      `vm_fork: fork → child running with ssh ${forkMs} ms; source paused ${r.source_pause_ms} ms; steps ${r.operation.steps.map((x) => `${x.name} ${step(x.name)} ms`).join(', ')}\n`,
    );
  });

  it('vm_ram_file: a booted VM maps its RAM from an unlinked file on /dev/shm; memory the guest frees goes back to the host', async () => {
    const n = uniqueName('fram');
    leftovers.push(n);
    const created = await bangerJson<{ vm: Vm }>(['vm', 'create', '--name', n, '--network', 'user'], {
      timeoutMs: 600_000,
    });
    const pid = created.vm.pid!;
    const uid = smokeEnv().daemonUser?.uid ?? 0;
    const dir = `/dev/shm/banger-${uid}`;
    // The RAM file: open in the VMM, its name already gone (nothing to leak).
    const links = readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
    expect(
      links.filter((l) => l.startsWith(`${dir}/qemu_back_mem.mem.`) && l.endsWith(' (deleted)')),
    ).toHaveLength(1);
    expect(readdirSync(dir).filter((f) => f.startsWith('qemu_back_mem.'))).toEqual([]);
    const shmem = (): number => {
      const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
      return Number(/^Pss_Shmem:\s+(\d+) kB/m.exec(t)?.[1] ?? NaN) / 1024;
    };
    await sh(
      n,
      'mkdir -p /mnt/b && mount -t tmpfs -o size=500m tmpfs /mnt/b && head -c 400m /dev/urandom > /mnt/b/big',
    );
    const peak = shmem();
    await sh(n, 'rm /mnt/b/big && umount /mnt/b');
    // Free page reporting: the guest hands free blocks back, QEMU punches them out of the file.
    let after = peak;
    for (let i = 0; i < 30 && after > peak - 250; i++) {
      await new Promise((res) => setTimeout(res, 1000));
      after = shmem();
    }
    process.stderr.write(
      `vm_ram_file: VMM Pss_Shmem ${peak.toFixed(0)} MiB with 400 MiB in use, ${after.toFixed(0)} MiB after it was freed\n`,
    );
    expect(peak).toBeGreaterThan(400);
    expect(after).toBeLessThan(peak - 250);
  });

  it('fork_workspace: a workspace VM forked twice; each fork on its own branch, each export its own patch', async () => {
    const r = makeTestRepo('bsmoke-fork');
    chmodSync(dirname(r.dir), 0o755);
    repos.push(r);
    const src = uniqueName('fws');
    leftovers.push(src);
    const out = await banger(['vm', 'run', r.dir, '-d', '--name', src, '--json'], { timeoutMs: 600_000 });
    expect(out.code, out.stderr).toBe(0);
    const a = uniqueName('fwa');
    const b = uniqueName('fwb');
    const res = await fork(src, [a, b]);
    expect(res.vms.map((v) => v.state)).toEqual(['running', 'running']);
    const ws = '/root/repo';
    for (const n of [a, b]) {
      expect(await sh(n, `cd ${ws} && git rev-parse --abbrev-ref HEAD`)).toBe(`banger/fork/${n}`);
      const show = await bangerJson<Vm>(['vm', 'show', n]);
      expect(show.workspace?.guest_path).toBe(ws);
    }
    await sh(a, `cd ${ws} && printf 'from fork a\\n' > a.txt`);
    await sh(b, `cd ${ws} && printf 'from fork b\\n' > src/app.txt`);
    const pa = await banger(['vm', 'workspace', 'export', a]);
    const pb = await banger(['vm', 'workspace', 'export', b]);
    expect(pa.code, pa.stderr).toBe(0);
    expect(pb.code, pb.stderr).toBe(0);
    expect(pa.stdout).toContain('a.txt');
    expect(pa.stdout).toContain('from fork a');
    expect(pa.stdout).not.toContain('from fork b');
    expect(pb.stdout).toContain('from fork b');
    expect(pb.stdout).not.toContain('a.txt');
    // The source: neither fork's edit.
    const ps = await banger(['vm', 'workspace', 'export', src]);
    expect(ps.stdout).not.toContain('from fork');
  });
});
