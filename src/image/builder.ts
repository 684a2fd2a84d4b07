// Builds the default guest image (kernel, initramfs, ext4 root filesystem) as named stages with
// progress and durations, cancellable through an AbortSignal. Results are cached in
// cacheDir/images/<recipe hash>/ and delivered to outDir by hard link (copy across filesystems);
// a build happens in a temp directory and is renamed into place only when complete.
import { copyFile, cp, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aptUpdate, prepareApt } from './apt.ts';
import { processAlive, run, throwIfAborted } from './exec.ts';
import { buildInitramfs } from './initramfs.ts';
import {
  downloadPackage,
  extractFromDeb,
  extractKernel,
  resolveKernelPackage,
  resolvePackage,
} from './kernel.ts';
import {
  IMAGE_FILES,
  materialize,
  readManifest,
  sealImage,
  withBuildLock,
  type ImageManifest,
  MANIFEST_FORMAT,
} from './manifest.ts';
import {
  BUILDER_VERSION,
  DEFAULT_RECIPE,
  findGuestDir,
  FREESTANDING_CC_ARGS,
  recipeHash,
  sourcesList,
  type ImageRecipe,
} from './recipe.ts';
import {
  bootstrapRootfs,
  detectBuildMode,
  generateCustomizeScript,
  tarToExt4,
  unpackPrivilege,
  verifyRootfsImage,
  type BuildMode,
} from './rootfs.ts';

export type BuildStage =
  | 'cache'
  | 'prepare'
  | 'kernel.download'
  | 'kernel.extract'
  | 'initramfs'
  | 'rootfs.bootstrap'
  | 'rootfs.customize'
  | 'rootfs.mkfs'
  | 'finalize';

export interface StageDetail {
  phase: 'start' | 'progress' | 'done';
  message?: string;
  /** On 'done': how long the stage took. */
  durationMs?: number;
}

export interface BuildImageOptions {
  /** Where the image ends up (vmlinuz, initrd.cpio.gz, rootfs.ext4, manifest.json). */
  outDir: string;
  /** Package cache, private apt state and built images by recipe hash. */
  cacheDir: string;
  onStage?: (stage: BuildStage, detail: StageDetail) => void;
  signal?: AbortSignal;
  recipe?: ImageRecipe;
  /** Force a build mode instead of detecting one. */
  mode?: BuildMode;
  /** Rebuild even when a cached image with the same recipe hash exists. */
  force?: boolean;
}

export interface BuildResult {
  dir: string;
  manifest: ImageManifest;
  /** True when no build ran (outDir or the cache already held this recipe hash). */
  cached: boolean;
  durationMs: number;
}

class StageClock {
  readonly durations: Record<string, number> = {};
  private readonly onStage: BuildImageOptions['onStage'];
  private readonly started = new Map<BuildStage, number>();

  constructor(onStage: BuildImageOptions['onStage']) {
    this.onStage = onStage;
  }

  start(stage: BuildStage, message?: string): void {
    this.started.set(stage, performance.now());
    this.onStage?.(stage, { phase: 'start', message });
  }

  progress(stage: BuildStage, message: string): void {
    this.onStage?.(stage, { phase: 'progress', message });
  }

  done(stage: BuildStage, message?: string): void {
    const t0 = this.started.get(stage) ?? performance.now();
    const durationMs = Math.round(performance.now() - t0);
    this.durations[stage] = durationMs;
    this.onStage?.(stage, { phase: 'done', message, durationMs });
  }

  async run<T>(stage: BuildStage, fn: () => Promise<T>, doneMessage?: (r: T) => string): Promise<T> {
    this.start(stage);
    const r = await fn();
    this.done(stage, doneMessage?.(r));
    return r;
  }
}

export async function buildDefaultImage(opts: BuildImageOptions): Promise<BuildResult> {
  const t0 = performance.now();
  const recipe = opts.recipe ?? DEFAULT_RECIPE;
  const guestDir = findGuestDir();
  const hash = recipeHash(recipe, { guestDir });
  const clock = new StageClock(opts.onStage);
  const imagesDir = join(opts.cacheDir, 'images');
  const cacheEntry = join(imagesDir, hash);
  const elapsed = (): number => Math.round(performance.now() - t0);

  if (!opts.force) {
    const current = await readManifest(opts.outDir);
    if (current?.recipe_hash === hash) {
      opts.onStage?.('cache', {
        phase: 'done',
        message: `${opts.outDir} is up to date (${hash.slice(0, 12)})`,
      });
      return { dir: opts.outDir, manifest: current, cached: true, durationMs: elapsed() };
    }
  }
  await mkdir(imagesDir, { recursive: true });

  return withBuildLock(join(imagesDir, `${hash}.lock`), opts.signal, async () => {
    if (!opts.force) {
      const cached = await readManifest(cacheEntry);
      if (cached?.recipe_hash === hash) {
        clock.start('cache', `using cached image ${hash.slice(0, 12)} from ${cacheEntry}`);
        await materialize(cacheEntry, opts.outDir);
        clock.done('cache');
        return { dir: opts.outDir, manifest: cached, cached: true, durationMs: elapsed() };
      }
    }
    const manifest = await build(opts, recipe, guestDir, hash, cacheEntry, clock);
    clock.start('finalize', `delivering to ${opts.outDir}`);
    await materialize(cacheEntry, opts.outDir);
    clock.done('finalize');
    return { dir: opts.outDir, manifest, cached: false, durationMs: elapsed() };
  });
}

/**
 * The recipe's guest/ files under dest (same relative paths), compiled where the recipe says so:
 * what generateCustomizeScript's hook installs from HERE/guest. Shared by image builds and the
 * prepare disk of OCI and derived images (src/image/prepare.ts).
 */
export async function stageGuestFiles(
  recipe: ImageRecipe,
  guestDir: string,
  dest: string,
  signal?: AbortSignal,
): Promise<void> {
  for (const f of recipe.guestFiles) {
    await mkdir(join(dest, f.src, '..'), { recursive: true });
    if (f.compile === 'freestanding-c') {
      // A few hundred bytes of static code, no libc: built here, installed by the hook.
      await run(['gcc', ...FREESTANDING_CC_ARGS, '-o', join(dest, f.src), join(guestDir, f.src)], { signal });
    } else {
      await copyFile(join(guestDir, f.src), join(dest, f.src));
    }
  }
}

/** Remove PREFIX<pid>-* directories left by builders that died (killed before their cleanup). */
async function removeStaleBuilds(dir: string, prefix: string): Promise<void> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  for (const name of entries) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    await rm(join(dir, name), { recursive: true, force: true }).catch(() => undefined);
  }
}

async function build(
  opts: BuildImageOptions,
  recipe: ImageRecipe,
  guestDir: string,
  hash: string,
  cacheEntry: string,
  clock: StageClock,
): Promise<ImageManifest> {
  const t0 = performance.now();
  const { signal } = opts;
  await removeStaleBuilds(join(opts.cacheDir, 'images'), '.build-');
  await removeStaleBuilds(tmpdir(), 'banger-image-');
  const buildDir = await mkdtemp(join(opts.cacheDir, 'images', `.build-${process.pid}-`));
  // The customize hook runs as (namespace) root, which may not be able to enter a private cache
  // dir: its inputs go to a world-readable staging dir under /tmp.
  const staging = await mkdtemp(join(tmpdir(), `banger-image-${process.pid}-`));
  try {
    clock.start('prepare');
    const mode = await detectBuildMode(opts.mode);
    clock.done('prepare', `build mode ${mode.mode}: ${mode.reason}`);
    throwIfAborted(signal, 'image build');

    const out = join(buildDir, 'out');
    await mkdir(out);
    const debsDir = join(opts.cacheDir, 'debs');
    const apt = await prepareApt(join(opts.cacheDir, 'apt'), sourcesList(recipe));

    const { kernelPkg, kernelDeb, busyboxDeb } = await clock.run(
      'kernel.download',
      async () => {
        clock.progress('kernel.download', 'apt-get update (private lists)');
        await aptUpdate(apt, signal);
        const kernelPkg = await resolveKernelPackage(apt, recipe.kernelMetaPackage, signal);
        clock.progress(
          'kernel.download',
          `${recipe.kernelMetaPackage} → ${kernelPkg.name} ${kernelPkg.version}`,
        );
        const kernelDeb = await downloadPackage(apt, kernelPkg, debsDir, signal);
        const busyboxPkg = await resolvePackage(apt, recipe.busyboxPackage, signal);
        const busyboxDeb = await downloadPackage(apt, busyboxPkg, debsDir, signal);
        return { kernelPkg, kernelDeb, busyboxDeb };
      },
      (r) => `${r.kernelPkg.name} ${r.kernelDeb.cached ? '(cached .deb)' : '(downloaded)'}`,
    );

    const kernel = await clock.run(
      'kernel.extract',
      async () => {
        const k = await extractKernel(kernelDeb.path, join(buildDir, 'kernel'), signal);
        await copyFile(k.vmlinuz, join(out, IMAGE_FILES.kernel));
        return k;
      },
      (k) => `kernel ${k.version}`,
    );
    const busybox = await extractFromDeb(busyboxDeb.path, 'bin/busybox', join(buildDir, 'busybox'), signal);

    const initrd = await clock.run(
      'initramfs',
      () =>
        buildInitramfs({
          kernelRoot: kernel.root,
          kernelVersion: kernel.version,
          busybox,
          wantedModules: recipe.initramfsModules,
          requiredModules: recipe.requiredModules,
          rootLabel: recipe.rootLabel,
          seedLabel: recipe.seedLabel,
          workDir: join(buildDir, 'initramfs-work'),
          out: join(out, IMAGE_FILES.initrd),
          signal,
        }),
      (r) =>
        `${r.modules.length} modules, ${Math.round(r.size / 1024)} KiB` +
        (r.missing.length ? `; not available: ${r.missing.join(', ')}` : ''),
    );

    const tarPath = join(buildDir, 'rootfs.tar');
    clock.start(
      'rootfs.bootstrap',
      `mmdebstrap --mode=${mode.mode} ${recipe.suite} (${recipe.packages.length} packages)`,
    );
    // Stage the customize hook and what it installs.
    const hook = join(staging, 'customize.sh');
    await writeFile(hook, generateCustomizeScript(recipe), { mode: 0o755 });
    await stageGuestFiles(recipe, guestDir, join(staging, 'guest'), signal);
    if (recipe.installKernelModules) {
      await cp(kernel.modulesDir, join(staging, 'modules', kernel.version), {
        recursive: true,
        verbatimSymlinks: true,
      });
    }
    await run(['chmod', '-R', 'a+rX', staging], { signal });
    await run(['chmod', '0755', hook], { signal });

    let inCustomize = false;
    await bootstrapRootfs({
      recipe,
      mode: mode.mode,
      hook,
      tarPath,
      signal,
      onStatus: (line, customize) => {
        if (customize && !inCustomize) {
          inCustomize = true;
          clock.done('rootfs.bootstrap');
          clock.start('rootfs.customize');
        }
        clock.progress(inCustomize ? 'rootfs.customize' : 'rootfs.bootstrap', line);
      },
    });
    if (!inCustomize) clock.done('rootfs.bootstrap');
    else clock.done('rootfs.customize');

    const rootfsPath = join(out, IMAGE_FILES.rootfs);
    const ext4 = await clock.run(
      'rootfs.mkfs',
      async () => {
        const r = await tarToExt4({
          tarPath,
          imagePath: rootfsPath,
          workDir: join(buildDir, 'mkfs'),
          sizeMiB: recipe.rootfsSizeMiB,
          label: recipe.rootLabel,
          privilege: unpackPrivilege(mode.mode),
          signal,
        });
        await rm(tarPath, { force: true });
        const problems = await verifyRootfsImage(rootfsPath, signal);
        if (problems.length > 0) throw new Error(`rootfs ownership check failed:\n${problems.join('\n')}`);
        return r;
      },
      (r) => `${recipe.rootfsSizeMiB} MiB sparse, ${Math.round(r.allocated / 1024 / 1024)} MiB allocated`,
    );

    const manifest: ImageManifest = {
      format: MANIFEST_FORMAT,
      recipe_hash: hash,
      recipe_name: recipe.name,
      builder_version: BUILDER_VERSION,
      kernel_version: kernel.version,
      kernel_package: { name: kernelPkg.name, version: kernelPkg.version },
      files: { ...IMAGE_FILES },
      sizes: {
        kernel: (await stat(join(out, IMAGE_FILES.kernel))).size,
        initrd: initrd.size,
        rootfs: ext4.size,
        rootfs_allocated: ext4.allocated,
      },
      root_label: recipe.rootLabel,
      seed_label: recipe.seedLabel,
      initramfs_modules: initrd.modules,
      created_at: new Date().toISOString(),
      build_mode: mode.mode,
      build_duration_ms: Math.round(performance.now() - t0),
      stage_durations_ms: { ...clock.durations },
    };
    await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    await sealImage(out);
    throwIfAborted(signal, 'image build');
    await rm(cacheEntry, { recursive: true, force: true });
    await rename(out, cacheEntry);
    return manifest;
  } finally {
    await rm(buildDir, { recursive: true, force: true });
    await rm(staging, { recursive: true, force: true });
  }
}
