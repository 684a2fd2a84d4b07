// A flattened image → a sparse ext4 image, without root. Two steps:
// 1. A private staging tree (mode 0700, made by us): every directory a real directory made from
//    the model, files moved or copied in with O_EXCL|O_NOFOLLOW, hard links as real hard links
//    (mkfs keeps them), symlinks with fs.symlink. Staging files stay 0600/0700 and owned by us,
//    so an unprivileged mkfs can read them all.
// 2. `mkfs.ext4 -d staging` (e2fsprogs ≥ 1.43), then one `debugfs -w -f` batch that sets every
//    inode's uid, gid, mode (setuid/setgid/sticky included), mtime and xattrs
//    (security.capability …) from the model and creates device nodes and fifos (mknod), none of
//    which an unprivileged process could put in the staging tree.
// The ownership pass runs as root too, so the result does not depend on who runs it.
import {
  chmodSync,
  closeSync,
  constants,
  createReadStream,
  linkSync,
  lutimesSync,
  mkdirSync,
  openSync,
  renameSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { lstat, mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../exec.ts';
import { TaskPool } from './pool.ts';
import { removeTree } from './scratch.ts';
import type { FsTree, Inode } from './tree.ts';

export interface Ext4Options {
  imagePath: string;
  /** A directory of ours for the staging tree and the debugfs batch. */
  workDir: string;
  label: string;
  /** Exact image size; default: content + metadata + headroom. */
  sizeBytes?: number;
  /** Extra free space when sizing automatically (default 256 MiB; the guest grows the fs later). */
  headroomBytes?: number;
  signal?: AbortSignal;
  /** Leave the scratch made in workDir (the staging tree) for the caller to remove with workDir. */
  leaveScratch?: boolean;
}

export interface Ext4Result {
  size: number;
  allocated: number;
  inodes: number;
}

const FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const TYPE_BITS: Record<Inode['type'], number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
};
const BLOCK = 4096;
const MIB = 1024 * 1024;

/** A debugfs argument: double quotes, a quote inside doubled (lib/ss parsing). */
export function debugfsQuote(s: string): string {
  if (/[\n\r]/.test(s)) throw new Error(`${JSON.stringify(s)}: file names with newlines are not supported`);
  return `"${s.replaceAll('"', '""')}"`;
}

/** Bytes of data blocks the tree needs, its inode count, for automatic sizing. */
export function estimateSize(tree: FsTree, headroom: number): { bytes: number; inodes: number } {
  const seen = new Set<number>();
  let blocks = 0;
  let inodes = 0;
  for (const { node } of tree.walk()) {
    const ino = node.inode;
    if (seen.has(ino.id)) continue;
    seen.add(ino.id);
    inodes++;
    if (ino.type === 'file') blocks += Math.ceil(ino.size / BLOCK) + (ino.size > 12 * BLOCK * 1024 ? 4 : 0);
    else if (ino.type === 'dir') blocks += Math.max(1, Math.ceil(((ino.children?.size ?? 0) * 40) / BLOCK));
    else if (ino.type === 'symlink' && Buffer.byteLength(ino.target ?? '') >= 60) blocks += 1;
    if (ino.xattrs.size > 0) blocks += 1;
  }
  const inodeCount = Math.ceil(inodes * 1.25) + 1024;
  // Data × 1.1 (extent trees, bitmaps, group descriptors), the inode tables, a journal, headroom.
  const raw = blocks * BLOCK * 1.1 + inodeCount * 256 + 64 * MIB + headroom;
  return { bytes: Math.ceil(raw / MIB) * MIB, inodes: inodeCount };
}

export async function writeExt4(tree: FsTree, opts: Ext4Options): Promise<Ext4Result> {
  const work = await mkdtemp(join(opts.workDir, 'ext4-'));
  const staging = join(work, 'root');
  await rm(opts.imagePath, { force: true });
  try {
    await mkdir(staging, { mode: 0o700 });
    // Unprivileged, mkfs runs in a user namespace mapping us to root, so it records the staged
    // files as root's (what nearly every image wants) and the debugfs pass needs no command for
    // their owners: a Debian base plus 20 000 small files, as uid 65534: 52 000 commands → 70.
    const mapRoot = process.geteuid?.() !== 0 && (await canMapRoot(staging));
    const cmds = await stageTree(tree, staging, work, opts.signal, mapRoot);
    const est = estimateSize(tree, opts.headroomBytes ?? 256 * MIB);
    let size = opts.sizeBytes ?? est.bytes;
    for (let attempt = 0; ; attempt++) {
      try {
        await run(
          [
            ...(mapRoot ? ['unshare', '--user', '--map-root-user'] : []),
            'mkfs.ext4',
            '-q',
            '-F',
            '-L',
            opts.label,
            '-N',
            String(est.inodes),
            '-I',
            '256',
            '-m',
            '0',
            '-E',
            'root_owner=0:0',
            '-d',
            staging,
            opts.imagePath,
            `${Math.ceil(size / 1024)}k`,
          ],
          { signal: opts.signal },
        );
        break;
      } catch (e) {
        // An automatic size that was too small (many tiny files, large directories): grow once or twice.
        const full = /No space left|Could not allocate|too many inodes|alloc/i.test((e as Error).message);
        if (opts.sizeBytes !== undefined || !full || attempt >= 2) throw e;
        size = Math.ceil((size * 1.5) / MIB) * MIB;
        await rm(opts.imagePath, { force: true });
      }
    }
    const batch = join(work, 'debugfs.cmds');
    await writeFile(batch, cmds.join('\n') + '\n');
    // The staging tree is not needed any more: remove it while debugfs runs.
    const removing = opts.leaveScratch ? Promise.resolve() : removeTree(staging);
    try {
      await runDebugfs(batch, opts.imagePath, opts.signal);
    } finally {
      await removing;
    }
    const st = await stat(opts.imagePath);
    return { size: st.size, allocated: st.blocks * 512, inodes: est.inodes };
  } catch (e) {
    await rm(opts.imagePath, { force: true });
    throw e;
  } finally {
    if (!opts.leaveScratch) await removeTree(work);
  }
}

/** debugfs reports failures of -f commands on stderr but exits 0: any stderr line but its banner fails. */
async function runDebugfs(batch: string, image: string, signal?: AbortSignal): Promise<void> {
  const r = await run(['debugfs', '-w', '-f', batch, image], { signal, stdoutFile: '/dev/null' });
  const errors = r.stderr.split('\n').filter((l) => l.trim() !== '' && !/^debugfs \d/.test(l));
  if (errors.length > 0) {
    throw new Error(`debugfs ownership pass failed on ${image}:\n${errors.slice(0, 10).join('\n')}`);
  }
}

/** Build the staging tree; returns the debugfs commands for the ownership/mode/xattr pass. */
async function stageTree(
  tree: FsTree,
  staging: string,
  work: string,
  signal: AbortSignal | undefined,
  mapRoot: boolean,
): Promise<string[]> {
  const xattrDir = join(work, 'xattrs');
  await mkdir(xattrDir, { mode: 0o700 });
  // Directories are made in walk order (parents first) before anything goes into them; further
  // names of hard-linked files at the end, once their first name exists. Metadata operations are
  // synchronous (a few microseconds each, where a promise and a thread-pool round trip each cost
  // more than the call), in slices that give the event loop a turn; only copies out of an
  // uncompressed layer blob go through the pool.
  const pool = new TaskPool();
  try {
    return await stageInto(tree, staging, xattrDir, pool, signal, mapRoot);
  } catch (e) {
    await pool.drain().catch(() => undefined);
    throw e;
  }
}

/** Who owns the staged files (us) and who mkfs records as their owner, for skipping no-op commands. */
interface StagingOwner {
  uid: number;
  gid: number;
  root: boolean;
  /** uid and gid mkfs records: ours, or 0:0 when it runs in a user namespace mapping us to root. */
  recorded: { uid: number; gid: number };
}

let mapRootWorks: Promise<boolean> | undefined;

/**
 * Whether `unshare --user --map-root-user` works here and shows our files as 0:0 (asked once;
 * BANGER_OCI_NO_USERNS=1 says no, so the tests cover the path without it).
 */
function canMapRoot(probe: string): Promise<boolean> {
  if (process.env.BANGER_OCI_NO_USERNS === '1') return Promise.resolve(false);
  mapRootWorks ??= run(['unshare', '--user', '--map-root-user', 'stat', '-c', '%u:%g', probe]).then(
    (r) => r.stdout.trim() === '0:0',
    () => false,
  );
  return mapRootWorks;
}

/**
 * Whether the staging copy can carry this mode itself (mkfs -d copies mode, owner and mtime from
 * it): always as root; otherwise only when we can still read it (files r--, directories rwx for
 * the owner), or mkfs could not copy it.
 */
function stageableMode(ino: Inode, owner: StagingOwner): boolean {
  if (ino.type === 'symlink') return true;
  if (owner.root) return true;
  // The kernel silently drops setgid on chmod by a non-member of the file's group.
  if (ino.mode & 0o2000 && owner.gid !== process.getegid?.()) return false;
  // Directories keep owner rwx too: the staging tree is removed afterwards.
  return ino.type === 'dir' ? (ino.mode & 0o700) === 0o700 : (ino.mode & 0o400) === 0o400;
}

async function stageInto(
  tree: FsTree,
  staging: string,
  xattrDir: string,
  pool: TaskPool,
  signal: AbortSignal | undefined,
  mapRoot: boolean,
): Promise<string[]> {
  const cmds: string[] = [];
  const firstPath = new Map<number, string>();
  let xattrN = 0;
  const links: [string, string][] = [];
  /** Modes and times applied to the staging copy once everything exists (directories last). */
  const fixups: { host: string; ino: Inode; chmod: boolean }[] = [];
  const slice = new Slicer();
  const st = await lstat(staging);
  const owner: StagingOwner = {
    uid: st.uid,
    gid: st.gid,
    root: process.geteuid?.() === 0,
    recorded: mapRoot ? { uid: 0, gid: 0 } : { uid: st.uid, gid: st.gid },
  };
  for (const { path, node } of tree.walk()) {
    await slice.tick(signal);
    const ino = node.inode;
    const host = path === '/' ? staging : join(staging, path);
    const q = debugfsQuote(path);
    const earlier = firstPath.get(ino.id);
    if (earlier !== undefined) {
      // A further name of a hard-linked file: a real hard link, so mkfs links the same inode.
      if (ino.type === 'file') {
        links.push([join(staging, earlier), host]);
        continue;
      }
      // Other hard-linked types (rare: symlinks, devices) become separate inodes.
    } else {
      firstPath.set(ino.id, path);
    }
    // What mkfs will have recorded for this inode, so only the differences become commands.
    let staged = { uid: owner.recorded.uid, gid: owner.recorded.gid, mode: -1, mtime: -1 };
    const mtime = Math.max(0, Math.min(ino.mtime, 0xffffffff));
    switch (ino.type) {
      case 'dir':
      case 'file':
      case 'symlink': {
        if (path !== '/' && ino.type === 'dir') mkdirSync(host, { mode: 0o700 });
        if (ino.type === 'file') await stageFile(ino, host, pool);
        if (ino.type === 'symlink') symlinkSync(ino.target ?? '', host);
        const chmod = stageableMode(ino, owner);
        fixups.push({ host, ino, chmod });
        staged = { ...staged, mode: chmod ? ino.mode : -1, mtime };
        // mkfs -E root_owner=0:0 gives the root directory 0:0; its mode and time are set here.
        if (path === '/') staged = { uid: 0, gid: 0, mode: -1, mtime: -1 };
        break;
      }
      case 'char':
      case 'block':
      case 'fifo': {
        const slash = path.lastIndexOf('/');
        const parent = path.slice(0, slash) || '/';
        const spec =
          ino.type === 'fifo' ? 'p' : `${ino.type === 'char' ? 'c' : 'b'} ${ino.devmajor} ${ino.devminor}`;
        // debugfs's mknod links the name into the current directory (0 perms, uid 0, now).
        cmds.push(
          `cd ${debugfsQuote(parent)}`,
          `mknod ${debugfsQuote(path.slice(slash + 1))} ${spec}`,
          'cd /',
        );
        staged = { uid: -1, gid: -1, mode: -1, mtime: -1 };
        break;
      }
    }
    if (staged.uid !== ino.uid) cmds.push(`set_inode_field ${q} uid ${ino.uid}`);
    if (staged.gid !== ino.gid) cmds.push(`set_inode_field ${q} gid ${ino.gid}`);
    // Linux symlinks are 0777 whatever the header says (tar -x gives the same).
    if (ino.type !== 'symlink' && staged.mode !== ino.mode) {
      cmds.push(`set_inode_field ${q} mode 0${(TYPE_BITS[ino.type] | ino.mode).toString(8)}`);
    }
    if (staged.mtime !== mtime) cmds.push(`set_inode_field ${q} mtime @${mtime}`);
    for (const [name, value] of ino.xattrs) {
      const f = join(xattrDir, String(xattrN++));
      writeFileSync(f, value, { flag: 'wx', mode: 0o600 });
      cmds.push(`ea_set -f ${debugfsQuote(f)} ${q} ${debugfsQuote(name)}`);
    }
  }
  for (const [from, to] of links) {
    await slice.tick(signal);
    linkSync(from, to);
  }
  // Copies out of blobs finish before their times are set.
  await pool.drain();
  // Modes and times last: a directory's mtime changes while it is filled, and a read-only mode
  // would stop the filling. Files first, then directories deepest first.
  const dirs = fixups.filter((f) => f.ino.type === 'dir').reverse();
  for (const f of [...fixups.filter((f) => f.ino.type !== 'dir'), ...dirs]) {
    await slice.tick(signal);
    applyStaged(f.host, f.ino, f.chmod);
  }
  return cmds;
}

/** Synchronous work in slices of a few milliseconds, then a turn for the event loop. */
class Slicer {
  private started = performance.now();
  async tick(signal: AbortSignal | undefined): Promise<void> {
    if (performance.now() - this.started < 10) return;
    await new Promise<void>((r) => setImmediate(r));
    signal?.throwIfAborted();
    this.started = performance.now();
  }
}

function applyStaged(host: string, ino: Inode, chmodIt: boolean): void {
  if (chmodIt && ino.type !== 'symlink') chmodSync(host, ino.mode);
  const t = Math.max(0, Math.min(ino.mtime, 0xffffffff));
  lutimesSync(host, t, t);
}

async function stageFile(ino: Inode, host: string, pool: TaskPool): Promise<void> {
  const c = ino.content;
  if (c?.kind === 'spill') {
    // The spill file is ours (0600, made with O_EXCL); move it, the staging name is new.
    renameSync(c.path, host);
    return;
  }
  if (c?.kind !== 'blob' || ino.size === 0) {
    closeSync(openSync(host, FILE_FLAGS, 0o600));
    return;
  }
  await pool.submit(() => copyFromBlob(ino, host, c));
}

async function copyFromBlob(ino: Inode, host: string, c: { path: string; offset: number }): Promise<void> {
  const fh = await open(host, FILE_FLAGS, 0o600);
  try {
    const src = createReadStream(c.path, { start: c.offset, end: c.offset + ino.size - 1 });
    for await (const chunk of src as AsyncIterable<Buffer>) await fh.write(chunk);
    const st = await fh.stat();
    if (st.size !== ino.size) throw new Error(`${host}: short copy from ${c.path}`);
  } finally {
    await fh.close();
  }
}
