// A daemon's image service in its own process, for image-replace-crash.test.ts: it force-rebuilds
// image `img` in STATE (argv[2]) with the fake builder's tag argv[4] and the real TEST-ONLY crash
// points (src/vm/crash.ts) armed at argv[3], so the process SIGKILLs itself mid-replacement.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageServiceImpl } from '../../src/daemon/services/image.ts';
import type { BuildImageOptions, BuildResult } from '../../src/image/builder.ts';
import { MANIFEST_FORMAT, type ImageManifest } from '../../src/image/manifest.ts';
import { createLogger } from '../../src/log/logger.ts';
import { OperationRegistry } from '../../src/ops/operations.ts';
import { mintOpId } from '../../src/rpc/context.ts';
import { openStore } from '../../src/store/index.ts';
import { crashPoints } from '../../src/vm/crash.ts';

const [stateDir, point, tag] = process.argv.slice(2);
if (stateDir === undefined || point === undefined || tag === undefined)
  throw new Error('usage: replace-crash-child.ts STATE POINT TAG');

/** The same tagged files as the test's own fake builder. */
async function build(o: BuildImageOptions): Promise<BuildResult> {
  await mkdir(o.outDir, { recursive: true });
  await writeFile(join(o.outDir, 'vmlinuz'), `kernel ${tag}`);
  await writeFile(join(o.outDir, 'initrd.cpio.gz'), `initrd ${tag}`);
  await writeFile(join(o.outDir, 'rootfs.ext4'), `rootfs ${tag}`);
  const manifest: ImageManifest = {
    format: MANIFEST_FORMAT,
    recipe_hash: `hash-${tag}`,
    recipe_name: 'debian-bookworm',
    builder_version: '1',
    kernel_version: `6.1.0-${tag}`,
    kernel_package: { name: 'linux-image', version: '6.1' },
    files: { kernel: 'vmlinuz', initrd: 'initrd.cpio.gz', rootfs: 'rootfs.ext4' },
    sizes: { kernel: 1, initrd: 1, rootfs: 1, rootfs_allocated: 0 },
    root_label: 'banger-root',
    seed_label: 'banger-seed',
    initramfs_modules: [],
    created_at: new Date().toISOString(),
    build_mode: 'unshare',
    build_duration_ms: 1,
    stage_durations_ms: {},
  };
  await writeFile(join(o.outDir, 'manifest.json'), JSON.stringify(manifest));
  return { dir: o.outDir, manifest, cached: false, durationMs: 1 };
}

const log = createLogger({ name: 'child', stream: process.stderr });
const store = openStore(join(stateDir, 'banger.db'));
const svc = new ImageServiceImpl({
  store,
  ops: new OperationRegistry(log),
  log,
  stateDir,
  cacheDir: join(stateDir, '..', 'cache'),
  build,
  crash: crashPoints(point, log),
});
const opId = mintOpId();
await svc.buildBegin(
  { name: 'img', force: true },
  {
    opId,
    method: 'test',
    startedAt: Date.now(),
    signal: new AbortController().signal,
    log,
  },
);
for (;;) {
  const { operation } = await svc.buildStatus(
    { operation_id: opId },
    {
      opId,
      method: 'test',
      startedAt: Date.now(),
      signal: new AbortController().signal,
      log,
    },
  );
  if (operation.state !== 'running') break;
  await new Promise((r) => setTimeout(r, 5));
}
// Reaching here means the crash point never came.
process.stdout.write('no crash\n');
