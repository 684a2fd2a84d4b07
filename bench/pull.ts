// Part: pull. banger's OCI pull + convert (the library path the daemon's image.pull runs:
// pullImage into a fresh blob cache, then layersToExt4 with the daemon's label and headroom;
// WITHOUT the bootable step, which boots a prepare VM) against a floor measured in the same run:
// `skopeo copy docker://… oci:DIR` plus `tar -xzf` of every layer, in order, into one directory.
// Then a second image sharing all but one small layer, pulled into the cache the first pull
// filled. Images from pull-image.ts, served by a Debian docker-registry on loopback (test/fixtures).
// Repetitions alternate which side goes first. Everything runs as the user running the bench
// (root in the full run: tar then restores owners, as banger's debugfs pass does).
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { layersToExt4 } from '../src/image/oci/convert.ts';
import { layerInputs } from '../src/image/oci/image.ts';
import { pullImage } from '../src/image/oci/pull.ts';
import { OCI_HEADROOM_BYTES, OCI_ROOT_LABEL } from '../src/daemon/services/image-oci.ts';
import { pushLayout, registryToolsMissing, startRegistry } from '../test/fixtures/oci/registry.ts';
import type { PullFixture } from './pull-image.ts';
import { ratio, summarize, type Summary } from './stats.ts';
import { runCmd } from './world.ts';

/** The targets: banger ≤ 1.3× the floor; the second image ≤ 0.1× the first. */
const TARGETS = { vs_floor: 1.3, second: 0.1 };

interface BangerSample {
  total: number;
  /** pullImage: manifest, config and layers downloaded, verified and in the cache. */
  download: number;
  /** layersToExt4 until it starts writing the filesystem (decompress, tar, spill files). */
  flatten: number;
  /** The rest: staging tree, mkfs.ext4 -d, the debugfs ownership pass. */
  ext4: number;
}

export interface PullResult {
  scale: PullFixture['scale'];
  reps: number;
  uid: number;
  images: Pick<PullFixture, 'layers' | 'first' | 'second'>;
  /** First image, fresh cache: banger's pull + flatten + ext4 (ms). */
  banger: Record<keyof BangerSample, Summary>;
  /** skopeo copy + tar -xzf of every layer (ms). */
  floor: { total: Summary; copy: Summary; untar: Summary };
  /** Second image with the first's layers in the cache: pull alone, and pull + convert (ms). */
  second: { download: Summary; total: Summary };
  targets: typeof TARGETS;
  /** median(banger total) / median(floor total); target ≤ 1.3. */
  ratio_vs_floor: number;
  /** median(second download) / median(first download); target ≤ 0.1. */
  ratio_second_download: number;
  /** median(second pull + convert) / median(first pull + convert). */
  ratio_second_total: number;
  samples: { banger: BangerSample[]; floor: { copy: number; untar: number }[]; second: BangerSample[] };
  notes: string[];
}

async function bangerPull(ref: string, cacheDir: string, work: string): Promise<BangerSample> {
  await mkdir(work, { recursive: true });
  const t0 = performance.now();
  const image = await pullImage({ ref, cacheDir });
  const t1 = performance.now();
  let t2: number | undefined;
  await layersToExt4(layerInputs(image), {
    imagePath: join(work, 'rootfs.ext4'),
    workDir: work,
    label: OCI_ROOT_LABEL,
    headroomBytes: OCI_HEADROOM_BYTES,
    onStage: (stage) => {
      if (stage === 'mkfs') t2 ??= performance.now();
    },
  });
  const t3 = performance.now();
  return { total: t3 - t0, download: t1 - t0, flatten: (t2 ?? t3) - t1, ext4: t3 - (t2 ?? t3) };
}

async function floorPull(ref: string, dir: string, policy: string): Promise<{ copy: number; untar: number }> {
  const oci = join(dir, 'oci');
  const root = join(dir, 'root');
  await mkdir(root, { recursive: true });
  const t0 = performance.now();
  // HOME: skopeo's blob-info cache and auth file, fresh each time.
  const copy = await runCmd([
    'env',
    `HOME=${dir}`,
    `XDG_RUNTIME_DIR=${dir}`,
    'skopeo',
    '--policy',
    policy,
    'copy',
    '--quiet',
    '--src-tls-verify=false',
    `docker://${ref}`,
    `oci:${oci}:latest`,
  ]);
  if (copy.code !== 0) throw new Error(`skopeo copy ${ref}: exit ${copy.code}: ${copy.stderr.slice(-500)}`);
  const t1 = performance.now();
  const index = JSON.parse(await readFile(join(oci, 'index.json'), 'utf8')) as {
    manifests: { digest: string }[];
  };
  const blob = (d: string): string => join(oci, 'blobs', 'sha256', d.replace(/^sha256:/, ''));
  const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as {
    layers: { digest: string }[];
  };
  for (const l of manifest.layers) {
    const r = await runCmd(['tar', '-xzf', blob(l.digest), '-C', root]);
    if (r.code !== 0) throw new Error(`tar -xzf ${l.digest}: exit ${r.code}: ${r.stderr.slice(-500)}`);
  }
  const t2 = performance.now();
  return { copy: t1 - t0, untar: t2 - t1 };
}

export async function runPull(o: {
  fixture: PullFixture;
  reps: number;
  dir: string;
  say: (l: string) => void;
}): Promise<PullResult> {
  const missing = registryToolsMissing();
  if (missing) throw new Error(missing);
  const f = o.fixture;
  const dir = join(o.dir, 'pull');
  await mkdir(dir, { recursive: true });
  const reg = await startRegistry({ workDir: join(dir, 'registry') });
  const samples: PullResult['samples'] = { banger: [], floor: [], second: [] };
  try {
    o.say(`  pushing bench/pull:v1 and :v2 to the loopback registry ${reg.host}`);
    for (const tag of ['v1', 'v2']) {
      await pushLayout({ layout: f.layout, tag, registry: reg, dest: `bench/pull:${tag}`, workDir: dir });
    }
    const policy = join(dir, 'policy.json');
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    const first = `${reg.host}/bench/pull:v1`;
    const second = `${reg.host}/bench/pull:v2`;
    const s = (ms: number): string => (ms / 1000).toFixed(2);
    for (let r = 0; r < o.reps; r++) {
      const run = join(dir, `rep${r}`);
      const sides = [
        async () => {
          const cache = join(run, 'blobs');
          const a = await bangerPull(first, cache, join(run, 'img1'));
          const b = await bangerPull(second, cache, join(run, 'img2'));
          samples.banger.push(a);
          samples.second.push(b);
          o.say(
            `  rep ${r + 1}: banger ${s(a.total)} s (download ${s(a.download)}, flatten ${s(a.flatten)}, ` +
              `ext4 ${s(a.ext4)}); second image ${s(b.total)} s (download ${s(b.download)})`,
          );
          await rm(run + '/img1', { recursive: true, force: true });
          await rm(run + '/img2', { recursive: true, force: true });
          await rm(cache, { recursive: true, force: true });
        },
        async () => {
          const fl = await floorPull(first, join(run, 'floor'), policy);
          samples.floor.push(fl);
          o.say(
            `  rep ${r + 1}: floor ${s(fl.copy + fl.untar)} s (skopeo ${s(fl.copy)}, tar ${s(fl.untar)})`,
          );
          await rm(join(run, 'floor'), { recursive: true, force: true });
        },
      ];
      if (r % 2 === 1) sides.reverse();
      for (const side of sides) {
        // Each side starts with nothing of the previous one waiting to be written back: without
        // this the floor's tar (26 000 files to disk) slowed rep after rep (2.1 → 4.4 → 7.0 s in
        // 2026-12-06-pull-2 and -3) under the writeback of what earlier reps wrote.
        await runCmd(['sync']);
        await side();
      }
      await rm(run, { recursive: true, force: true });
    }
  } finally {
    await reg.stop();
    await rm(dir, { recursive: true, force: true });
  }
  const pick = <T>(xs: T[], k: keyof T): Summary => summarize(xs.map((x) => x[k] as number));
  const banger = {
    total: pick(samples.banger, 'total'),
    download: pick(samples.banger, 'download'),
    flatten: pick(samples.banger, 'flatten'),
    ext4: pick(samples.banger, 'ext4'),
  };
  const floorTotals = samples.floor.map((x) => x.copy + x.untar);
  const floor = {
    total: summarize(floorTotals),
    copy: pick(samples.floor, 'copy'),
    untar: pick(samples.floor, 'untar'),
  };
  const second = { download: pick(samples.second, 'download'), total: pick(samples.second, 'total') };
  const round = (xs: BangerSample[]): BangerSample[] =>
    xs.map((x) => ({
      total: Math.round(x.total),
      download: Math.round(x.download),
      flatten: Math.round(x.flatten),
      ext4: Math.round(x.ext4),
    }));
  return {
    scale: f.scale,
    reps: o.reps,
    uid: process.getuid?.() ?? -1,
    images: { layers: f.layers, first: f.first, second: f.second },
    banger,
    floor,
    second,
    targets: TARGETS,
    ratio_vs_floor: ratio(banger.total.median, floor.total.median),
    ratio_second_download: ratio(second.download.median, banger.download.median),
    ratio_second_total: ratio(second.total.median, banger.total.median),
    samples: {
      banger: round(samples.banger),
      floor: samples.floor.map((x) => ({ copy: Math.round(x.copy), untar: Math.round(x.untar) })),
      second: round(samples.second),
    },
    notes: [
      'banger: pullImage + layersToExt4 (the daemon’s label and 1 GiB headroom), without the bootable step',
      'floor: skopeo copy docker://… oci:DIR, then tar -xzf of each layer in order into one directory',
      'second: bench/pull:v2 (v1’s layers plus one small layer) pulled into the cache v1’s pull filled',
      'sync before each side (not timed): no writeback of an earlier side during the next',
      `run as uid ${process.getuid?.() ?? -1}`,
    ],
  };
}
