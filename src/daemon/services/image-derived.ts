// Derived images (`image build NAME --from BASE --packages a,b --run FILE`): the root filesystem
// is a qcow2 overlay on the base's (backing file, raw or qcow2: it shares the base's data and
// costs what it adds), prepared in a short-lived VM (src/image/prepare.ts) that installs the
// packages with the base's own apt and runs the script. The cache key (derivedCacheKey) is kept
// in the image's recipe_hash: rebuilding the same thing is a cache hit.
import { join } from 'node:path';
import type { Accel } from '../../engine/driver.ts';
import { run } from '../../image/exec.ts';
import { derivedCacheKey, generatePrepareScript, checkPackageName } from '../../image/prepare-script.ts';
import { runPrepare } from '../../image/prepare.ts';
import { ErrorResponse, badRequest, notFound } from '../../rpc/errors.ts';
import type { ImageRow, KernelRow, Store } from '../../store/index.ts';

/** The derived image's root filesystem file (in its image directory). */
export const DERIVED_ROOTFS = 'rootfs.qcow2';
/** Room a derived build gets beyond its base's size (the guest grows into its VM disk later). */
export const DERIVED_HEADROOM_BYTES = 1024 * 1024 * 1024;

export interface DerivedRequest {
  name: string;
  from: string;
  packages?: string[];
  runScript?: string;
}

export interface DerivedPlan {
  name: string;
  base: ImageRow;
  kernel: KernelRow;
  packages: string[];
  script: string;
  key: string;
}

/** The base's identity in the cache key: OCI digest, else its own recipe/derived hash, else its id. */
export function baseIdentity(base: ImageRow): string {
  if (base.digest) return base.digest;
  if (base.recipeHash) return `recipe:${base.recipeHash}`;
  return `image:${base.id}`;
}

/** Validate a derived build request against the store; throws wire errors. */
export function planDerived(store: Store, r: DerivedRequest): DerivedPlan {
  if (r.from === r.name) throw badRequest(`image ${r.name} cannot be derived from itself`);
  const base = store.images.getByName(r.from);
  if (!base) throw notFound(`image ${r.from}`);
  const kernel = store.kernels.getById(base.kernelId);
  if (!kernel) throw new ErrorResponse('operation_failed', `image ${base.name}: its kernel row is missing`);
  if (!kernel.initrdPath)
    throw badRequest(
      `image ${base.name}: its kernel ${kernel.name} has no initramfs (a derived build boots banger's)`,
    );
  const packages = [...new Set(r.packages ?? [])].sort();
  for (const p of packages) {
    try {
      checkPackageName(p);
    } catch (e) {
      throw badRequest((e as Error).message);
    }
  }
  const script = r.runScript ?? '';
  if (packages.length === 0 && script.trim() === '')
    throw badRequest('image build --from needs --packages or --run (or both)');
  const key = derivedCacheKey({ base: baseIdentity(base), packages, script });
  return { name: r.name, base, kernel, packages, script, key };
}

/** Is `existing` exactly what `plan` would build (a cache hit)? */
export function isCacheHit(existing: ImageRow | undefined, plan: DerivedPlan): boolean {
  return (
    existing !== undefined &&
    existing.source === 'derived' &&
    existing.recipeHash === plan.key &&
    existing.parentId === plan.base.id
  );
}

async function virtualSize(path: string, format: string, signal?: AbortSignal): Promise<number> {
  const { stdout } = await run(['qemu-img', 'info', '--output=json', '-U', '-f', format, path], { signal });
  const v = (JSON.parse(stdout) as { 'virtual-size'?: number })['virtual-size'];
  if (typeof v !== 'number') throw new Error(`qemu-img info ${path}: no virtual-size`);
  return v;
}

export interface DerivedBuildOptions {
  plan: DerivedPlan;
  /** The image's staging directory: the overlay and the prepare log (prepare-serial.log) go here. */
  staging: string;
  aptSources?: string;
  accel?: Accel;
  signal?: AbortSignal;
  step: <T>(name: string, fn: () => Promise<T>, done?: (r: T) => string) => Promise<T>;
  progress: (name: string, line: string) => void;
}

/** Overlay on the base + a prepare VM: the files of a derived image, in staging. */
export async function buildDerived(o: DerivedBuildOptions): Promise<{ path: string; sizeBytes: number }> {
  const { plan, signal } = o;
  const path = join(o.staging, DERIVED_ROOTFS);
  const baseFormat = plan.base.rootfsFormat === 'qcow2' ? 'qcow2' : 'raw';
  const sizeBytes = await o.step(
    'overlay',
    async () => {
      const size = (await virtualSize(plan.base.rootfsPath, baseFormat, signal)) + DERIVED_HEADROOM_BYTES;
      await run(
        [
          'qemu-img',
          'create',
          '-q',
          '-f',
          'qcow2',
          '-b',
          plan.base.rootfsPath,
          '-F',
          baseFormat,
          path,
          String(size),
        ],
        { signal },
      );
      return size;
    },
    () => `qcow2 on ${plan.base.name} (${baseFormat})`,
  );
  await o.step(
    'prepare',
    () =>
      runPrepare({
        disk: { path, format: 'qcow2' },
        kernelPath: plan.kernel.kernelPath,
        initrdPath: plan.kernel.initrdPath ?? '',
        workDir: o.staging,
        script: generatePrepareScript({
          install: plan.packages,
          aptSources: o.aptSources,
          customize: false,
          userScript: plan.script !== '',
          growRoot: true,
        }),
        files: plan.script !== '' ? [{ path: 'run-script', content: plan.script, mode: 0o755 }] : [],
        signal,
        accel: o.accel,
        onProgress: (l) => o.progress('prepare', l),
      }),
    (r) =>
      `${plan.packages.length} packages${plan.script ? ' and the script' : ''} in ${Math.round(r.durationMs / 1000)} s`,
  );
  return { path, sizeBytes };
}
