// Guest RAM in a file on tmpfs (src/vm/guest-ram.ts): the per-user directory and when a VM does
// without it, the cold-boot argv it gives, finding a VMM's (unlinked) RAM file through /proc,
// the sparse copy a fork makes of it, and the start-up sweep of RAM files nobody has open.
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildQemuArgv } from '../../src/engine/qemu-argv.ts';
import {
  copyRamFile,
  fileRam,
  fillRamFile,
  findRamFile,
  guestRamDir,
  isRamFileLink,
  prepareGuestRamDir,
  sweepGuestRamDir,
  usesGuestRamDir,
} from '../../src/vm/guest-ram.ts';
import { launchSpec } from '../../src/vm/machine.ts';
import type { KernelRow, VmRow } from '../../src/store/index.ts';
import { shortTempDir } from '../helpers/tmp.ts';

const tmp = shortTempDir('bgr');
afterAll(() => tmp.cleanup());
const uid = process.getuid!();

describe('the user RAM directory', () => {
  it('is made 0700 and returned when there is room; a VM too big for the tmpfs gets none', async () => {
    const root = join(tmp.dir, 'shm1');
    mkdirSync(root);
    const dir = await prepareGuestRamDir(root, uid, 64);
    expect(dir).toBe(guestRamDir(root, uid));
    expect(statSync(dir!).mode & 0o777).toBe(0o700);
    // More than the filesystem has free: anonymous RAM instead.
    expect(await prepareGuestRamDir(root, uid, 2 ** 30)).toBeUndefined();
  });
  it('refuses a missing root and a symlink where the directory should be', async () => {
    expect(await prepareGuestRamDir(join(tmp.dir, 'nope'), uid, 64)).toBeUndefined();
    const root = join(tmp.dir, 'shm2');
    mkdirSync(join(root, 'elsewhere'), { recursive: true });
    symlinkSync(join(root, 'elsewhere'), guestRamDir(root, uid));
    expect(await prepareGuestRamDir(root, uid, 64)).toBeUndefined();
  });
  it('tells a VM booted with it from a template clone or fork child', () => {
    const root = '/dev/shm';
    expect(usesGuestRamDir({ memory: fileRam(guestRamDir(root, 1000)) }, root)).toBe(true);
    expect(usesGuestRamDir({ memory: { backendFile: '/dev/shm/banger-1000', share: false } }, root)).toBe(
      false,
    );
    expect(usesGuestRamDir({ memory: { backendFile: '/s/forks/x/ram', share: true } }, root)).toBe(false);
    expect(usesGuestRamDir({}, root)).toBe(false);
  });
});

describe('a cold boot with its RAM in a file', () => {
  const vm = {
    id: 'abc123abc123',
    name: 'v',
    networkMode: 'user',
    vcpus: 1,
    memoryMib: 768,
    mac: '52:54:00:12:34:56',
    egress: { mode: 'all', rules: [] },
    secrets: [],
  } as unknown as VmRow;
  const kernel = { kernelPath: '/k/vmlinuz', initrdPath: null } as unknown as KernelRow;
  it('maps a file QEMU makes in the directory, shared, with the balloon kept (free pages go back)', () => {
    const spec = launchSpec(vm, kernel, '/s', 'tcg', 2222, undefined, '/dev/shm/banger-1000');
    const argv = buildQemuArgv({ ...spec, tscKhz: 1000000 }).join(' ');
    expect(argv).toContain('-M microvm,memory-backend=mem ');
    expect(argv).toContain(
      '-object memory-backend-file,id=mem,size=768M,mem-path=/dev/shm/banger-1000,share=on',
    );
    expect(argv).toContain('virtio-balloon-device,free-page-reporting=on');
    // Without the directory: as before (anonymous RAM, the machine's own RAM block).
    const anon = buildQemuArgv({ ...launchSpec(vm, kernel, '/s', 'tcg', 2222), tscKhz: 1000000 }).join(' ');
    expect(anon).not.toContain('memory-backend');
    expect(anon).toContain('virtio-balloon-device,free-page-reporting=on');
  });
});

describe("a VMM's RAM file", () => {
  it('is found through /proc/<pid>/fd by the name QEMU gives it (unlinked), not any other open file', async () => {
    const dir = '/dev/shm/banger-1000';
    expect(isRamFileLink(`${dir}/qemu_back_mem.mem.Ab12Cd (deleted)`, dir, 'mem')).toBe(true);
    expect(isRamFileLink(`${dir}/qemu_back_mem.mem.Ab12Cd`, dir, 'mem')).toBe(false);
    expect(isRamFileLink(`${dir}/qemu_back_mem.microvm.ram.Ab12Cd (deleted)`, dir, 'mem')).toBe(false);
    expect(isRamFileLink(`/dev/shm/banger-1001/qemu_back_mem.mem.Ab12Cd (deleted)`, dir, 'mem')).toBe(false);
    const proc = join(tmp.dir, 'proc');
    mkdirSync(join(proc, '77', 'fd'), { recursive: true });
    symlinkSync('/s/vms/x/root.qcow2', join(proc, '77', 'fd', '3'));
    symlinkSync(`${dir}/qemu_back_mem.mem.Zz9 (deleted)`, join(proc, '77', 'fd', '11'));
    expect(await findRamFile(77, dir, 'mem', proc)).toBe(join(proc, '77', 'fd', '11'));
    expect(await findRamFile(78, dir, 'mem', proc)).toBeUndefined();
  });

  it('is copied with its holes: same bytes, only the data allocated', async () => {
    const src = join(tmp.dir, 'ram-src');
    const size = 64 * 1024 * 1024;
    const fd = openSync(src, 'w');
    const data = Buffer.alloc(1024 * 1024, 7);
    writeSync(fd, data, 0, data.length, 8 * 1024 * 1024);
    writeSync(fd, data, 0, data.length, 40 * 1024 * 1024);
    closeSync(fd);
    writeFileSync(src, Buffer.alloc(0), { flag: 'a' });
    truncateSync(src, size);
    const dst = join(tmp.dir, 'ram-dst');
    writeFileSync(dst, 'stale');
    const bytes = await copyRamFile(src, dst);
    expect(statSync(dst).size).toBe(size);
    expect(readFileSync(dst).equals(readFileSync(src))).toBe(true);
    // Two 1 MiB runs of data, not 64 MiB (the filesystem may round to its blocks), where the
    // temporary filesystem keeps holes at all (the source itself is the probe).
    expect(bytes).toBeGreaterThanOrEqual(2 * 1024 * 1024);
    if (keepsHoles(src)) expect(bytes).toBeLessThan(8 * 1024 * 1024);
    else expect(bytes).toBeLessThanOrEqual(size + 1024 * 1024);
  });

  it("is filled into a waiting VMM's open RAM file in place (the inode QEMU maps), holes kept", async () => {
    const src = join(tmp.dir, 'fill-src');
    const size = 16 * 1024 * 1024;
    writeFileSync(src, Buffer.alloc(0));
    truncateSync(src, size);
    const fd0 = openSync(src, 'r+');
    writeSync(fd0, Buffer.alloc(4096, 9), 0, 4096, 3 * 1024 * 1024);
    closeSync(fd0);
    // The "VMM's" file: already at the RAM's size, unlinked, reached through /proc/<pid>/fd.
    const dstName = join(tmp.dir, 'fill-dst');
    writeFileSync(dstName, Buffer.alloc(0));
    truncateSync(dstName, size);
    const fd = openSync(dstName, 'r+');
    try {
      const ino = fstatSync(fd).ino;
      unlinkSync(dstName);
      const bytes = await fillRamFile(src, `/proc/${process.pid}/fd/${fd}`, size);
      expect(fstatSync(fd).ino).toBe(ino);
      expect(fstatSync(fd).size).toBe(size);
      const page = Buffer.alloc(4096);
      readSync(fd, page, 0, 4096, 3 * 1024 * 1024);
      expect(page.equals(Buffer.alloc(4096, 9))).toBe(true);
      expect(bytes).toBeGreaterThanOrEqual(4096);
      if (keepsHoles(src)) expect(bytes).toBeLessThan(1024 * 1024);
    } finally {
      closeSync(fd);
    }
  });

  it("is not filled when the VMM's file, the saved one and the recorded size disagree (nothing written)", async () => {
    const src = join(tmp.dir, 'fill-src-2');
    writeFileSync(src, Buffer.alloc(0));
    truncateSync(src, 8 * 1024 * 1024);
    const dst = join(tmp.dir, 'fill-dst-2');
    writeFileSync(dst, Buffer.alloc(4096, 7));
    truncateSync(dst, 4 * 1024 * 1024);
    await expect(fillRamFile(src, dst, 8 * 1024 * 1024)).rejects.toThrow(
      /RAM file is 4194304 bytes and the saved one 8388608, the save recorded 8388608: not filled/,
    );
    expect(statSync(dst).size).toBe(4 * 1024 * 1024);
    expect(readFileSync(dst).subarray(0, 4096).equals(Buffer.alloc(4096, 7))).toBe(true);
    // The saved file cut short after the save: refused as well.
    truncateSync(dst, 8 * 1024 * 1024);
    await expect(fillRamFile(src, dst, 16 * 1024 * 1024)).rejects.toThrow(/the save recorded 16777216/);
  });
});

/** Whether `path` (a file written with holes) has fewer blocks than its size: its filesystem keeps holes. */
function keepsHoles(path: string): boolean {
  const st = statSync(path);
  return st.blocks * 512 < st.size / 2;
}

describe('the start-up sweep of the RAM directory', () => {
  it("removes files no VMM of the user has open and keeps those one has (other processes' fds are not looked at)", async () => {
    const dir = join(tmp.dir, 'ramdir');
    mkdirSync(dir);
    writeFileSync(join(dir, 'qemu_back_mem.mem.left'), 'x');
    writeFileSync(join(dir, 'qemu_back_mem.mem.held'), 'y');
    writeFileSync(join(dir, 'qemu_back_mem.mem.shell'), 'z');
    // A /proc of two processes of this user: a VMM holding `held`, a shell holding `shell`.
    const proc = join(tmp.dir, 'sweep-proc');
    const fake = (pid: number, comm: string, file: string): void => {
      mkdirSync(join(proc, String(pid), 'fd'), { recursive: true });
      writeFileSync(join(proc, String(pid), 'comm'), `${comm}\n`);
      symlinkSync(join(dir, file), join(proc, String(pid), 'fd', '7'));
    };
    fake(41, 'qemu-system-x86', 'qemu_back_mem.mem.held');
    fake(42, 'bash', 'qemu_back_mem.mem.shell');
    expect((await sweepGuestRamDir(dir, uid, proc)).sort()).toEqual([
      'qemu_back_mem.mem.left',
      'qemu_back_mem.mem.shell',
    ]);
    expect(statSync(join(dir, 'qemu_back_mem.mem.held')).size).toBe(1);
    // Another user's VMM holds nothing of this user's directory.
    expect(await sweepGuestRamDir(dir, uid + 1, proc)).toEqual(['qemu_back_mem.mem.held']);
    expect(await sweepGuestRamDir(join(tmp.dir, 'none'), uid)).toEqual([]);
  });
});
