// Part 3: copy-on-write. Time to prepare a VM disk (createOverlay, what the create pipeline's
// prepare_disk runs) from a 200 MiB base full of data, from a 10 GiB sparse base, and from the
// real default image. A qcow2 overlay records only the base's path: the cost must not grow with
// the base's size.
import { randomBytes } from 'node:crypto';
import { mkdir, open, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { createOverlay } from '../src/vm/disk.ts';
import { ratio, summarize, type Summary } from './stats.ts';
import type { World } from './world.ts';

export interface CowResult {
  reps: number;
  overlay_virtual_bytes: number;
  bases: { name: string; bytes: number; allocated: string; ms: Summary }[];
  /** median(10 GiB sparse) / median(200 MiB). */
  ratio_10g_vs_200m: number;
}

const MiB = 1024 * 1024;

async function writeFilled(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    const block = randomBytes(MiB);
    for (let off = 0; off < bytes; off += MiB) await fh.write(block, 0, Math.min(MiB, bytes - off), off);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function runCow(w: World, opts: { reps: number; defaultRootfs: string }): Promise<CowResult> {
  const dir = join(w.dir, 'cow');
  await mkdir(dir, { recursive: true });
  const small = join(dir, 'base-200m.raw');
  const big = join(dir, 'base-10g.raw');
  await writeFilled(small, 200 * MiB);
  await writeFile0(big, 10 * 1024 * MiB);
  const virtual = 16 * 1024 * MiB;
  const bases = [
    { name: '200 MiB, allocated', path: small, bytes: 200 * MiB, allocated: 'all' },
    { name: '10 GiB, sparse', path: big, bytes: 10 * 1024 * MiB, allocated: 'none' },
    { name: 'default image (2 GiB ext4)', path: opts.defaultRootfs, bytes: 2048 * MiB, allocated: 'partly' },
  ];
  const times = bases.map(() => [] as number[]);
  try {
    for (let r = 0; r < opts.reps; r++) {
      for (const [i, b] of bases.entries()) {
        const overlay = join(dir, `overlay-${i}-${r}.qcow2`);
        const t0 = performance.now();
        await createOverlay(b.path, overlay, virtual, 'raw');
        times[i]!.push(performance.now() - t0);
        await rm(overlay, { force: true });
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const out = bases.map((b, i) => ({
    name: b.name,
    bytes: b.bytes,
    allocated: b.allocated,
    ms: summarize(times[i]!),
  }));
  return {
    reps: opts.reps,
    overlay_virtual_bytes: virtual,
    bases: out,
    ratio_10g_vs_200m: ratio(out[1]!.ms.median, out[0]!.ms.median),
  };
}

/** A sparse file of `bytes` (no blocks allocated). */
async function writeFile0(path: string, bytes: number): Promise<void> {
  await (await open(path, 'w')).close();
  await truncate(path, bytes);
}
