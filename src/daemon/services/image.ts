// image.* : base images. Built and imported images live in STATE/images/<name>/ (rootfs.ext4,
// vmlinuz, initrd.cpio.gz, manifest.json); a built image's kernel is a kernel row of the same
// name pointing at those files. Files are assembled in a staging directory beside the final one
// and moved into place in the same synchronous step that records the rows, so a failure or a
// cancel leaves neither files nor rows behind, and a forced rebuild keeps the old image until the
// new one is recorded (journaled, so a daemon killed mid-way keeps it too: dir-replace.ts).
import { renameSync } from 'node:fs';
import { chmod, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  ImageBuildService,
  ImageCacheService,
  ImagePullService,
  ImageService,
  ImageWarmService,
} from '../../../generated/handlers.gen.ts';
import type {
  Image,
  ImageBuildBeginParams,
  ImageBuildBeginResult,
  ImageBuildCancelParams,
  ImageBuildCancelResult,
  ImageBuildStatusParams,
  ImageBuildStatusResult,
  ImageDeleteParams,
  ImageDeleteResult,
  ImageImportParams,
  ImageImportResult,
  ImageListResult,
  ImagePromoteParams,
  ImagePromoteResult,
  ImageShowParams,
  ImageShowResult,
  ImageWarmBeginParams,
  ImageWarmBeginResult,
  ImageWarmStatusParams,
  ImageWarmStatusResult,
  Operation,
  WarmTemplate,
} from '../../../generated/types.gen.ts';
import {
  buildDefaultImage,
  type BuildResult,
  type BuildStage,
  type StageDetail,
} from '../../image/builder.ts';
import { IMAGE_FILES } from '../../image/manifest.ts';
import { sweepPrepareTmp } from '../../image/prepare.ts';
import { DEFAULT_IMAGE_NAME } from '../../image/names.ts';
import type { Logger } from '../../log/logger.ts';
import { type RpcContext, mintOpId, withOpId } from '../../rpc/context.ts';
import { ErrorResponse, badRequest, conflict, notFound, toErrorResponse } from '../../rpc/errors.ts';
import { type ImageRow, type KernelRow, type Store, isUniqueViolation } from '../../store/index.ts';
import type { OperationRegistry, OperationTracker } from '../../ops/operations.ts';
import type { Accel } from '../../engine/driver.ts';
import type { CrashPoint } from '../../vm/crash.ts';
import { imageToWire, namesBy } from './convert.ts';
import { finishReplace, recoverReplacements, replaceDir, type Replaced } from './dir-replace.ts';
import { DERIVED_ROOTFS, buildDerived, isCacheHit, planDerived, type DerivedPlan } from './image-derived.ts';
import {
  KERNEL_FILES,
  alreadyExists,
  checkInputFile,
  checkResourceName,
  copySparse,
  installDirSync,
  makeStagingDir,
  stageKernelFiles,
  imagesUsingKernel,
  isInside,
  sweepOrphanDirs,
  sweepStaging,
} from './kernel.ts';
import { failStep, removeStaging } from './op-failure.ts';

// Defined beside the pulled-image naming that avoids it (src/image/names.ts); re-exported for the
// daemon's other services.
export { DEFAULT_IMAGE_NAME };

export interface ImageServiceDeps {
  store: Store;
  ops: OperationRegistry;
  log: Logger;
  stateDir: string;
  /** The builder's package cache and recipe-hash-keyed cached builds. */
  cacheDir: string;
  /** Injectable for tests. */
  build?: typeof buildDefaultImage;
  /** Derived builds' prepare VM (injectable for tests). */
  buildDerived?: typeof buildDerived;
  /** `[images] apt_sources`: replaces the base's apt sources during a derived build. */
  aptSources?: string;
  /** The accelerator a derived build's prepare VM runs with (default: probed). */
  accel?: () => Promise<Accel>;
  /** TEST-ONLY crash points (`image.replace.<step>`: dir-replace.ts); off by default. */
  crash?: CrashPoint;
}

/** What image.warm.* and image.show need of the warm templates (src/daemon/warm.ts). */
export interface ImageWarmPart {
  begin(p: ImageWarmBeginParams, ctx: RpcContext): Promise<ImageWarmBeginResult>;
  status(p: ImageWarmStatusParams): Promise<ImageWarmStatusResult>;
  templates(image: ImageRow): Promise<WarmTemplate[]>;
}

/** What image.pull.* and image.cache.* need (src/daemon/services/image-oci.ts). */
export interface OciImagePart {
  readonly pull: ImagePullService;
  readonly cache: ImageCacheService;
  /** Why `name` is taken by a pull in flight, if it is. */
  pulling(name: string): string | undefined;
}

export interface ResolveOptions {
  signal?: AbortSignal;
  /** Progress of an automatic default-image build (its stage transitions). */
  onProgress?: (detail: string) => void;
}

type BuildOutcome = { ok: true; image: ImageRow } | { ok: false; error: ErrorResponse };

interface BuildOptions {
  opId: string;
  method: string;
  force: boolean;
  makeDefault: boolean;
  /** Started by resolveForVm: canceled when every waiter gives up. */
  auto: boolean;
  /** A derived image (image build --from): built by image-derived.ts instead of the builder. */
  derived?: DerivedPlan;
}

interface RunningBuild {
  name: string;
  tracker: OperationTracker;
  opts: BuildOptions;
  settled: Promise<BuildOutcome>;
  listeners: Set<(detail: string) => void>;
  waiters: number;
}

export class ImageServiceImpl implements ImageService {
  private readonly store: Store;
  private readonly ops: OperationRegistry;
  private readonly log: Logger;
  private readonly stateDir: string;
  private readonly imagesDir: string;
  private readonly cacheDir: string;
  private readonly buildImage: typeof buildDefaultImage;
  private readonly buildDerived: typeof buildDerived;
  private readonly aptSources: string | undefined;
  private readonly accel: (() => Promise<Accel>) | undefined;
  private readonly crash: CrashPoint | undefined;
  /** Running builds by image name. */
  private readonly builds = new Map<string, RunningBuild>();
  /** Image names with an import in flight (files are copied before the rows exist). */
  private readonly importing = new Set<string>();
  /** Warm templates; set once the daemon has wired them (they resolve images through here). */
  warmTemplates: ImageWarmPart | undefined;
  /** OCI pulls and imports, image.pull.* and image.cache.* (src/daemon/services/image-oci.ts). */
  ociImages: OciImagePart | undefined;
  /** Whether a kernel import or pull of a name is in flight (the kernel service; set by the daemon). */
  kernelBusy: ((name: string) => boolean) | undefined;

  constructor(deps: ImageServiceDeps) {
    this.store = deps.store;
    this.ops = deps.ops;
    this.log = deps.log;
    this.stateDir = deps.stateDir;
    this.imagesDir = join(deps.stateDir, 'images');
    this.cacheDir = deps.cacheDir;
    this.buildImage = deps.build ?? buildDefaultImage;
    this.buildDerived = deps.buildDerived ?? buildDerived;
    this.aptSources = deps.aptSources;
    this.accel = deps.accel;
    this.crash = deps.crash;
  }

  // ---- build ---------------------------------------------------------------------------------

  /** image.build.*, at its wire path (the methods below do the work). */
  readonly build: ImageBuildService = {
    begin: (p, ctx) => this.buildBegin(p, ctx),
    status: (p, ctx) => this.buildStatus(p, ctx),
    cancel: (p, ctx) => this.buildCancel(p, ctx),
  };

  async buildBegin(p: ImageBuildBeginParams, ctx: RpcContext): Promise<ImageBuildBeginResult> {
    if (p.from !== undefined) return this.derivedBegin(p, ctx);
    if (p.packages !== undefined || p.run_script !== undefined)
      throw badRequest('packages and run_script need from (a base image)');
    const name = p.name ?? DEFAULT_IMAGE_NAME;
    checkResourceName(name, 'image');
    const force = p.force === true;
    this.checkBuildable(name, force);
    this.startBuild(name, {
      opId: ctx.opId,
      method: 'image.build.begin',
      force,
      makeDefault: p.make_default === true,
      auto: false,
    });
    return { operation_id: ctx.opId, name };
  }

  /** image build NAME --from BASE: a cache hit succeeds at once, else a derived build starts. */
  private derivedBegin(p: ImageBuildBeginParams, ctx: RpcContext): ImageBuildBeginResult {
    const { name, from } = p;
    if (name === undefined || from === undefined) throw badRequest('a derived image needs a name');
    checkResourceName(name, 'image');
    const plan = planDerived(this.store, {
      name,
      from,
      packages: p.packages,
      runScript: p.run_script,
    });
    const force = p.force === true;
    const existing = this.store.images.getByName(name);
    if (!force && !this.builds.has(name) && isCacheHit(existing, plan)) {
      const t = this.ops.begin(ctx.opId, 'image.build', 'image.build.begin', { image: name });
      t.stepDone('cache', {
        durationMs: 0,
        detail: `image ${name} is up to date (${plan.key.slice(0, 12)})`,
      });
      t.succeed();
      this.log.info({ image: name, base: from, key: plan.key }, 'derived image is up to date');
      return { operation_id: ctx.opId, name };
    }
    this.checkBuildable(name, force);
    this.startBuild(name, {
      opId: ctx.opId,
      method: 'image.build.begin',
      force,
      makeDefault: p.make_default === true,
      auto: false,
      derived: plan,
    });
    return { operation_id: ctx.opId, name };
  }

  async buildStatus(p: ImageBuildStatusParams, _ctx: RpcContext): Promise<ImageBuildStatusResult> {
    const op = this.findBuildOp(p.operation_id);
    const r: ImageBuildStatusResult = { operation: structuredClone(op) };
    if (op.state === 'succeeded' && op.image !== undefined) {
      const row = this.store.images.getByName(op.image);
      if (row) r.image = this.wire(row);
    }
    return r;
  }

  async buildCancel(p: ImageBuildCancelParams, _ctx: RpcContext): Promise<ImageBuildCancelResult> {
    const op = this.findBuildOp(p.operation_id);
    const rb = [...this.builds.values()].find((b) => b.tracker.op.id === op.id);
    if (op.state !== 'running' || !rb) throw conflict(`image build ${op.id} already ${op.state}`);
    this.log.info({ operation_id: op.id, image: rb.name }, 'image build cancel requested');
    rb.tracker.abort.abort(new ErrorResponse('canceled', 'canceled by user'));
    // The builder kills its children and the build removes its partial output before settling.
    await rb.settled;
    return { operation: structuredClone(rb.tracker.op) };
  }

  /** Throws unless a build of `name` may start now. */
  private checkBuildable(name: string, force: boolean): void {
    const running = this.builds.get(name);
    if (running) throw conflict(`image ${name} is already being built (operation ${running.tracker.op.id})`);
    if (this.importing.has(name)) throw conflict(`image ${name} is being imported`);
    const pulling = this.ociImages?.pulling(name);
    if (pulling) throw conflict(pulling);
    const existing = this.store.images.getByName(name);
    if (existing && !force) throw alreadyExists(`image ${name} already exists (force rebuilds it)`);
    if (existing) {
      const children = this.childrenOf(existing.id);
      if (children.length > 0)
        throw conflict(
          `image ${name} is the base of ${children.join(', ')} (derived images share its files)`,
        );
      const vms = this.vmsUsing(existing.id);
      if (vms.length > 0) {
        throw conflict(
          `image ${name} is used by ${vms.join(', ')} (their disks are overlays on its root filesystem)`,
        );
      }
    }
    const kernel = this.store.kernels.getByName(name);
    if (kernel && existing?.kernelId !== kernel.id) {
      throw alreadyExists(`a kernel named ${name} already exists (the built image's kernel takes its name)`);
    }
    if (kernel) {
      const others = imagesUsingKernel(this.store, kernel.id).filter((n) => n !== name);
      if (others.length > 0) throw conflict(`kernel ${name} is also used by ${others.join(', ')}`);
    }
  }

  private startBuild(name: string, opts: BuildOptions): RunningBuild {
    const tracker = this.ops.begin(opts.opId, 'image.build', opts.method, { image: name });
    let settle: (o: BuildOutcome) => void = () => undefined;
    const rb: RunningBuild = {
      name,
      tracker,
      opts,
      settled: new Promise<BuildOutcome>((resolve) => (settle = resolve)),
      listeners: new Set(),
      waiters: 0,
    };
    this.builds.set(name, rb);
    // Run in the operation's own async context, so every log line of the build carries its op id.
    void withOpId(opts.opId, opts.method, () => this.runBuild(rb)).then(settle, (err: unknown) => {
      this.builds.delete(name);
      settle({ ok: false, error: toErrorResponse(err, opts.opId) });
    });
    return rb;
  }

  private async runBuild(rb: RunningBuild): Promise<BuildOutcome> {
    const { tracker, name, opts } = rb;
    const finalDir = join(this.imagesDir, name);
    let staging: string | undefined;
    try {
      this.log.info({ image: name, force: opts.force, auto: opts.auto }, 'image build started');
      staging = await makeStagingDir(finalDir, 'build');
      if (opts.derived) {
        const image = await this.runDerived(rb, opts.derived, staging);
        staging = undefined;
        tracker.succeed();
        return { ok: true, image };
      }
      const result = await this.buildImage({
        outDir: staging,
        cacheDir: this.cacheDir,
        signal: tracker.signal,
        force: opts.force,
        onStage: (stage, d) => this.onStage(rb, stage, d),
      });
      tracker.signal.throwIfAborted();
      const image = await this.recordBuild(rb, staging, result);
      staging = undefined;
      tracker.succeed();
      this.log.info(
        { image: name, cached: result.cached, duration_ms: result.durationMs, default: image.isDefault },
        'image built',
      );
      return { ok: true, image };
    } catch (err) {
      const { error: e, canceled } = failStep(tracker, err, 'image build');
      await removeStaging(staging, this.log, 'could not remove partial image build');
      tracker.fail(e);
      if (canceled) this.log.info({ image: name }, 'image build canceled');
      else this.log.error({ image: name, err }, 'image build failed');
      return { ok: false, error: e.withOpId(tracker.op.id) };
    } finally {
      this.builds.delete(name);
    }
  }

  private onStage(rb: RunningBuild, stage: BuildStage, d: StageDetail): void {
    // A throw here would surface inside the builder; progress is never worth failing a build.
    try {
      const t = rb.tracker;
      if (d.phase === 'start') {
        t.stepStart(stage, d.message);
        this.emit(rb, d.message ? `${stage}: ${d.message}` : stage);
      } else if (d.phase === 'progress') {
        if (d.message) t.stepProgress(stage, d.message);
      } else {
        const known = t.op.steps.some((s) => s.name === stage && s.state === 'running');
        t.stepDone(stage, { durationMs: d.durationMs, detail: d.message });
        if (!known) this.emit(rb, d.message ? `${stage}: ${d.message}` : stage);
      }
    } catch (err) {
      this.log.warn({ err, stage }, 'could not record image build progress');
    }
  }

  private emit(rb: RunningBuild, detail: string): void {
    for (const l of rb.listeners) {
      try {
        l(`image ${rb.name}: ${detail}`);
      } catch (err) {
        this.log.warn({ err }, 'image build progress listener threw');
      }
    }
  }

  /** Record kernel + image rows and move the files into place, as one step. */
  private async recordBuild(rb: RunningBuild, staging: string, result: BuildResult): Promise<ImageRow> {
    const { name, opts } = rb;
    const finalDir = join(this.imagesDir, name);
    const m = result.manifest;
    const sizeBytes = (await stat(join(staging, IMAGE_FILES.rootfs))).size;
    for (const f of [IMAGE_FILES.kernel, IMAGE_FILES.initrd]) await stat(join(staging, f));
    let replacedKernel: KernelRow | undefined;
    let installed: Replaced<ImageRow>;
    try {
      installed = this.installReplacing(name, staging, () => {
        const existing = this.store.images.getByName(name);
        if (existing) {
          if (!opts.force) throw alreadyExists(`image ${name} already exists`);
          this.store.images.delete(existing.id);
        }
        const oldKernel = this.store.kernels.getByName(name);
        if (oldKernel) {
          if (existing?.kernelId !== oldKernel.id)
            throw alreadyExists(`a kernel named ${name} already exists`);
          this.store.kernels.delete(oldKernel.id);
          replacedKernel = oldKernel;
        }
        const kernel = this.store.kernels.insert({
          name,
          version: m.kernel_version,
          kernelPath: join(finalDir, IMAGE_FILES.kernel),
          initrdPath: join(finalDir, IMAGE_FILES.initrd),
          source: 'built',
        });
        return this.store.images.insert({
          name,
          kernelId: kernel.id,
          rootfsPath: join(finalDir, IMAGE_FILES.rootfs),
          sizeBytes,
          recipeHash: m.recipe_hash,
          source: 'built',
          isDefault: opts.makeDefault || this.store.images.getDefault() === undefined,
        });
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists(`image or kernel ${name} already exists`);
      throw err;
    }
    const image = installed.rows;
    await finishReplace(installed, this.log, this.crash, 'image');
    if (replacedKernel?.source === 'imported') {
      await rm(join(this.stateDir, 'kernels', name), { recursive: true, force: true });
    }
    return image;
  }

  private async runDerived(rb: RunningBuild, plan: DerivedPlan, staging: string): Promise<ImageRow> {
    const t = rb.tracker;
    const files = await this.buildDerived({
      plan,
      staging,
      aptSources: this.aptSources,
      ...(this.accel ? { accel: await this.accel() } : {}),
      signal: t.signal,
      step: async (name, fn, done) => {
        t.stepStart(name);
        this.emit(rb, name);
        const r = await fn();
        t.stepDone(name, { detail: done?.(r) });
        return r;
      },
      progress: (name, line) => t.stepProgress(name, line),
    });
    t.signal.throwIfAborted();
    return await this.recordDerived(rb, plan, staging, files.sizeBytes);
  }

  /** The derived image's row (its base's kernel, parent = base) and files, in one step. */
  private async recordDerived(
    rb: RunningBuild,
    plan: DerivedPlan,
    staging: string,
    sizeBytes: number,
  ): Promise<ImageRow> {
    const finalDir = join(this.imagesDir, rb.name);
    let installed: Replaced<ImageRow>;
    try {
      installed = this.installReplacing(rb.name, staging, () => {
        const existing = this.store.images.getByName(rb.name);
        if (existing) {
          if (!rb.opts.force) throw alreadyExists(`image ${rb.name} already exists`);
          this.store.images.delete(existing.id);
        }
        return this.store.images.insert({
          name: rb.name,
          kernelId: plan.base.kernelId,
          rootfsPath: join(finalDir, DERIVED_ROOTFS),
          rootfsFormat: 'qcow2',
          sizeBytes,
          recipeHash: plan.key,
          source: 'derived',
          parentId: plan.base.id,
          // Run defaults (Env, WorkingDir, ...) are the base's.
          ociConfig: plan.base.ociConfig,
          isDefault: rb.opts.makeDefault,
        });
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists(`image ${rb.name} already exists`);
      throw err;
    }
    // The build stays in `builds` (so no delete or rebuild of the name starts) until this is done.
    await finishReplace(installed, this.log, this.crash, 'image');
    this.log.info({ image: rb.name, base: plan.base.name, key: plan.key }, 'derived image built');
    return installed.rows;
  }

  /**
   * In one store transaction: `rows()` (deleting the image row named `name`, if any, and
   * inserting the new one), then the staged directory moved to STATE/images/<name>, the one there
   * set aside first; journaled, so a daemon killed at any point is finished or undone at start-up
   * (dir-replace.ts). The caller removes what was set aside with finishReplace.
   */
  private installReplacing(name: string, staging: string, rows: () => ImageRow): Replaced<ImageRow> {
    return replaceDir({
      store: this.store,
      table: this.store.images,
      log: this.log,
      finalDir: join(this.imagesDir, name),
      staging,
      rows,
      crash: this.crash,
      kind: 'image',
    });
  }

  /** Names of the images derived from `imageId` (their disks are overlays on its root filesystem). */
  private childrenOf(imageId: string): string[] {
    return this.store.images
      .list()
      .filter((i) => i.parentId === imageId)
      .map((i) => i.name);
  }

  private findBuildOp(id: string): Operation {
    const op = this.ops.find(id);
    if (!op || op.kind !== 'image.build') throw notFound(`image build operation ${id}`);
    return op;
  }

  // ---- the VM service's door -----------------------------------------------------------------

  /**
   * The image (and kernel) a new VM boots: the named one (not_found if missing), else the default.
   * With no default image at all, the embedded default (debian-bookworm) is built as its own
   * operation and awaited; concurrent callers share one build.
   */
  async resolveForVm(
    name: string | undefined,
    opts: ResolveOptions = {},
  ): Promise<{ image: ImageRow; kernel: KernelRow }> {
    if (name !== undefined) {
      const image = this.store.images.getByName(name);
      if (!image) {
        const b = this.builds.get(name);
        throw notFound(`image ${name}` + (b ? ` (it is being built: operation ${b.tracker.op.id})` : ''));
      }
      return { image, kernel: this.kernelOf(image) };
    }
    const ready = this.store.images.getDefault() ?? this.store.images.getByName(DEFAULT_IMAGE_NAME);
    if (ready) return { image: ready, kernel: this.kernelOf(ready) };

    opts.signal?.throwIfAborted();
    let rb = this.builds.get(DEFAULT_IMAGE_NAME);
    if (!rb) {
      this.checkBuildable(DEFAULT_IMAGE_NAME, false);
      rb = this.startBuild(DEFAULT_IMAGE_NAME, {
        opId: mintOpId(),
        method: 'auto',
        force: false,
        makeDefault: false,
        auto: true,
      });
      this.log.info(
        { image: DEFAULT_IMAGE_NAME, operation_id: rb.tracker.op.id },
        'no default image: building it',
      );
    }
    opts.onProgress?.(
      `building image ${DEFAULT_IMAGE_NAME} (operation ${rb.tracker.op.id})` +
        (rb.tracker.op.current_step ? `: ${rb.tracker.op.current_step}` : ''),
    );
    const outcome = await this.waitFor(rb, opts);
    if (!outcome.ok) {
      const e = outcome.error;
      throw new ErrorResponse(
        e.code === 'canceled' ? 'canceled' : 'operation_failed',
        `building image ${DEFAULT_IMAGE_NAME} (operation ${rb.tracker.op.id}) failed: ${e.bareMessage}`,
        { cause: e },
      );
    }
    const image = this.store.images.getDefault() ?? this.store.images.getById(outcome.image.id);
    if (!image)
      throw new ErrorResponse('operation_failed', `image ${DEFAULT_IMAGE_NAME} vanished after its build`);
    return { image, kernel: this.kernelOf(image) };
  }

  /** Await a build as one of its waiters; an auto build nobody waits for any more is canceled. */
  private async waitFor(rb: RunningBuild, opts: ResolveOptions): Promise<BuildOutcome> {
    const listener = opts.onProgress;
    if (listener) rb.listeners.add(listener);
    rb.waiters++;
    const { signal } = opts;
    let onAbort: (() => void) | undefined;
    try {
      if (!signal) return await rb.settled;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(new ErrorResponse('canceled', 'canceled while waiting for the image build'));
        signal.addEventListener('abort', onAbort, { once: true });
      });
      return await Promise.race([rb.settled, aborted]);
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      if (listener) rb.listeners.delete(listener);
      rb.waiters--;
      if (rb.opts.auto && rb.waiters === 0 && rb.tracker.op.state === 'running' && signal?.aborted) {
        this.log.info({ operation_id: rb.tracker.op.id }, 'nobody waits for the image build: canceling it');
        rb.tracker.abort.abort(new ErrorResponse('canceled', 'every VM create waiting for it was canceled'));
      }
    }
  }

  // ---- list, show, import, delete, promote ---------------------------------------------------

  async list(_ctx: RpcContext): Promise<ImageListResult> {
    const kernels = new Map(this.store.kernels.list().map((k) => [k.id, k]));
    const users = namesBy(this.store.vms.list(), (v) => v.imageId);
    const rows = this.store.images.list();
    const names = new Map(rows.map((r) => [r.id, r.name]));
    const images: Image[] = [];
    for (const row of rows) {
      const k = kernels.get(row.kernelId);
      const parent = row.parentId !== null ? names.get(row.parentId) : undefined;
      if (k) images.push(imageToWire(row, k, users.get(row.id) ?? [], parent));
      else this.log.warn({ image: row.name }, 'image without its kernel row; not listed');
    }
    return { images };
  }

  async show(p: ImageShowParams, _ctx: RpcContext): Promise<ImageShowResult> {
    const row = this.get(p.name);
    const image = this.wire(row);
    if (this.warmTemplates) image.warm_templates = await this.warmTemplates.templates(row);
    return { image };
  }

  // ---- warm templates (src/daemon/warm.ts) ------------------------------------------------

  /** image.warm.*, at its wire path: the warm templates do the work once the daemon wired them. */
  readonly warm: ImageWarmService = {
    begin: (p, ctx) => this.requireWarm().begin(p, ctx),
    status: (p) => this.requireWarm().status(p),
  };

  /** image.pull.* and image.cache.*, at their wire paths, once the daemon wired the OCI part. */
  readonly pull: ImagePullService = {
    begin: (p, ctx) => this.requireOci().pull.begin(p, ctx),
    status: (p, ctx) => this.requireOci().pull.status(p, ctx),
    cancel: (p, ctx) => this.requireOci().pull.cancel(p, ctx),
  };

  readonly cache: ImageCacheService = {
    prune: (p, ctx) => this.requireOci().cache.prune(p, ctx),
  };

  private requireOci(): OciImagePart {
    if (!this.ociImages) throw new ErrorResponse('conflict', 'OCI images are not available in this daemon');
    return this.ociImages;
  }

  /** Why `name` is taken by a build or a raw import in flight, if it is (the OCI part asks). */
  busy(name: string): string | undefined {
    const b = this.builds.get(name);
    if (b) return `image ${name} is being built (operation ${b.tracker.op.id})`;
    if (this.importing.has(name)) return `image ${name} is being imported`;
    return undefined;
  }

  private requireWarm(): ImageWarmPart {
    if (!this.warmTemplates)
      throw new ErrorResponse('conflict', 'warm templates are not available in this daemon');
    return this.warmTemplates;
  }

  async promote(p: ImagePromoteParams, _ctx: RpcContext): Promise<ImagePromoteResult> {
    const row = this.store.images.setDefault(this.get(p.name).id);
    this.log.info({ image: row.name }, 'default image set');
    return { image: this.wire(row) };
  }

  async import(p: ImageImportParams, ctx: RpcContext): Promise<ImageImportResult> {
    const { name } = p;
    checkResourceName(name, 'image');
    this.checkImportable(name);
    await checkInputFile(p.rootfs, 'rootfs');
    await checkInputFile(p.kernel, 'kernel');
    if (p.initrd !== undefined) await checkInputFile(p.initrd, 'initrd');
    this.checkImportable(name);

    const finalDir = join(this.imagesDir, name);
    const kernelDir = join(this.stateDir, 'kernels', name);
    this.importing.add(name);
    let rootStage: string | undefined;
    let kernelStage: string | undefined;
    try {
      rootStage = await makeStagingDir(finalDir, 'import');
      const rootfs = join(rootStage, IMAGE_FILES.rootfs);
      await copySparse(p.rootfs, rootfs, ctx.signal);
      await chmod(rootfs, 0o444);
      const sizeBytes = (await stat(rootfs)).size;
      const staged = await stageKernelFiles(kernelDir, { kernel: p.kernel, initrd: p.initrd }, ctx.signal);
      kernelStage = staged.staging;
      const [rs, ks] = [rootStage, kernelStage];
      let installedRoot = false;
      let row: ImageRow;
      try {
        row = this.store.transaction(() => {
          // The image's kernel lives under kernels/: deleting the image keeps it (kernel delete removes it).
          const kernel = this.store.kernels.insert({
            name,
            version: staged.version,
            kernelPath: join(kernelDir, KERNEL_FILES.kernel),
            initrdPath: staged.hasInitrd ? join(kernelDir, KERNEL_FILES.initrd) : null,
            source: 'imported',
          });
          const img = this.store.images.insert({
            name,
            kernelId: kernel.id,
            rootfsPath: join(finalDir, IMAGE_FILES.rootfs),
            sizeBytes,
            source: 'imported',
            isDefault: p.make_default === true || this.store.images.getDefault() === undefined,
          });
          installDirSync(rs, finalDir);
          installedRoot = true;
          installDirSync(ks, kernelDir);
          return img;
        });
      } catch (err) {
        if (installedRoot) {
          try {
            renameSync(finalDir, rs);
          } catch (restoreErr) {
            this.log.error({ err: restoreErr, dir: finalDir }, 'could not remove a half-imported image');
          }
        }
        if (isUniqueViolation(err)) throw alreadyExists(`image or kernel ${name} already exists`);
        throw err;
      }
      rootStage = kernelStage = undefined;
      this.log.info({ image: name, size_bytes: sizeBytes, kernel_version: staged.version }, 'image imported');
      return { image: this.wire(row) };
    } finally {
      this.importing.delete(name);
      for (const d of [rootStage, kernelStage]) if (d) await rm(d, { recursive: true, force: true });
    }
  }

  private checkImportable(name: string): void {
    const b = this.builds.get(name);
    if (b) throw alreadyExists(`image ${name} is being built (operation ${b.tracker.op.id})`);
    if (this.importing.has(name)) throw alreadyExists(`image ${name} is being imported`);
    const pulling = this.ociImages?.pulling(name);
    if (pulling) throw alreadyExists(pulling);
    if (this.store.images.getByName(name)) throw alreadyExists(`image ${name} already exists`);
    if (this.store.kernels.getByName(name)) throw alreadyExists(`a kernel named ${name} already exists`);
  }

  async delete(p: ImageDeleteParams, _ctx: RpcContext): Promise<ImageDeleteResult> {
    const row = this.get(p.name);
    const b = this.builds.get(p.name);
    if (b) throw conflict(`image ${p.name} is being rebuilt (operation ${b.tracker.op.id})`);
    const children = this.childrenOf(row.id);
    if (children.length > 0)
      throw conflict(`image ${p.name} is the base of ${children.join(', ')} (delete them first)`);
    let keptKernel = false;
    // An image VMs still use: StoreError in_use, which the error table makes conflict.
    this.store.transaction(() => {
      this.store.images.delete(row.id);
      // A built image's kernel is part of the image (its files live in the image directory).
      const k = this.store.kernels.getById(row.kernelId);
      if (k && k.source === 'built' && k.name === row.name) {
        if (imagesUsingKernel(this.store, k.id).length === 0) this.store.kernels.delete(k.id);
        else keptKernel = true;
      }
    });
    const dir = join(this.imagesDir, row.name);
    if (keptKernel) {
      // Another image boots this built kernel: keep its files, drop the rest.
      for (const f of [IMAGE_FILES.rootfs, 'manifest.json']) await rm(join(dir, f), { force: true });
    } else {
      await rm(dir, { recursive: true, force: true });
    }
    this.log.info({ image: row.name }, 'image deleted');
    return { name: row.name, deleted: true };
  }

  /**
   * Finish or undo what a daemon that died mid-build, mid-import or mid-pull left (call at start):
   * replacements of an existing image or kernel (their journals: the old files come back unless the
   * new rows committed), then staging directories, and image or kernel directories moved into place
   * whose rows never committed.
   */
  async sweep(): Promise<void> {
    const kernelsDir = join(this.stateDir, 'kernels');
    // First: a *.old-* directory may be an image's only copy until its journal is read.
    const recovered = [
      ...(await recoverReplacements(this.imagesDir, this.store.images, this.log)),
      ...(await recoverReplacements(kernelsDir, this.store.kernels, this.log)),
    ];
    if (recovered.length > 0)
      this.log.warn({ recovered }, 'finished or undid image and kernel replacements a crash interrupted');
    const removed = [
      ...(await sweepStaging(this.imagesDir)),
      ...(await sweepStaging(kernelsDir)),
      ...(await sweepPrepareTmp()),
    ];
    const keep = this.ownedDir();
    const orphans = [
      ...(await sweepOrphanDirs(this.imagesDir, keep)).map((n) => `images/${n}`),
      ...(await sweepOrphanDirs(kernelsDir, keep)).map((n) => `kernels/${n}`),
    ];
    if (removed.length > 0) this.log.info({ removed }, 'removed leftovers of interrupted image work');
    if (orphans.length > 0)
      this.log.warn(
        { removed: orphans },
        'removed image and kernel directories without a row (a crash before commit)',
      );
  }

  /**
   * Whether a directory of STATE/images or STATE/kernels is owned: a row's files are in it (a
   * built kernel kept after its image was deleted lives in images/<name>), an image or kernel has
   * its name, or a build, import or pull of that name is in flight. Names and work in flight are
   * asked live: a build that commits after the file list was read is kept by its name.
   */
  private ownedDir(): (name: string, path: string) => boolean {
    const files = [
      ...this.store.images.list().map((i) => i.rootfsPath),
      ...this.store.kernels
        .list()
        .flatMap((k) => (k.initrdPath !== null ? [k.kernelPath, k.initrdPath] : [k.kernelPath])),
    ];
    return (name, path) => {
      if (this.store.images.getByName(name) || this.store.kernels.getByName(name)) return true;
      if (this.busy(name) !== undefined || this.ociImages?.pulling(name) !== undefined) return true;
      if (this.kernelBusy?.(name) === true) return true;
      return files.some((f) => isInside(path, f));
    };
  }

  // ---- helpers -------------------------------------------------------------------------------

  private get(name: string): ImageRow {
    const row = this.store.images.getByName(name);
    if (!row) throw notFound(`image ${name}`);
    return row;
  }

  private kernelOf(image: ImageRow): KernelRow {
    const k = this.store.kernels.getById(image.kernelId);
    if (!k) throw new ErrorResponse('operation_failed', `image ${image.name}: its kernel row is missing`);
    return k;
  }

  private vmsUsing(imageId: string): string[] {
    return this.store.vms
      .list()
      .filter((v) => v.imageId === imageId)
      .map((v) => v.name)
      .sort();
  }

  private wire(row: ImageRow): Image {
    const parent = row.parentId !== null ? this.store.images.getById(row.parentId)?.name : undefined;
    return imageToWire(row, this.kernelOf(row), this.vmsUsing(row.id), parent);
  }
}
