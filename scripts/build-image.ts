// Build the default guest image with printed progress:
//   node scripts/build-image.ts --out DIR --cache DIR [--mode root|unshare|fakechroot] [--force]
// Ctrl-C aborts the build (child processes are killed, temp files removed).
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { buildDefaultImage, type BuildStage, type StageDetail } from '../src/image/builder.ts';
import type { BuildMode } from '../src/image/rootfs.ts';

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    cache: { type: 'string' },
    mode: { type: 'string' },
    force: { type: 'boolean', default: false },
    verbose: { type: 'boolean', short: 'v', default: false },
  },
});

if (!values.out || !values.cache) {
  console.error(
    'usage: node scripts/build-image.ts --out DIR --cache DIR [--mode root|unshare|fakechroot] [--force]',
  );
  process.exit(2);
}
const modes: readonly string[] = ['root', 'unshare', 'fakechroot'];
if (values.mode !== undefined && !modes.includes(values.mode)) {
  console.error(`--mode must be one of ${modes.join(', ')}`);
  process.exit(2);
}

const t0 = performance.now();
const stamp = (): string => `[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s]`;
const ac = new AbortController();
process.once('SIGINT', () => {
  console.error(`${stamp()} interrupted: aborting`);
  ac.abort();
});
process.once('SIGTERM', () => ac.abort());

const onStage = (stage: BuildStage, d: StageDetail): void => {
  if (d.phase === 'progress' && !values.verbose) {
    // mmdebstrap is chatty: keep its lines for --verbose, show the rest.
    if (stage.startsWith('rootfs.') && d.message?.startsWith('I: ')) return;
  }
  const took = d.durationMs !== undefined ? ` (${(d.durationMs / 1000).toFixed(1)}s)` : '';
  const what = d.phase === 'start' ? '▶' : d.phase === 'done' ? '✓' : ' ';
  console.log(`${stamp()} ${what} ${stage}${took}${d.message ? `: ${d.message}` : ''}`);
};

try {
  const r = await buildDefaultImage({
    outDir: resolve(values.out),
    cacheDir: resolve(values.cache),
    onStage,
    signal: ac.signal,
    mode: values.mode as BuildMode | undefined,
    force: values.force,
  });
  const m = r.manifest;
  console.log(
    `${stamp()} ${r.cached ? 'cached' : 'built'} image in ${r.dir}: kernel ${m.kernel_version}, ` +
      `build mode ${m.build_mode}, recipe ${m.recipe_hash.slice(0, 12)}, ` +
      `rootfs ${Math.round(m.sizes.rootfs_allocated / 1048576)} MiB used of ${Math.round(m.sizes.rootfs / 1048576)} MiB`,
  );
} catch (e) {
  console.error(`${stamp()} image build failed: ${(e as Error).message}`);
  process.exit(1);
}
