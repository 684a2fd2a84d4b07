// Real-VM scenarios for the management verbs: health, stats, kill, set, prune; and image/kernel
// import on the files of the built image.
import { afterAll, describe, expect, it } from 'vitest';
import type { Image, Kernel, Vm } from '../../generated/types.gen.ts';
import { banger, bangerJson, uniqueName } from './harness.ts';

const made: string[] = [];
afterAll(async () => {
  for (const n of made) await banger(['vm', 'delete', n]);
});

describe('managing real VMs', () => {
  it('health, stats, kill, set (cpu change visible in the guest), prune keeps running VMs', async () => {
    const name = uniqueName('mgmt');
    made.push(name);
    const { vm } = await bangerJson<{ vm: Vm }>(['vm', 'create', '--name', name, '--vcpu', '2']);
    expect(vm.state).toBe('running');

    const health = await bangerJson<{
      kernel_up: boolean;
      userspace_up: boolean;
      ssh_ready: boolean;
      boot_id?: string;
    }>(['vm', 'health', name]);
    expect(health).toMatchObject({ kernel_up: true, userspace_up: true, ssh_ready: true });
    expect(health.boot_id).toMatch(/^[0-9a-f-]{36}$/);

    const stats = await bangerJson<{
      pid: number;
      rss_bytes: number;
      cpu_seconds: number;
      disk_allocated_bytes: number;
      disk_virtual_bytes: number;
    }>(['vm', 'stats', name]);
    expect(stats.pid).toBe(vm.pid);
    expect(stats.rss_bytes).toBeGreaterThan(50 * 1024 * 1024);
    expect(stats.cpu_seconds).toBeGreaterThan(1);
    expect(stats.disk_allocated_bytes).toBeGreaterThan(0);
    expect(stats.disk_virtual_bytes).toBe(vm.disk_size_bytes);

    // The guest grew its root filesystem to the disk size on first boot.
    const df = await banger(['vm', 'ssh', name, '--', 'df', '-B1', '--output=size', '/']);
    const rootBytes = Number(df.stdout.trim().split('\n').at(-1));
    expect(rootBytes).toBeGreaterThan(vm.disk_size_bytes * 0.9);

    // A running VM cannot be resized; prune keeps it.
    const busy = await banger(['vm', 'set', name, '--vcpu', '1']);
    expect(busy.code).toBe(6); // conflict
    const pruneRunning = await bangerJson<{ deleted: string[]; kept: string[] }>(['vm', 'prune', '-f']);
    expect(pruneRunning.kept).toContain(name);
    expect(pruneRunning.deleted).not.toContain(name);

    const killed = await bangerJson<{ ok: boolean; result: { vm: Vm } }[]>(['vm', 'kill', name]);
    expect(killed[0]!.result.vm.state).toBe('stopped');
    const set = await bangerJson<Vm | { vm: Vm }>(['vm', 'set', name, '--vcpu', '1', '--memory', '640']);
    const setVm = 'vm' in set ? set.vm : set;
    expect(setVm.vcpus).toBe(1);
    expect(setVm.memory_mib).toBe(640);
    expect((await banger(['vm', 'start', name])).code).toBe(0);
    const nproc = await banger(['vm', 'ssh', name, '--', 'nproc']);
    expect(nproc.stdout.trim()).toBe('1');

    expect((await banger(['vm', 'stop', name])).code).toBe(0);
    const pruned = await bangerJson<{ deleted: string[] }>(['vm', 'prune', '-f']);
    expect(pruned.deleted).toContain(name);
    expect((await banger(['vm', 'show', name])).code).toBe(3);
  });

  it('image and kernel import, list, delete (files the user brings)', async () => {
    const images = await bangerJson<Image[] | { images: Image[] }>(['image', 'list']);
    const list = Array.isArray(images) ? images : images.images;
    const def = list.find((i) => i.default)!;
    const kernels = await bangerJson<Kernel[] | { kernels: Kernel[] }>(['kernel', 'list']);
    const klist = Array.isArray(kernels) ? kernels : kernels.kernels;
    const k = klist.find((x) => x.name === def.kernel)!;
    const name = uniqueName('imp');
    const args = ['image', 'import', '--name', name, '--rootfs', def.rootfs_path, '--kernel', k.kernel_path];
    if (k.initrd_path) args.push('--initrd', k.initrd_path);
    const imported = await bangerJson<Image | { image: Image }>(args);
    const img = 'image' in imported ? imported.image : imported;
    expect(img).toMatchObject({ name, source: 'imported', default: false });
    expect(img.rootfs_path).not.toBe(def.rootfs_path);
    const again = await banger(args);
    expect(again.code).toBe(4); // already_exists
    expect((await banger(['image', 'delete', name])).code).toBe(0);
    expect((await banger(['image', 'show', name])).code).toBe(3);
    // An imported image's kernel outlives it until deleted on its own.
    expect((await banger(['kernel', 'delete', name])).code).toBe(0);
    const kname = uniqueName('kern');
    const kargs = ['kernel', 'import', '--name', kname, '--kernel', k.kernel_path];
    const kimp = await bangerJson<Kernel | { kernel: Kernel }>(kargs);
    const kk = 'kernel' in kimp ? kimp.kernel : kimp;
    expect(kk.version).toMatch(/^\d+\.\d+/);
    expect((await banger(['kernel', 'delete', kname])).code).toBe(0);
    // The default image's kernel is in use: refused.
    expect((await banger(['kernel', 'delete', k.name])).code).toBe(6);
  });
});
