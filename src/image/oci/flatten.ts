// Applying image layers, in order, to the in-memory model (tree.ts) with the OCI layer rules:
// `.wh.NAME` hides NAME of lower layers, `.wh..wh..opq` hides everything lower layers put in its
// directory, a directory over a directory keeps the children, anything else replaces what was
// there. File bodies are spilled to private temp files (O_EXCL|O_NOFOLLOW in a directory we made)
// or, for an uncompressed layer, referenced in place; nothing is written under an image path on
// the host. On failure the spill directory is removed: nothing half-made stays behind.
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { mkdtemp, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ByteBudget, LayerError, openLayer } from './layers.ts';
import { TaskPool } from './pool.ts';
import { removeTree, ScratchFullError } from './scratch.ts';
import { ByteReader, readTar, type TarHeader } from './tar.ts';
import { FsTree, PathError, splitPath, type Inode } from './tree.ts';

export interface LayerInput {
  /** sha256:<hex> of the blob (names the layer in errors). */
  digest: string;
  /** The verified blob on disk. */
  path: string;
  /** Expected sha256 of the decompressed tar (the config's rootfs.diff_ids), checked when given. */
  diffId?: string;
}

export interface FlattenLimits {
  /** Decompressed bytes of all layers together (default 64 GiB). */
  maxBytes?: number;
  /** Tar entries of all layers together (default 1 million; bounds the model's memory). */
  maxEntries?: number;
}

export interface FlattenOptions extends FlattenLimits {
  /** Refuse writes through a symlink that climbs above the root (default: resolve it inside). */
  strictSymlinks?: boolean;
  /** A directory of ours; the spill directory is made inside it. */
  workDir: string;
  signal?: AbortSignal;
  onLayer?: (index: number, digest: string, entries: number) => void;
  /**
   * workDir is on tmpfs: spill with synchronous writes (memory copies that never wait on a disk;
   * no thread-pool round trip per file) and stop with ScratchFullError past this many
   * decompressed bytes.
   */
  memoryLimit?: number;
}

export interface FlatImage {
  tree: FsTree;
  /** Where spilled contents are; remove with dispose(). */
  spillDir: string;
  dispose(): Promise<void>;
}

export const DEFAULT_MAX_BYTES = 64 * 1024 ** 3;
export const DEFAULT_MAX_ENTRIES = 1_000_000;

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
const SPILL_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export async function flattenLayers(layers: readonly LayerInput[], opts: FlattenOptions): Promise<FlatImage> {
  const spillDir = await mkdtemp(join(opts.workDir, 'spill-'));
  const tree = new FsTree();
  tree.strictSymlinks = opts.strictSymlinks === true;
  const pendingUnlinks: string[] = [];
  tree.onRelease = (inode) => {
    if (inode.content?.kind === 'spill') pendingUnlinks.push(inode.content.path);
  };
  const budget = new ByteBudget(opts.maxBytes ?? DEFAULT_MAX_BYTES);
  const maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
  let entries = 0;
  const writes = new TaskPool();
  const memory = opts.memoryLimit !== undefined;
  try {
    for (const [index, layer] of layers.entries()) {
      const what = `layer ${index + 1}/${layers.length} (${layer.digest.slice(0, 19)})`;
      const opened = await openLayer(layer.path, what, budget, opts.signal);
      const reader = new ByteReader(opened.chunks);
      let n = 0;
      try {
        for await (const entry of readTar(reader)) {
          if (++entries > maxEntries)
            throw new LayerError(`${what}: more than ${maxEntries} entries in the image`);
          n++;
          if (memory && budget.used > (opts.memoryLimit ?? 0))
            throw new ScratchFullError(opts.memoryLimit ?? 0);
          await applyEntry(tree, entry.header, entry.body, {
            layer: index + 1,
            what,
            spillDir,
            blobPath: opened.compression === 'none' ? layer.path : undefined,
            writes,
            memory,
          });
        }
        await reader.drain();
        await writes.drain();
        // Contents a later entry replaced or whited out (after their writes finished).
        await Promise.all(pendingUnlinks.splice(0).map((p) => unlink(p).catch(() => undefined)));
      } catch (e) {
        if (e instanceof PathError) throw new LayerError(`${what}: ${e.message}`);
        if (e instanceof Error && e.name === 'TarError') throw new LayerError(`${what}: ${e.message}`);
        throw e;
      }
      if (layer.diffId !== undefined && opened.diffId() !== layer.diffId) {
        throw new LayerError(
          `${what}: uncompressed content is ${opened.diffId()}, but the image config says ${layer.diffId}`,
        );
      }
      opts.onLayer?.(index, layer.digest, n);
    }
  } catch (e) {
    await writes.drain().catch(() => undefined);
    await removeTree(spillDir);
    throw e;
  }
  return { tree, spillDir, dispose: () => removeTree(spillDir) };
}

interface ApplyContext {
  layer: number;
  what: string;
  spillDir: string;
  /** The layer blob itself when it is an uncompressed tar (contents referenced in place). */
  blobPath: string | undefined;
  /** Small files are written a few at a time (see pool.ts). */
  writes: TaskPool;
  /** Spill synchronously (spillDir is on tmpfs). */
  memory: boolean;
}

async function applyEntry(
  tree: FsTree,
  h: TarHeader,
  body: AsyncGenerator<Buffer>,
  ctx: ApplyContext,
): Promise<void> {
  const parts = splitPath(h.path);
  const base = parts.pop();
  if (base === undefined) {
    // The root itself ("./"): only its metadata.
    if (h.type !== 'dir')
      throw new PathError(`${JSON.stringify(h.path)}: the image root must be a directory`);
    setMeta(tree.root, h);
    return;
  }
  if (base.startsWith(WHITEOUT)) {
    const dir = tree.resolveDir(parts, { create: false, layer: ctx.layer, name: JSON.stringify(h.path) });
    if (!dir || dir.type !== 'dir') return;
    if (base === OPAQUE) {
      tree.makeOpaque(dir, ctx.layer);
      return;
    }
    const hidden = base.slice(WHITEOUT.length);
    const node = dir.children?.get(hidden);
    // Whiteouts apply to lower layers only (OCI image spec, "Whiteouts").
    if (node && node.layer < ctx.layer) tree.unbind(dir, hidden);
    return;
  }
  const dir = tree.resolveDir(parts, { create: true, layer: ctx.layer, name: JSON.stringify(h.path) });
  if (!dir) throw new PathError(`${JSON.stringify(h.path)}: parent directory cannot be created`);
  const existing = dir.children?.get(base);

  if (h.type === 'hardlink') {
    const tparts = splitPath(h.linkname);
    const tbase = tparts.pop();
    const tdir =
      tbase === undefined
        ? undefined
        : tree.resolveDir(tparts, { create: false, layer: ctx.layer, name: JSON.stringify(h.linkname) });
    const target = tbase === undefined ? undefined : tdir?.children?.get(tbase);
    if (!target)
      throw new PathError(`${JSON.stringify(h.path)}: hard link to missing ${JSON.stringify(h.linkname)}`);
    if (target.inode.type === 'dir')
      throw new PathError(`${JSON.stringify(h.path)}: hard link to a directory`);
    if (existing?.inode === target.inode) return;
    tree.bind(dir, base, { inode: target.inode, layer: ctx.layer });
    return;
  }
  if (h.type === 'dir' && existing?.inode.type === 'dir') {
    setMeta(existing.inode, h);
    existing.layer = ctx.layer;
    return;
  }
  const inode = tree.newInode({ type: h.type, mode: h.mode, uid: h.uid, gid: h.gid, mtime: h.mtime });
  setMeta(inode, h);
  if (h.type === 'symlink') inode.target = h.linkname;
  if (h.type === 'char' || h.type === 'block') {
    inode.devmajor = h.devmajor;
    inode.devminor = h.devminor;
  }
  if (h.type === 'file') {
    inode.size = h.size;
    if (h.size > 0) {
      if (ctx.blobPath !== undefined) {
        inode.content = { kind: 'blob', path: ctx.blobPath, offset: h.dataOffset };
      } else {
        const path = join(ctx.spillDir, String(inode.id));
        if (ctx.memory) await spillSync(path, body);
        else await spill(path, body, h.size, ctx.writes);
        inode.content = { kind: 'spill', path };
      }
    }
  }
  tree.bind(dir, base, { inode, layer: ctx.layer });
}

function setMeta(inode: Inode, h: TarHeader): void {
  inode.mode = h.mode & 0o7777;
  inode.uid = h.uid;
  inode.gid = h.gid;
  inode.mtime = h.mtime;
  inode.xattrs = new Map(h.xattrs);
}

/** Files up to this size are read into memory and written in the background. */
const SMALL_FILE = 4 * 1024 * 1024;

async function spill(
  path: string,
  body: AsyncGenerator<Buffer>,
  size: number,
  writes: TaskPool,
): Promise<void> {
  if (size <= SMALL_FILE) {
    const parts: Buffer[] = [];
    // Copies: the chunks are views into the decompressor's buffers.
    for await (const chunk of body) parts.push(Buffer.from(chunk));
    const data = parts.length === 1 ? (parts[0] ?? Buffer.alloc(0)) : Buffer.concat(parts);
    await writes.submit(async () => {
      const fh = await open(path, SPILL_FLAGS, 0o600);
      try {
        await fh.writeFile(data);
      } finally {
        await fh.close();
      }
    }, data.length);
    return;
  }
  const fh = await open(path, SPILL_FLAGS, 0o600);
  try {
    for await (const chunk of body) await fh.write(chunk);
  } finally {
    await fh.close();
  }
}

/**
 * Spill onto tmpfs: each chunk written as it comes (a memory copy, it cannot block on a disk), no
 * copy of the chunks to hold them and no thread-pool round trip per file.
 */
async function spillSync(path: string, body: AsyncGenerator<Buffer>): Promise<void> {
  const fd = openSync(path, SPILL_FLAGS, 0o600);
  try {
    for await (const chunk of body) {
      for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off);
    }
  } finally {
    closeSync(fd);
  }
}
