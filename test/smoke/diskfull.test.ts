// Truthful state on a full host disk (issue 12): a real guest writes until the filesystem holding
// its disk overlay is full; QEMU stops it (BLOCK_IO_ERROR nospace, STOP) and banger lists it
// `paused` with the reason; once the host filesystem has room again banger resumes it by itself
// and the guest's write completes. The VM's directory is put on a small tmpfs inside the daemon's
// own mount namespace (the daemon runs under `ip netns exec`, which gives it one), so nothing of
// the host fills up. Scenario id: disk_full.
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import type { Vm } from '../../generated/types.gen.ts';
import { banger, bangerJson, smokeEnv, uniqueName } from './harness.ts';

/** Run a command in the daemon's mount namespace (where its VMMs see their files). */
function inDaemonMounts(argv: string[]): string {
  const pid = smokeEnv().daemonPid;
  const r = spawnSync('nsenter', ['-t', String(pid), '-m', '--', ...argv], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} in the daemon's mounts: ${r.stderr}`);
  return r.stdout;
}

async function show(name: string): Promise<Vm> {
  return bangerJson<Vm>(['vm', 'show', name]);
}

async function until(what: string, ms: number, cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const name = uniqueName('full');
let mounted: string | undefined;

afterAll(async () => {
  await banger(['vm', 'kill', name]);
  if (mounted) inDaemonMounts(['umount', '-l', mounted]);
  await banger(['vm', 'delete', name]);
});

describe('truthful state on real VMs', () => {
  it('disk_full: a guest stopped by a full host disk is listed paused with why, and resumes by itself once there is room', async () => {
    const env = smokeEnv();
    const { vm } = await bangerJson<{ vm: Vm }>([
      'vm',
      'create',
      '--name',
      name,
      '--no-start',
      '--network',
      'user',
    ]);
    // Its directory moves onto a 160 MiB tmpfs (the files are copied over; the originals stay
    // underneath and come back when the tmpfs is unmounted).
    const dir = vm.vm_dir;
    const owner = env.daemonUser ? `uid=${env.daemonUser.uid},gid=${env.daemonUser.gid},` : '';
    inDaemonMounts([
      'sh',
      '-c',
      `set -e; t=$(mktemp -d); cp -a "$0"/. "$t"/; mount -t tmpfs -o ${owner}mode=0700,size=160m tmpfs "$0"; cp -a "$t"/. "$0"/; rm -rf "$t"`,
      dir,
    ]);
    mounted = dir;
    expect((await banger(['vm', 'start', name], { timeoutMs: 300_000 })).code).toBe(0);
    expect((await show(name)).state).toBe('running');

    // 400 MiB of random data into a 160 MiB filesystem: QEMU pauses the guest on ENOSPC.
    const dd = await banger([
      'vm',
      'ssh',
      name,
      '--',
      'sh',
      '-c',
      'nohup dd if=/dev/urandom of=/root/big bs=1M count=400 conv=fsync > /root/dd.log 2>&1 &',
    ]);
    expect(dd.code).toBe(0);
    await until('the VM to be paused', 180_000, async () => (await show(name)).state === 'paused');
    const paused = await show(name);
    expect(paused.state_reason).toMatch(
      /^host disk full at \S+ \(.*No space left on device\); resumes by itself once space is free, or with: banger vm resume /,
    );
    const list = await bangerJson<Vm[]>(['vm', 'list']);
    expect(list.find((v) => v.name === name)?.state).toBe('paused');
    // Health says so too: a paused guest answers nothing.
    const hr = await banger(['vm', 'health', name, '--json']);
    expect(hr.code).toBe(1); // not healthy
    expect(JSON.parse(hr.stdout)).toMatchObject({ state: 'paused', ssh_ready: false });

    // Room again: banger resumes it by itself (it checks every 5 s) and the write completes.
    inDaemonMounts(['mount', '-o', 'remount,size=1g', dir]);
    await until('the VM to run again', 120_000, async () => (await show(name)).state === 'running');
    expect((await show(name)).state_reason).toBeUndefined();
    await until('dd to finish in the guest', 300_000, async () => {
      const r = await banger([
        'vm',
        'ssh',
        name,
        '--',
        'sh',
        '-c',
        'pgrep -x dd >/dev/null && echo busy || echo done',
      ]);
      return r.stdout.trim() === 'done';
    });
    const size = await banger(['vm', 'ssh', name, '--', 'stat', '-c', '%s', '/root/big']);
    expect(size.stdout.trim()).toBe(String(400 * 1024 * 1024));
    const logs = await banger(['vm', 'ssh', name, '--', 'cat', '/root/dd.log']);
    expect(logs.stdout).toMatch(/419430400 bytes/);
    expect((await banger(['vm', 'stop', name])).code).toBe(0);
  });
});
