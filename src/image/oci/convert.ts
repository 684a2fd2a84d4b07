// Layers (verified blobs on disk) → a root filesystem image: flatten in memory, write ext4, clean
// up. The one pipeline behind pull, OCI-layout import and docker-archive import. Scratch (spilled
// contents, the staging tree) goes to tmpfs when the image fits in memory (scratch.ts), else to
// workDir; a conversion that outgrows its memory share starts again on disk.
import { mkdtemp, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeExt4, type Ext4Result } from './ext4.ts';
import { flattenLayers, type FlattenLimits, type LayerInput } from './flatten.ts';
import { memoryScratch, removeLater, removeTree, ScratchFullError, type MemoryScratch } from './scratch.ts';

export interface ConvertOptions extends FlattenLimits {
  strictSymlinks?: boolean;
  imagePath: string;
  /** Scratch space of ours on disk (when not in memory; same filesystem as imagePath is best). */
  workDir: string;
  /** A tmpfs for scratch when the image fits (default /dev/shm); false: always workDir. */
  memoryDir?: string | false;
  /** At most this many bytes in memory scratch (tests; default: what scratch.ts allows). */
  memoryLimit?: number;
  /** Memory scratch only when at least this much is allowed (tests; default MIN_MEMORY_SCRATCH). */
  memoryMin?: number;
  label: string;
  sizeBytes?: number;
  headroomBytes?: number;
  signal?: AbortSignal;
  onStage?: (stage: 'flatten' | 'mkfs', message: string) => void;
}

export interface ConvertResult extends Ext4Result {
  entries: number;
  /** Where the scratch was: 'memory' (tmpfs) or 'disk' (workDir). */
  scratch: 'memory' | 'disk';
}

export async function layersToExt4(
  layers: readonly LayerInput[],
  opts: ConvertOptions,
): Promise<ConvertResult> {
  const found =
    opts.memoryDir === false ? undefined : await memoryScratch(opts.memoryDir ?? '/dev/shm', opts.memoryMin);
  const memory =
    found && opts.memoryLimit !== undefined
      ? { ...found, limit: Math.min(found.limit, opts.memoryLimit) }
      : found;
  // Compressed sizes are a lower bound of what the layers unpack to.
  let compressed = 0;
  for (const l of layers) compressed += (await stat(l.path)).size;
  if (memory && compressed < memory.limit) {
    try {
      return await convertIn(layers, opts, memory);
    } catch (e) {
      if (!(e instanceof ScratchFullError)) throw e;
      opts.onStage?.('flatten', `${e.message}: flattening again with scratch on disk`);
    }
  }
  return convertIn(layers, opts, undefined);
}

async function convertIn(
  layers: readonly LayerInput[],
  opts: ConvertOptions,
  memory: MemoryScratch | undefined,
): Promise<ConvertResult> {
  const work = await mkdtemp(memory ? join(memory.dir, memory.prefix) : join(opts.workDir, 'convert-'));
  let entries = 0;
  try {
    const flat = await flattenLayers(layers, {
      workDir: work,
      signal: opts.signal,
      maxBytes: opts.maxBytes,
      maxEntries: opts.maxEntries,
      strictSymlinks: opts.strictSymlinks,
      memoryLimit: memory?.limit,
      onLayer: (i, digest, n) => {
        entries += n;
        opts.onStage?.('flatten', `layer ${i + 1}/${layers.length} ${digest.slice(0, 19)}: ${n} entries`);
      },
    });
    try {
      opts.onStage?.('mkfs', `writing ${opts.imagePath}`);
      const r = await writeExt4(flat.tree, {
        imagePath: opts.imagePath,
        workDir: work,
        label: opts.label,
        sizeBytes: opts.sizeBytes,
        headroomBytes: opts.headroomBytes,
        signal: opts.signal,
        leaveScratch: memory !== undefined,
      });
      return { ...r, entries, scratch: memory ? 'memory' : 'disk' };
    } finally {
      if (!memory) await flat.dispose();
    }
  } finally {
    // Memory scratch is removed in the background (scratch.ts); scratch on disk may be inside the
    // caller's staging directory, so it is gone before we return.
    if (memory) removeLater(work);
    else await removeTree(work);
  }
}
