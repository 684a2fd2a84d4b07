// Layers (verified blobs on disk) → a root filesystem image: flatten in memory, write ext4, clean
// up. The one pipeline behind pull, OCI-layout import and docker-archive import.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeExt4, type Ext4Result } from './ext4.ts';
import { flattenLayers, type FlattenLimits, type LayerInput } from './flatten.ts';

export interface ConvertOptions extends FlattenLimits {
  strictSymlinks?: boolean;
  imagePath: string;
  /** Scratch space of ours (spill files and staging tree; same filesystem as imagePath is best). */
  workDir: string;
  label: string;
  sizeBytes?: number;
  headroomBytes?: number;
  signal?: AbortSignal;
  onStage?: (stage: 'flatten' | 'mkfs', message: string) => void;
}

export interface ConvertResult extends Ext4Result {
  entries: number;
}

export async function layersToExt4(
  layers: readonly LayerInput[],
  opts: ConvertOptions,
): Promise<ConvertResult> {
  const work = await mkdtemp(join(opts.workDir, 'convert-'));
  let entries = 0;
  try {
    const flat = await flattenLayers(layers, {
      workDir: work,
      signal: opts.signal,
      maxBytes: opts.maxBytes,
      maxEntries: opts.maxEntries,
      strictSymlinks: opts.strictSymlinks,
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
      });
      return { ...r, entries };
    } finally {
      await flat.dispose();
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
