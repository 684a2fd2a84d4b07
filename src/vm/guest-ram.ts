// Guest RAM of cold-booted VMs as a file on tmpfs (docs/snapshots.md, Memory). A VM booted by
// banger maps its RAM from `memory-backend-file,share=on,mem-path=<dir>` where <dir> is a
// per-user directory on /dev/shm (0700). Given a directory, QEMU creates its file there
// (`qemu_back_mem.<backend id>.XXXXXX`) and unlinks it at once: the RAM belongs to the process
// alone and goes with it however it ends (no RAM file can leak through a crash of QEMU or of the
// daemon), and the daemon reaches it through /proc/<pid>/fd while it runs. What that buys: a
// fork saves only the device state (x-ignore-shared) and copies the RAM file as it is (holes
// stay holes) instead of migrating the whole RAM through a loader VMM (src/vm/fork.ts).
import { chmod, lstat, mkdir, readdir, readFile, readlink, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { GuestMemorySpec, VmLaunchSpec } from '../engine/driver.ts';
import { run } from './exec.ts';

/** GNU cp (by path, as every tool the daemon runs): it copies sparse files by SEEK_DATA/SEEK_HOLE. */
export const CP_BINARY = '/bin/cp';
const MiB = 1024 * 1024;

/** Where the per-user RAM directories go (tmpfs: RAM pages, no disk I/O). */
export const GUEST_RAM_ROOT = '/dev/shm';
/** Room left on the tmpfs beyond the guest's whole RAM before a VM's RAM goes there. */
export const GUEST_RAM_HEADROOM_MIB = 256;

/** The directory a user's VMs map their RAM from: one per uid (0700, its own). */
export function guestRamDir(root: string, uid: number): string {
  return join(root, `banger-${uid}`);
}

/** A cold-booted VM's RAM spec: a file QEMU makes (and unlinks) in `dir`, shared, with the balloon. */
export function fileRam(dir: string): GuestMemorySpec {
  // The free-page-reporting balloon stays: QEMU punches reported pages out of the file, which
  // returns them to the host as it does for anonymous RAM.
  return { backendFile: dir, share: true, balloon: true };
}

/** Whether `spec` maps its RAM from a user's RAM directory under `root` (not a template's or a fork's file). */
export function usesGuestRamDir(spec: Pick<VmLaunchSpec, 'memory'>, root: string): boolean {
  const m = spec.memory;
  return (
    m !== undefined &&
    m.share &&
    m.backendFile.startsWith(`${root}/banger-`) &&
    !m.backendFile.slice(root.length + 1).includes('/')
  );
}

/**
 * Make the user's RAM directory ready for a VM of `memoryMib` and return it, or undefined when
 * the VM is better off with anonymous RAM: no tmpfs at `root`, too little room on it, or a
 * directory there that is not this user's own (a symlink, another owner).
 */
export async function prepareGuestRamDir(
  root: string,
  uid: number,
  memoryMib: number,
): Promise<string | undefined> {
  const fs = await statfs(root).catch(() => undefined);
  if (!fs || fs.bavail * fs.bsize < (memoryMib + GUEST_RAM_HEADROOM_MIB) * MiB) return undefined;
  const dir = guestRamDir(root, uid);
  await mkdir(dir, { mode: 0o700 }).catch(() => undefined);
  const st = await lstat(dir).catch(() => undefined);
  if (!st?.isDirectory() || st.uid !== uid) return undefined;
  if ((st.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
  return dir;
}

/** The name QEMU gives the RAM file it makes in a directory mem-path: `<dir>/qemu_back_mem.<id>.XXXXXX`. */
export function isRamFileLink(link: string, dir: string, backendId: string): boolean {
  return link.startsWith(`${dir}/qemu_back_mem.${backendId}.`) && link.endsWith(' (deleted)');
}

/**
 * The RAM file of VMM `pid` that maps its RAM from directory `dir` (QEMU keeps the unlinked
 * file open): a /proc/<pid>/fd path that opens it, or undefined.
 */
export async function findRamFile(
  pid: number,
  dir: string,
  backendId: string,
  procRoot = '/proc',
): Promise<string | undefined> {
  const fdDir = join(procRoot, String(pid), 'fd');
  const fds = await readdir(fdDir).catch(() => [] as string[]);
  for (const fd of fds) {
    const link = await readlink(join(fdDir, fd)).catch(() => '');
    if (isRamFileLink(link, dir, backendId)) return join(fdDir, fd);
  }
  return undefined;
}

/**
 * Copy a RAM file to `dst`, holes as holes (GNU cp finds the data with SEEK_DATA/SEEK_HOLE: the
 * pages the guest never touched or gave back cost nothing). Returns the bytes of data copied.
 */
export async function copyRamFile(src: string, dst: string): Promise<number> {
  await rm(dst, { force: true });
  return sparseCopy(src, dst);
}

/** cp src over dst, holes as holes; the data bytes dst holds after. */
async function sparseCopy(src: string, dst: string): Promise<number> {
  await run(CP_BINARY, ['--sparse=auto', '--no-preserve=all', src, dst], { timeoutMs: 300_000 });
  return (await stat(dst)).blocks * 512;
}

/**
 * Fill the RAM file of a VMM waiting for its state (`-incoming defer`: QEMU has not touched its
 * RAM; `dst` is its /proc/<pid>/fd path, findRamFile) with a saved RAM file, holes as holes: the
 * resume of a pause that saved the RAM file (src/vm/pause.ts). cp truncates the file and writes
 * it back to its full size; nothing reads the guest's RAM meanwhile (no vCPU runs before `cont`,
 * and QEMU skips loading ROMs into RAM while a migration is incoming). The file stays QEMU's own,
 * unlinked one: nothing named is left to leak however the resume ends. Returns the data bytes.
 *
 * `bytes` is the RAM size the save recorded. The file QEMU made, the saved one and that size must
 * agree before anything is written: cp would resize QEMU's file to the saved one's size under its
 * mapping (a guest page past a shorter file faults the VMM), and the save is kept to retry.
 */
export async function fillRamFile(src: string, dst: string, bytes: number): Promise<number> {
  const [made, saved] = await Promise.all([stat(dst), stat(src)]);
  if (made.size !== bytes || saved.size !== bytes)
    throw new Error(
      `the new VMM's RAM file is ${made.size} bytes and the saved one ${saved.size}, the save recorded ${bytes}: not filled`,
    );
  return sparseCopy(src, dst);
}

/**
 * Start-up: remove files in the RAM directory that no VMM of `uid` has open. QEMU unlinks its
 * file right after making it, so a named file there is what a VMM killed between those two calls
 * left (or anything else put there): tmpfs memory nobody would give back. The directory is the
 * user's own (0700), so only that user's processes can hold its files, and only a VMM holds one
 * past a start: the fds of those alone are looked at.
 */
export async function sweepGuestRamDir(dir: string, uid: number, procRoot = '/proc'): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.length === 0) return [];
  const open = await openInodes(procRoot, uid);
  const removed: string[] = [];
  for (const n of names) {
    const p = join(dir, n);
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isFile() || open.has(`${st.dev}:${st.ino}`)) continue;
    await rm(p, { force: true });
    removed.push(n);
  }
  return removed;
}

/** dev:ino of every file a VMM (a `qemu-system-*` process) of `uid` has open. */
async function openInodes(procRoot: string, uid: number): Promise<Set<string>> {
  const out = new Set<string>();
  const pids = (await readdir(procRoot).catch(() => [] as string[])).filter((p) => /^\d+$/.test(p));
  for (const pid of pids) {
    const owner = await stat(join(procRoot, pid)).catch(() => undefined);
    if (owner?.uid !== uid) continue;
    // comm is the executable's name cut to 15 characters: `qemu-system-x86`.
    const comm = await readFile(join(procRoot, pid, 'comm'), 'utf8').catch(() => '');
    if (!comm.startsWith('qemu-system')) continue;
    const fdDir = join(procRoot, pid, 'fd');
    for (const fd of await readdir(fdDir).catch(() => [] as string[])) {
      const st = await stat(join(fdDir, fd)).catch(() => undefined);
      if (st?.isFile()) out.add(`${st.dev}:${st.ino}`);
    }
  }
  return out;
}
