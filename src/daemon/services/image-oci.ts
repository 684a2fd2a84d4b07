// image.pull.* and image.cache.prune: OCI images (from a registry, an OCI image layout or a
// `docker save` archive) made into banger images. One operation per image, steps resolve →
// download → flatten → ext4 → bootable → record. Blobs go into the shared layer cache
// (src/image/oci/blobs.ts: verified while streaming, so a failed or canceled pull leaves only
// good blobs and partial files a later pull resumes); everything else is built in a staging
// directory beside STATE/images/<name> and moved into place in the same synchronous step that
// records the row, so a failure at any step leaves no image directory and no row.
import { chmod, copyFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ImageCacheService, ImagePullService } from '../../../generated/handlers.gen.ts';
import type {
  Image,
  ImageCachePruneParams,
  ImageCachePruneResult,
  ImagePullBeginParams,
  ImagePullBeginResult,
  ImagePullCancelParams,
  ImagePullCancelResult,
  ImagePullStatusParams,
  ImagePullStatusResult,
  Operation,
} from '../../../generated/types.gen.ts';
import { BlobCache } from '../../image/oci/blobs.ts';
import { layersToExt4 } from '../../image/oci/convert.ts';
import type { OciImage } from '../../image/oci/image.ts';
import { layerInputs } from '../../image/oci/image.ts';
import { importDockerArchive, importOciLayout } from '../../image/oci/import.ts';
import type { ImageConfig } from '../../image/oci/manifest.ts';
import { pullImage, type PullProgress } from '../../image/oci/pull.ts';
import { parseReference } from '../../image/oci/reference.ts';
import { IMAGE_FILES } from '../../image/manifest.ts';
import { DEFAULT_IMAGE_NAME, defaultImageName, type ImageSource } from '../../image/names.ts';
import type { Accel } from '../../engine/driver.ts';
import type { Logger } from '../../log/logger.ts';
import type { OperationRegistry, OperationTracker } from '../../ops/operations.ts';
import { type RpcContext, withOpId } from '../../rpc/context.ts';
import { ErrorResponse, badRequest, conflict, notFound } from '../../rpc/errors.ts';
import {
  type ImageRow,
  type KernelRow,
  type OciRunConfig,
  type Store,
  isUniqueViolation,
} from '../../store/index.ts';
import { parseSize } from '../../vm/sizes.ts';
import { defaultBootable, type BootableFn } from './image-bootable.ts';
import { imageToWire } from './convert.ts';
import { alreadyExists, checkResourceName, copySparse, installDirSync, makeStagingDir } from './kernel.ts';
import { failStep, removeStaging } from './op-failure.ts';

export const PULL_STEPS = ['resolve', 'download', 'flatten', 'ext4', 'bootable', 'record'] as const;

/** Room left in an OCI image's filesystem beyond its content, so packages fit later (sparse). */
export const OCI_HEADROOM_BYTES = 1024 ** 3;
/** The root filesystem label banger's initramfs looks for (src/image/recipe.ts rootLabel). */
export const OCI_ROOT_LABEL = 'banger-root';
/** Written beside the root filesystem: where the image came from and the blobs it uses. */
export const OCI_RECORD_FILE = 'oci.json';

/** What the daemon wires in; the functions are injectable so unit tests run without a registry. */
export interface OciImageDeps {
  store: Store;
  ops: OperationRegistry;
  log: Logger;
  stateDir: string;
  /** The shared layer cache (CACHE/oci/blobs). */
  blobDir: string;
  /**
   * The kernel (with its banger initramfs) OCI images boot: the default image's. May build the
   * default image first (its own operation), reporting progress lines.
   */
  defaultKernel: (signal: AbortSignal, onProgress: (line: string) => void) => Promise<KernelRow>;
  /** Why `name` is taken by image work outside this service (a build or a raw import), if it is. */
  busyElsewhere?: (name: string) => string | undefined;
  /** Replaces the image's apt sources while making it bootable (config [images] apt_sources). */
  aptSources?: () => string | undefined;
  /** The accelerator the prepare VM runs with (default: the prepare module probes). */
  accel?: () => Promise<Accel>;
  /** Defaults: makeBootable from src/image/prepare.ts and the OCI library. */
  bootable?: BootableFn;
  pull?: typeof pullImage;
  importLayout?: typeof importOciLayout;
  importArchive?: typeof importDockerArchive;
  convert?: typeof layersToExt4;
}

interface RunningPull {
  name: string;
  source: ImageSource;
  params: ImagePullBeginParams;
  /** params.size in bytes (parsed once, in begin). */
  sizeBytes: number | undefined;
  tracker: OperationTracker;
  settled: Promise<void>;
}

/** The run defaults of an image config, as stored with the image. */
export function ociRunConfig(c: ImageConfig): OciRunConfig {
  const out: OciRunConfig = { env: [...c.Env] };
  if (c.WorkingDir) out.working_dir = c.WorkingDir;
  if (c.User) out.user = c.User;
  if (c.Entrypoint && c.Entrypoint.length > 0) out.entrypoint = [...c.Entrypoint];
  if (c.Cmd && c.Cmd.length > 0) out.cmd = [...c.Cmd];
  return out;
}

const MIB = 1024 * 1024;
function mib(n: number): string {
  return `${(n / MIB).toFixed(1)} MiB`;
}
function formatBytes(n: number): string {
  return n >= 1024 * MIB ? `${(n / (1024 * MIB)).toFixed(2)} GiB` : mib(n);
}

/** The download step's detail for one progress event: this layer's bytes and the overall bytes. */
export function layerProgressLine(p: Extract<PullProgress, { kind: 'layer' }>, layers: number): string {
  return (
    `layer ${p.index + 1}/${layers} ${p.digest.slice(0, 19)}: ${mib(p.done)} of ${mib(p.total)}; ` +
    `overall ${mib(p.overallDone)} of ${mib(p.overallTotal)}`
  );
}

function sourceOf(p: ImagePullBeginParams): ImageSource {
  const given = [p.reference, p.oci_layout, p.docker_archive].filter((v) => v !== undefined).length;
  if (given !== 1) throw badRequest('give exactly one of reference, oci_layout and docker_archive');
  if (p.reference !== undefined) {
    if (p.tag !== undefined) throw badRequest('tag goes with oci_layout or docker_archive, not reference');
    try {
      parseReference(p.reference);
    } catch (err) {
      throw badRequest((err as Error).message);
    }
    return { kind: 'registry', reference: p.reference };
  }
  if (p.insecure === true) throw badRequest('insecure only applies to a registry reference');
  const tag = p.tag !== undefined ? { tag: p.tag } : {};
  if (p.oci_layout !== undefined) return { kind: 'oci_layout', path: p.oci_layout, ...tag };
  return { kind: 'docker_archive', path: p.docker_archive ?? '', ...tag };
}

function describe(s: ImageSource): string {
  if (s.kind === 'registry') return s.reference;
  const what = s.kind === 'oci_layout' ? 'OCI layout' : 'docker archive';
  return `${what} ${s.path}${s.tag !== undefined ? ` (${s.tag})` : ''}`;
}

export class OciImageService {
  private readonly store: Store;
  private readonly ops: OperationRegistry;
  private readonly log: Logger;
  private readonly imagesDir: string;
  private readonly blobDir: string;
  private readonly deps: OciImageDeps;
  /** Running pulls and OCI imports, by image name. */
  private readonly running = new Map<string, RunningPull>();

  constructor(deps: OciImageDeps) {
    this.deps = deps;
    this.store = deps.store;
    this.ops = deps.ops;
    this.log = deps.log;
    this.imagesDir = join(deps.stateDir, 'images');
    this.blobDir = deps.blobDir;
  }

  /** image.pull.*, at its wire path. */
  readonly pull: ImagePullService = {
    begin: (p, ctx) => this.begin(p, ctx),
    status: (p) => this.status(p),
    cancel: (p) => this.cancel(p),
  };

  /** image.cache.*, at its wire path. */
  readonly cache: ImageCacheService = {
    prune: (p) => this.prune(p),
  };

  /** Why `name` is taken by a pull in flight, if it is (image builds and imports ask). */
  pulling(name: string): string | undefined {
    const r = this.running.get(name);
    return r ? `image ${name} is being pulled (operation ${r.tracker.op.id})` : undefined;
  }

  async begin(p: ImagePullBeginParams, ctx: RpcContext): Promise<ImagePullBeginResult> {
    const source = sourceOf(p);
    const name = p.name ?? defaultImageName(source);
    checkResourceName(name, 'image');
    if (name === DEFAULT_IMAGE_NAME) {
      // Its kernel is the one OCI images boot: with no default image the pull would build it.
      throw conflict(
        `${name} is the name of banger's built default image (its kernel boots OCI images); choose another name`,
      );
    }
    let sizeBytes: number | undefined;
    if (p.size !== undefined) {
      try {
        sizeBytes = parseSize(p.size, 'size');
      } catch (err) {
        throw badRequest((err as Error).message);
      }
    }
    if (source.kind !== 'registry') {
      const st = await stat(source.path).catch(() => undefined);
      if (!st)
        throw notFound(`${source.kind === 'oci_layout' ? 'OCI layout' : 'docker archive'} ${source.path}`);
      if (source.kind === 'oci_layout' && !st.isDirectory())
        throw badRequest(`${source.path} is not a directory (an OCI layout is one)`);
      if (source.kind === 'docker_archive' && !st.isFile())
        throw badRequest(`${source.path} is not a file (docker save writes a tar file)`);
    }
    this.checkName(name, p.name !== undefined);
    const tracker = this.ops.begin(ctx.opId, 'image.pull', 'image.pull.begin', { image: name });
    let settle: () => void = () => undefined;
    const rp: RunningPull = {
      name,
      source,
      params: p,
      sizeBytes,
      tracker,
      settled: new Promise<void>((resolve) => (settle = resolve)),
    };
    this.running.set(name, rp);
    // Run in the operation's own async context, so every log line of the pull carries its op id.
    void withOpId(ctx.opId, 'image.pull.begin', () => this.run(rp)).finally(() => {
      this.running.delete(name);
      settle();
    });
    return { operation_id: ctx.opId, name };
  }

  private checkName(name: string, named: boolean): void {
    const hint = named ? '' : ' (choose another name with --name)';
    const r = this.running.get(name);
    if (r) throw conflict(`image ${name} is already being pulled (operation ${r.tracker.op.id})${hint}`);
    const elsewhere = this.deps.busyElsewhere?.(name);
    if (elsewhere) throw conflict(elsewhere + hint);
    if (this.store.images.getByName(name)) throw alreadyExists(`image ${name} already exists${hint}`);
  }

  async status(p: ImagePullStatusParams): Promise<ImagePullStatusResult> {
    const op = this.findOp(p.operation_id);
    const r: ImagePullStatusResult = { operation: structuredClone(op) };
    if (op.state === 'succeeded' && op.image !== undefined) {
      const row = this.store.images.getByName(op.image);
      if (row) {
        const img = this.wire(row);
        if (img) r.image = img;
      }
    }
    return r;
  }

  async cancel(p: ImagePullCancelParams): Promise<ImagePullCancelResult> {
    const op = this.findOp(p.operation_id);
    const rp = [...this.running.values()].find((r) => r.tracker.op.id === op.id);
    if (op.state !== 'running' || !rp) throw conflict(`image pull ${op.id} already ${op.state}`);
    this.log.info({ operation_id: op.id, image: rp.name }, 'image pull cancel requested');
    rp.tracker.abort.abort(new ErrorResponse('canceled', 'canceled by user'));
    await rp.settled;
    return { operation: structuredClone(rp.tracker.op) };
  }

  async prune(p: ImageCachePruneParams): Promise<ImageCachePruneResult> {
    const busy = [...this.running.values()];
    if (busy.length > 0) {
      // Their blobs are in the cache but not recorded yet: a prune now would take them away.
      throw conflict(
        `image pulls are running (${busy.map((r) => `${r.name}: ${r.tracker.op.id}`).join(', ')}); prune once they end`,
      );
    }
    const keep = new Set<string>();
    for (const row of this.store.images.list()) for (const d of row.ociBlobs ?? []) keep.add(d);
    const cache = new BlobCache(this.blobDir);
    let kept = 0;
    for (const d of keep) if (await cache.has(d)) kept++;
    const dryRun = p.dry_run === true;
    const r = await cache.prune(keep, { dryRun });
    this.log.info(
      { dry_run: dryRun, removed: r.removed.length, partials: r.partials.length, bytes: r.bytes, kept },
      dryRun ? 'image cache prune (dry run)' : 'image cache pruned',
    );
    return {
      dry_run: dryRun,
      removed: r.removed.map((b) => ({ digest: b.digest, size_bytes: b.size })),
      partials: r.partials,
      bytes: r.bytes,
      kept,
    };
  }

  // ---- the operation -------------------------------------------------------------------------

  private async run(rp: RunningPull): Promise<void> {
    const { tracker, name, source, params } = rp;
    const finalDir = join(this.imagesDir, name);
    let staging: string | undefined;
    try {
      this.log.info({ image: name, source: describe(source) }, 'image pull started');
      staging = await makeStagingDir(finalDir, 'import');
      const image = await this.fetch(rp);
      const rootfs = join(staging, IMAGE_FILES.rootfs);
      const twin = await this.preparedTwin(rp, image.digest);
      let kernel: KernelRow;
      if (twin) {
        kernel = await this.copyPrepared(rp, twin, staging);
      } else {
        await this.toExt4(rp, image, rootfs, staging);
        kernel = await this.makeBootable(rp, rootfs, staging);
      }
      tracker.stepStart('record');
      const row = await this.record(rp, image, kernel, staging);
      staging = undefined;
      tracker.stepDone('record', { detail: `image ${name}: ${formatBytes(row.sizeBytes)}` });
      tracker.succeed();
      this.log.info(
        { image: name, digest: image.digest, size_bytes: row.sizeBytes, default: row.isDefault },
        'image pulled',
      );
    } catch (err) {
      const { error: e, canceled } = failStep(tracker, err, 'image pull');
      await removeStaging(staging, this.log, 'could not remove a partial image');
      tracker.fail(e);
      if (canceled) this.log.info({ image: name }, 'image pull canceled');
      else this.log.error({ image: name, err, params }, 'image pull failed');
    }
  }

  /** resolve + download: the image's blobs, verified, in the shared cache. */
  private async fetch(rp: RunningPull): Promise<OciImage> {
    const { tracker: t, source, params } = rp;
    const signal = t.signal;
    const cacheDir = this.blobDir;
    const platform = params.platform !== undefined ? { platform: params.platform } : {};
    t.stepStart('resolve', describe(source));
    if (source.kind === 'registry') {
      let layers = 0;
      const image = await (this.deps.pull ?? pullImage)({
        ref: source.reference,
        cacheDir,
        signal,
        ...platform,
        ...(params.insecure === true ? { insecure: true } : {}),
        onProgress: (ev) => {
          try {
            if (ev.kind === 'resolved') {
              layers = ev.layers;
              t.stepDone('resolve', { detail: `${ev.message}; ${ev.digest}` });
              t.stepStart('download', `${layers} layers`);
            } else if (ev.kind === 'layer') {
              t.stepProgress('download', layerProgressLine(ev, layers));
            } else {
              t.progress(`retry ${ev.attempt} of ${ev.what} in ${ev.delayMs} ms: ${ev.error}`);
            }
          } catch (err) {
            this.log.warn({ err }, 'could not record image pull progress');
          }
        },
      });
      signal.throwIfAborted();
      const total = image.layers.reduce((n, l) => n + l.size, 0);
      t.stepDone('download', { detail: `${image.layers.length} layers, ${mib(total)}` });
      return image;
    }
    const read = source.kind === 'oci_layout' ? this.deps.importLayout : this.deps.importArchive;
    const importer = read ?? (source.kind === 'oci_layout' ? importOciLayout : importDockerArchive);
    const image = await importer(source.path, {
      cacheDir,
      signal,
      ...platform,
      ...(source.tag !== undefined ? { tag: source.tag } : {}),
    });
    signal.throwIfAborted();
    t.stepDone('resolve', {
      detail: `${describe(source)}: ${image.layers.length} layers; ${image.digest}`,
    });
    t.stepSkipped('download', 'a local source: its blobs were copied into the layer cache while reading it');
    return image;
  }

  /** flatten + ext4: the layers → a sparse ext4 root filesystem in the staging directory. */
  private async toExt4(rp: RunningPull, image: OciImage, rootfs: string, staging: string): Promise<void> {
    const t = rp.tracker;
    const size = rp.sizeBytes !== undefined ? { sizeBytes: rp.sizeBytes } : {};
    t.stepStart('flatten', `${image.layers.length} layers`);
    let inExt4 = false;
    const r = await (this.deps.convert ?? layersToExt4)(layerInputs(image), {
      imagePath: rootfs,
      workDir: staging,
      label: OCI_ROOT_LABEL,
      headroomBytes: OCI_HEADROOM_BYTES,
      ...size,
      signal: t.signal,
      onStage: (stage, message) => {
        try {
          if (stage === 'flatten') t.stepProgress('flatten', message);
          else if (!inExt4) {
            inExt4 = true;
            t.stepDone('flatten');
            t.stepStart('ext4', message);
          }
        } catch (err) {
          this.log.warn({ err }, 'could not record image pull progress');
        }
      },
    });
    t.signal.throwIfAborted();
    if (!inExt4) t.stepDone('flatten');
    t.stepDone('ext4', {
      detail: `${formatBytes(r.size)} (${formatBytes(r.allocated)} allocated), ${r.entries} entries`,
    });
  }

  /** bootable: banger's guest bits, and init/sshd/agent installed when the image lacks them. */
  private async makeBootable(rp: RunningPull, rootfs: string, staging: string): Promise<KernelRow> {
    const t = rp.tracker;
    t.stepStart('bootable');
    const progress = (line: string): void => {
      try {
        t.stepProgress('bootable', line);
      } catch (err) {
        this.log.warn({ err }, 'could not record image pull progress');
      }
    };
    const kernel = await this.deps.defaultKernel(t.signal, progress);
    t.signal.throwIfAborted();
    if (kernel.initrdPath === null) {
      throw new ErrorResponse(
        'operation_failed',
        `the default kernel ${kernel.name} has no initramfs; OCI images boot with banger's (build the default image: banger image build)`,
      );
    }
    const workDir = join(staging, 'prepare');
    const bootable = this.deps.bootable ?? defaultBootable;
    const aptSources = this.deps.aptSources?.();
    const accel = this.deps.accel ? { accel: await this.deps.accel() } : {};
    const r = await bootable({
      rootfsPath: rootfs,
      kernelPath: kernel.kernelPath,
      initrdPath: kernel.initrdPath,
      workDir,
      signal: t.signal,
      onProgress: progress,
      ...accel,
      ...(aptSources !== undefined ? { aptSources } : {}),
    });
    t.signal.throwIfAborted();
    await writeFile(join(staging, 'bootable.log'), r.log);
    await rm(workDir, { recursive: true, force: true });
    const installed = r.installed.length > 0 ? `installed ${r.installed.join(', ')}` : 'nothing to install';
    t.stepDone('bootable', { detail: `${r.family}: ${installed}; kernel ${kernel.name}` });
    return kernel;
  }

  /**
   * An image already made from the same digest (and size), whose prepared root filesystem can be
   * copied instead of converting and booting a prepare VM again (bootable is cached per digest).
   */
  private async preparedTwin(rp: RunningPull, digest: string): Promise<ImageRow | undefined> {
    const size = rp.sizeBytes;
    for (const r of this.store.images.list()) {
      if (r.source !== 'oci' || r.digest !== digest) continue;
      if (size !== undefined && r.sizeBytes !== size) continue;
      if (!this.store.kernels.getById(r.kernelId)) continue;
      if (
        await stat(r.rootfsPath).then(
          (s) => s.isFile(),
          () => false,
        )
      )
        return r;
    }
    return undefined;
  }

  /** flatten, ext4 and bootable done once already for this digest: copy that image's result. */
  private async copyPrepared(rp: RunningPull, twin: ImageRow, staging: string): Promise<KernelRow> {
    const t = rp.tracker;
    const why = `image ${twin.name} was made from the same digest`;
    t.stepSkipped('flatten', why);
    t.stepSkipped('ext4', why);
    t.stepStart('bootable', `copying ${twin.name}'s prepared root filesystem`);
    await copySparse(twin.rootfsPath, join(staging, IMAGE_FILES.rootfs), t.signal);
    const log = join(dirname(twin.rootfsPath), 'bootable.log');
    await copyFile(log, join(staging, 'bootable.log')).catch(() => undefined);
    t.signal.throwIfAborted();
    const kernel = this.store.kernels.getById(twin.kernelId);
    if (!kernel) throw new ErrorResponse('operation_failed', `image ${twin.name}: its kernel row is missing`);
    t.stepDone('bootable', {
      detail: `copied from ${twin.name} (same digest, prepared before); kernel ${kernel.name}`,
    });
    return kernel;
  }

  /** record: the row, and the files moved into place, as one synchronous step. */
  private async record(
    rp: RunningPull,
    image: OciImage,
    kernel: KernelRow,
    staging: string,
  ): Promise<ImageRow> {
    const { name, params } = rp;
    const finalDir = join(this.imagesDir, name);
    const rootfs = join(staging, IMAGE_FILES.rootfs);
    // A base image is read-only from here on (VM disks are overlays on it), as built ones are.
    await chmod(rootfs, 0o444);
    const sizeBytes = (await stat(rootfs)).size;
    const ociConfig = ociRunConfig(image.config);
    const reference = image.reference ?? (rp.source.kind !== 'registry' ? rp.source.tag : undefined);
    await writeFile(
      join(staging, OCI_RECORD_FILE),
      JSON.stringify(
        {
          source: describe(rp.source),
          reference: reference ?? null,
          digest: image.digest,
          index_digest: image.indexDigest ?? null,
          platform: image.platform,
          config: ociConfig,
          blobs: image.blobs,
          kernel: kernel.name,
        },
        null,
        2,
      ) + '\n',
    );
    rp.tracker.signal.throwIfAborted();
    let installed = false;
    try {
      return this.store.transaction(() => {
        if (this.store.images.getByName(name)) throw alreadyExists(`image ${name} already exists`);
        const row = this.store.images.insert({
          name,
          kernelId: kernel.id,
          rootfsPath: join(finalDir, IMAGE_FILES.rootfs),
          sizeBytes,
          source: 'oci',
          digest: image.digest,
          reference: reference ?? null,
          ociConfig,
          ociBlobs: image.blobs,
          isDefault: params.make_default === true,
        });
        installDirSync(staging, finalDir);
        installed = true;
        return row;
      });
    } catch (err) {
      if (installed) {
        // The transaction rolled back after the move: take the files back out.
        await rm(finalDir, { recursive: true, force: true }).catch((rmErr: unknown) =>
          this.log.error({ err: rmErr, dir: finalDir }, 'could not remove a half-recorded image'),
        );
      }
      if (isUniqueViolation(err)) throw alreadyExists(`image ${name} already exists`);
      throw err;
    }
  }

  // ---- helpers -------------------------------------------------------------------------------

  private findOp(id: string): Operation {
    const op = this.ops.find(id);
    if (!op || op.kind !== 'image.pull') throw notFound(`image pull operation ${id}`);
    return op;
  }

  private wire(row: ImageRow): Image | undefined {
    const k = this.store.kernels.getById(row.kernelId);
    if (!k) return undefined;
    const users = this.store.vms
      .list()
      .filter((v) => v.imageId === row.id)
      .map((v) => v.name)
      .sort();
    return imageToWire(row, k, users);
  }
}
