// Real-VM scenarios for the management verbs: health, stats, kill, set, prune; and image/kernel
// import on the files of the built image. Each scenario's name starts with its id. The VM scenarios
// share one VM (made on first use), in the order health_stats, vm_prune, vm_kill, vm_set.
import { afterAll, describe, expect, it } from 'vitest';
import type { Image, Kernel, Vm } from '../../generated/types.gen.ts';
import { banger, bangerJson, uniqueName } from './harness.ts';

const made: string[] = [];
afterAll(async () => {
  for (const n of made) await banger(['vm', 'delete', n]);
});

let shared: Promise<Vm> | undefined;
function managedVm(): Promise<Vm> {
  shared ??= (async () => {
    const name = uniqueName('mgmt');
    made.push(name);
    return (await bangerJson<{ vm: Vm }>(['vm', 'create', '--name', name, '--vcpu', '2'])).vm;
  })();
  return shared;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('managing real VMs', () => {
  it('health_stats: vm health and vm stats describe a running VM; the root fs fills the disk', async () => {
    const vm = await managedVm();
    expect(vm.state).toBe('running');
    const health = await bangerJson<{
      kernel_up: boolean;
      userspace_up: boolean;
      ssh_ready: boolean;
      boot_id?: string;
    }>(['vm', 'health', vm.name]);
    expect(health).toMatchObject({ kernel_up: true, userspace_up: true, ssh_ready: true });
    expect(health.boot_id).toMatch(/^[0-9a-f-]{36}$/);

    const stats = await bangerJson<{
      pid: number;
      rss_bytes: number;
      cpu_seconds: number;
      disk_allocated_bytes: number;
      disk_virtual_bytes: number;
    }>(['vm', 'stats', vm.name]);
    expect(stats.pid).toBe(vm.pid);
    expect(stats.rss_bytes).toBeGreaterThan(50 * 1024 * 1024);
    expect(stats.cpu_seconds).toBeGreaterThan(1);
    expect(stats.disk_allocated_bytes).toBeGreaterThan(0);
    expect(stats.disk_virtual_bytes).toBe(vm.disk_size_bytes);

    // The guest grew its root filesystem to the disk size on first boot.
    const df = await banger(['vm', 'ssh', vm.name, '--', 'df', '-B1', '--output=size', '/']);
    const rootBytes = Number(df.stdout.trim().split('\n').at(-1));
    expect(rootBytes).toBeGreaterThan(vm.disk_size_bytes * 0.9);
  });

  it('vm_prune: vm prune deletes stopped VMs and keeps running ones', async () => {
    const vm = await managedVm();
    const stopped = uniqueName('prn');
    made.push(stopped);
    // Recorded but never booted: a stopped VM at no boot cost.
    const c = await bangerJson<{ vm: Vm }>(['vm', 'create', '--name', stopped, '--no-start']);
    expect(c.vm.state).toBe('stopped');
    const dry = await bangerJson<{ deleted: string[]; kept: string[] }>(['vm', 'prune', '--dry-run']);
    expect(dry.deleted).toContain(stopped);
    expect((await banger(['vm', 'show', stopped])).code).toBe(0);
    const pruned = await bangerJson<{ deleted: string[]; kept: string[] }>(['vm', 'prune', '-f']);
    expect(pruned.deleted).toContain(stopped);
    expect(pruned.kept).toContain(vm.name);
    expect(pruned.deleted).not.toContain(vm.name);
    expect((await banger(['vm', 'show', stopped])).code).toBe(3);
    expect((await bangerJson<Vm>(['vm', 'show', vm.name])).state).toBe('running');
  });

  it('vm_kill: vm kill stops the VMM at once; the VM is stopped and can be killed no more', async () => {
    const vm = await managedVm();
    const pid = (await bangerJson<Vm>(['vm', 'show', vm.name])).pid!;
    expect(alive(pid)).toBe(true);
    const killed = await bangerJson<{ ok: boolean; result: { vm: Vm } }[]>(['vm', 'kill', vm.name]);
    expect(killed[0]!.result.vm.state).toBe('stopped');
    expect(alive(pid)).toBe(false);
    const again = await banger(['vm', 'kill', vm.name]);
    expect(again.code).toBe(5); // not_running
  });

  it('vm_set: vm set changes a stopped VM’s CPUs and memory, visible in the guest after start', async () => {
    const vm = await managedVm();
    if ((await bangerJson<Vm>(['vm', 'show', vm.name])).state === 'running') {
      // A running VM cannot be resized.
      const busy = await banger(['vm', 'set', vm.name, '--vcpu', '1']);
      expect(busy.code).toBe(6); // conflict
      expect((await banger(['vm', 'stop', vm.name])).code).toBe(0);
    }
    const set = await bangerJson<Vm | { vm: Vm }>(['vm', 'set', vm.name, '--vcpu', '1', '--memory', '640']);
    const setVm = 'vm' in set ? set.vm : set;
    expect(setVm.vcpus).toBe(1);
    expect(setVm.memory_mib).toBe(640);
    expect((await banger(['vm', 'start', vm.name])).code).toBe(0);
    const r = await banger(['vm', 'ssh', vm.name, '--', 'sh', '-c', 'nproc; grep MemTotal /proc/meminfo']);
    const [nproc, mem] = r.stdout.trim().split('\n');
    expect(nproc).toBe('1');
    const memKiB = Number(/(\d+) kB/.exec(mem ?? '')?.[1]);
    expect(memKiB).toBeGreaterThan(400 * 1024);
    expect(memKiB).toBeLessThanOrEqual(640 * 1024);
  });

  it('image_import: image and kernel import, list, delete (files the user brings)', async () => {
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
