// Applying image layers, in order, to the in-memory model (tree.ts) with the OCI layer rules:
// `.wh.NAME` hides NAME of lower layers, `.wh..wh..opq` hides everything lower layers put in its
// directory, a directory over a directory keeps the children, anything else replaces what was
// there. File bodies are spilled to private temp files (O_EXCL|O_NOFOLLOW in a directory we made)
// or, for an uncompressed layer, referenced in place; nothing is written under an image path on
// the host. On failure the spill directory is removed: nothing half-made stays behind.
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { mkdtemp, open, unlink } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ByteBudget, LayerError, openLayer } from './layers.ts';
import { TaskPool } from './pool.ts';
import { removeTree, ScratchFullError } from './scratch.ts';
import { ByteReader, readTar, type TarHeader } from './tar.ts';
import { FsTree, PathError, splitPath, type Content, type Inode } from './tree.ts';

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
  const writes = new TaskPool();
  // Our own abort: a failing layer stops the others reading ahead.
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const read: ReadContext = {
    spillDir,
    writes,
    signal,
    budget: new ByteBudget(opts.maxBytes ?? DEFAULT_MAX_BYTES),
    maxEntries: opts.maxEntries ?? DEFAULT_MAX_ENTRIES,
    entries: 0,
    memoryLimit: opts.memoryLimit,
  };
  let failure: unknown;
  const fail = (e: unknown): void => {
    // The first real failure wins over the aborts it causes in the other layers.
    if (failure === undefined || (stop.signal.aborted && isAbort(failure) && !isAbort(e))) failure = e;
    stop.abort();
  };
  // Layers are read (decompressed, parsed, bodies spilled) up to `ahead` at a time, in order, so a
  // second core inflates the next layer while this one is applied; the model is changed strictly
  // in layer order (whiteouts and links depend on it).
  const ahead = Math.max(1, Math.min(availableParallelism(), 4));
  const reads: Promise<ReadLayer>[] = [];
  let next = 0;
  const startRead = (): void => {
    const index = next++;
    const layer = layers[index];
    if (!layer) return;
    const p = readLayer(index, layers.length, layer, read);
    p.catch(fail);
    reads.push(p);
  };
  try {
    for (let i = 0; i < ahead; i++) startRead();
    for (const [index, layer] of layers.entries()) {
      const got = await (reads[index] as Promise<ReadLayer>);
      startRead();
      try {
        for (const e of got.entries) applyEntry(tree, e.header, e.content, index + 1);
      } catch (e) {
        if (e instanceof PathError) throw new LayerError(`${got.what}: ${e.message}`);
        throw e;
      }
      opts.onLayer?.(index, layer.digest, got.entries.length);
    }
    await writes.drain();
    // Contents a later entry replaced or whited out (after their writes finished).
    await Promise.all(pendingUnlinks.splice(0).map((p) => unlink(p).catch(() => undefined)));
  } catch (e) {
    fail(e);
    await Promise.allSettled(reads);
    await writes.drain().catch(() => undefined);
    await removeTree(spillDir);
    throw opts.signal?.aborted ? e : failure;
  }
  return { tree, spillDir, dispose: () => removeTree(spillDir) };
}

function isAbort(e: unknown): boolean {
  return e instanceof Error && (e.name === 'AbortError' || e.name === 'ABORT_ERR');
}

interface ReadContext {
  spillDir: string;
  writes: TaskPool;
  signal: AbortSignal;
  budget: ByteBudget;
  maxEntries: number;
  /** Entries of all layers so far. */
  entries: number;
  memoryLimit: number | undefined;
}

interface ReadEntry {
  header: TarHeader;
  content: Content | undefined;
}

interface ReadLayer {
  what: string;
  entries: ReadEntry[];
}

/** One layer's headers, its file bodies spilled (or located in an uncompressed blob), checked. */
async function readLayer(
  index: number,
  count: number,
  layer: LayerInput,
  ctx: ReadContext,
): Promise<ReadLayer> {
  const what = `layer ${index + 1}/${count} (${layer.digest.slice(0, 19)})`;
  const opened = await openLayer(layer.path, what, ctx.budget, ctx.signal);
  const reader = new ByteReader(opened.chunks);
  const blobPath = opened.compression === 'none' ? layer.path : undefined;
  const memory = ctx.memoryLimit !== undefined;
  const entries: ReadEntry[] = [];
  try {
    for await (const entry of readTar(reader)) {
      if (++ctx.entries > ctx.maxEntries)
        throw new LayerError(`${what}: more than ${ctx.maxEntries} entries in the image`);
      if (memory && ctx.budget.used > (ctx.memoryLimit ?? 0))
        throw new ScratchFullError(ctx.memoryLimit ?? 0);
      const h = entry.header;
      let content: Content | undefined;
      if (h.type === 'file' && h.size > 0) {
        if (blobPath !== undefined) {
          content = { kind: 'blob', path: blobPath, offset: h.dataOffset };
        } else {
          const path = join(ctx.spillDir, `${index + 1}-${entries.length}`);
          if (memory) await spillSync(path, entry.body);
          else await spill(path, entry.body, h.size, ctx.writes);
          content = { kind: 'spill', path };
        }
      }
      entries.push({ header: h, content });
    }
    await reader.drain();
  } catch (e) {
    if (e instanceof Error && e.name === 'TarError') throw new LayerError(`${what}: ${e.message}`);
    throw e;
  }
  if (layer.diffId !== undefined && opened.diffId() !== layer.diffId) {
    throw new LayerError(
      `${what}: uncompressed content is ${opened.diffId()}, but the image config says ${layer.diffId}`,
    );
  }
  return { what, entries };
}

function applyEntry(tree: FsTree, h: TarHeader, content: Content | undefined, layer: number): void {
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
    const dir = tree.resolveDir(parts, { create: false, layer: layer, name: JSON.stringify(h.path) });
    if (!dir || dir.type !== 'dir') return;
    if (base === OPAQUE) {
      tree.makeOpaque(dir, layer);
      return;
    }
    const hidden = base.slice(WHITEOUT.length);
    const node = dir.children?.get(hidden);
    // Whiteouts apply to lower layers only (OCI image spec, "Whiteouts").
    if (node && node.layer < layer) tree.unbind(dir, hidden);
    return;
  }
  const dir = tree.resolveDir(parts, { create: true, layer: layer, name: JSON.stringify(h.path) });
  if (!dir) throw new PathError(`${JSON.stringify(h.path)}: parent directory cannot be created`);
  const existing = dir.children?.get(base);

  if (h.type === 'hardlink') {
    const tparts = splitPath(h.linkname);
    const tbase = tparts.pop();
    const tdir =
      tbase === undefined
        ? undefined
        : tree.resolveDir(tparts, { create: false, layer: layer, name: JSON.stringify(h.linkname) });
    const target = tbase === undefined ? undefined : tdir?.children?.get(tbase);
    if (!target)
      throw new PathError(`${JSON.stringify(h.path)}: hard link to missing ${JSON.stringify(h.linkname)}`);
    if (target.inode.type === 'dir')
      throw new PathError(`${JSON.stringify(h.path)}: hard link to a directory`);
    if (existing?.inode === target.inode) return;
    tree.bind(dir, base, { inode: target.inode, layer: layer });
    return;
  }
  if (h.type === 'dir' && existing?.inode.type === 'dir') {
    setMeta(existing.inode, h);
    existing.layer = layer;
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
    if (content) inode.content = content;
  }
  tree.bind(dir, base, { inode, layer: layer });
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
