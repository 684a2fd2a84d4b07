// kernel.catalog and kernel.pull: the kernels of the configured Debian archive (the default image
// build's sources, read through banger's private apt index under the cache directory) and the
// fetch of one into STATE/kernels/<name>/ (vmlinuz, initrd.img, modules/: the release's tree). A pull is an
// operation with named steps (op show/trace see it) whose steps are also streamed to the caller;
// the caller hanging up cancels it. Files are assembled in a staging directory and moved into
// place in the same synchronous step that records the row, so a failure leaves nothing behind (and
// a forced pull keeps the old kernel until the new one is recorded, even across a crash:
// dir-replace.ts).
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  CatalogKernel,
  KernelCatalogResult,
  KernelPullFrame,
  KernelPullParams,
  KernelPullResult,
} from '../../../generated/types.gen.ts';
import { prepareApt, type AptContext } from '../../image/apt.ts';
import {
  archiveError,
  defaultKernelName,
  fetchKernel,
  findInCatalog,
  readCatalog,
  resolveWithChecksum,
  sourceUris,
  type CatalogEntry,
} from '../../image/kernel-catalog.ts';
import { DEFAULT_RECIPE, sourcesList, type ImageRecipe } from '../../image/recipe.ts';
import type { Logger } from '../../log/logger.ts';
import type { OperationRegistry, OperationTracker } from '../../ops/operations.ts';
import type { StreamReply } from '../../rpc/adapters.ts';
import { type RpcContext, withOpId } from '../../rpc/context.ts';
import { ErrorResponse, conflict, toErrorResponse } from '../../rpc/errors.ts';
import { type KernelRow, type Store, isUniqueViolation } from '../../store/index.ts';
import type { CrashPoint } from '../../vm/crash.ts';
import { kernelToWire } from './convert.ts';
import { finishReplace, replaceDir, type Replaced } from './dir-replace.ts';
import {
  KERNEL_FILES,
  alreadyExists,
  checkResourceName,
  imagesUsingKernel,
  isInside,
  makeStagingDir,
} from './kernel.ts';
import { failStep, removeStaging } from './op-failure.ts';

export interface KernelPullDeps {
  store: Store;
  ops: OperationRegistry;
  log: Logger;
  stateDir: string;
  /** The builder's cache directory: the private apt state and the .deb cache live here. */
  cacheDir: string;
  /** sources.list text of the archive (default: the default recipe's, deb.debian.org bookworm). */
  aptSources?: string;
  /** The initramfs modules and labels (default: the default recipe's). */
  recipe?: ImageRecipe;
  /** TEST-ONLY crash points (`kernel.replace.<step>`: dir-replace.ts); off by default. */
  crash?: CrashPoint | undefined;
}

/** A queue of frames filled by the pull and drained by the server; ends with the pull. */
class FrameQueue<F> implements AsyncIterable<F> {
  private readonly items: F[] = [];
  private wake: (() => void) | undefined;
  private end: { error?: unknown } | undefined;

  push(f: F): void {
    this.items.push(f);
    this.notify();
  }

  close(error?: unknown): void {
    this.end = error === undefined ? {} : { error };
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<F, void, undefined> {
    for (;;) {
      const next = this.items.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.end) {
        if ('error' in this.end) throw this.end.error;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

export class KernelPulls {
  private readonly d: KernelPullDeps;
  private readonly sources: string;
  private readonly recipe: ImageRecipe;
  private readonly kernelsDir: string;
  /** apt calls one at a time: two `apt-get update` on one private state would fight for its lock. */
  private aptLock: Promise<unknown> = Promise.resolve();
  /** Local names with a pull in flight. */
  private readonly pulling = new Set<string>();

  constructor(deps: KernelPullDeps) {
    this.d = deps;
    this.recipe = deps.recipe ?? DEFAULT_RECIPE;
    this.sources = deps.aptSources ?? sourcesList(this.recipe);
    this.kernelsDir = join(deps.stateDir, 'kernels');
  }

  /** Whether a pull of the local name `name` is in flight. */
  busy(name: string): boolean {
    return this.pulling.has(name);
  }

  async catalog(ctx: RpcContext): Promise<KernelCatalogResult> {
    const entries = await this.withApt((apt) => this.read(apt, ctx.signal));
    return { archive: this.archiveLines(), kernels: entries.map((e) => this.wireEntry(e)) };
  }

  async pull(p: KernelPullParams, ctx: RpcContext): Promise<StreamReply<KernelPullFrame, KernelPullResult>> {
    if (p.as !== undefined) {
      checkResourceName(p.as, 'kernel');
      this.checkFree(p.as, p.force === true);
    }
    const frames = new FrameQueue<KernelPullFrame>();
    const tracker = this.d.ops.begin(ctx.opId, 'kernel.pull', 'kernel.pull');
    // The caller hanging up (the server aborts ctx.signal) cancels the pull.
    const onHangUp = (): void => tracker.abort.abort(new ErrorResponse('canceled', 'kernel pull canceled'));
    ctx.signal.addEventListener('abort', onHangUp, { once: true });
    let result: KernelPullResult | undefined;
    void withOpId(ctx.opId, 'kernel.pull', () => this.run(p, tracker, frames))
      .then(
        (r) => {
          result = r;
          frames.close();
        },
        (err: unknown) => frames.close(toErrorResponse(err, ctx.opId)),
      )
      .finally(() => ctx.signal.removeEventListener('abort', onHangUp));
    return {
      frames,
      get result(): KernelPullResult {
        if (!result) throw new Error('kernel.pull: no result');
        return result;
      },
    };
  }

  private async run(
    p: KernelPullParams,
    tracker: OperationTracker,
    frames: FrameQueue<KernelPullFrame>,
  ): Promise<KernelPullResult> {
    const { signal } = tracker;
    const times = new Map<string, number>();
    const start = (step: string, detail?: string): void => {
      times.set(step, performance.now());
      tracker.stepStart(step, detail);
      frames.push({ step, phase: 'start', ...(detail ? { detail } : {}) });
    };
    const done = (step: string, detail?: string): void => {
      const ms = Math.round(performance.now() - (times.get(step) ?? performance.now()));
      tracker.stepDone(step, { durationMs: ms, ...(detail ? { detail } : {}) });
      frames.push({ step, phase: 'done', duration_ms: ms, ...(detail ? { detail } : {}) });
    };
    let name: string | undefined;
    let staging: string | undefined;
    try {
      // The whole fetch holds the apt lock: apt-get download reads the index a concurrent
      // catalog's update would be rewriting. Pulls are rare; a catalog call waits.
      const { entry, fetched } = await this.withApt(async (apt) => {
        start('resolve', `apt-get update: ${this.uris()}`);
        const entries = await this.read(apt, signal);
        const found = findInCatalog(entries, p.name);
        if (!found.entry) {
          const near = found.suggestions;
          throw new ErrorResponse(
            'not_found',
            `kernel ${p.name} not found in the archive (${this.uris()})` +
              (near.length > 0
                ? `; close matches: ${near.join(', ')}`
                : '; banger kernel catalog lists them'),
          );
        }
        const entry = found.entry;
        name = p.as ?? defaultKernelName(entry.release);
        checkResourceName(name, 'kernel');
        this.checkFree(name, p.force === true);
        this.pulling.add(name);
        const busybox = await resolveWithChecksum(apt, this.recipe.busyboxPackage, signal);
        done('resolve', `${p.name} → ${entry.package} ${entry.version}`);
        staging = await makeStagingDir(join(this.kernelsDir, name), 'import');
        const work = join(staging, '.work');
        const k = await fetchKernel({
          apt,
          entry,
          busybox,
          debsDir: join(this.d.cacheDir, 'debs'),
          workDir: work,
          initrdOut: join(staging, KERNEL_FILES.initrd),
          recipe: this.recipe,
          signal,
          onStep: (step, phase, detail) => (phase === 'start' ? start(step, detail) : done(step, detail)),
        });
        // The layout the row points at: vmlinuz, initrd.img and the modules tree.
        await rename(k.vmlinuz, join(staging, KERNEL_FILES.kernel));
        await rename(k.modulesDir, join(staging, 'modules'));
        await rm(work, { recursive: true, force: true });
        return { entry, fetched: k };
      });
      signal.throwIfAborted();
      if (name === undefined || staging === undefined) throw new Error('kernel.pull: no name');
      start('record');
      const row = await this.record(name, entry, staging, p.force === true);
      staging = undefined;
      done('record', `kernel ${row.name} (${row.version})`);
      tracker.succeed();
      this.d.log.info({ kernel: row.name, package: entry.package, version: entry.version }, 'kernel pulled');
      return {
        kernel: this.wire(row),
        package: entry.package,
        version: entry.version,
        cached: fetched.cached,
      };
    } catch (err) {
      const { error: e, canceled } = failStep(tracker, err, 'kernel pull');
      // Partial files go before the operation says it ended: whoever sees it ended sees no trace.
      const dir = staging;
      staging = undefined;
      await removeStaging(dir, this.d.log, 'could not remove a partial kernel pull');
      tracker.fail(e);
      if (canceled) this.d.log.info({ kernel: name ?? p.name }, 'kernel pull canceled');
      else this.d.log.error({ kernel: name ?? p.name, err }, 'kernel pull failed');
      throw e;
    } finally {
      if (name !== undefined) this.pulling.delete(name);
    }
  }

  /** Record the row and move the files into place as one step (replacing a forced kernel). */
  private async record(
    name: string,
    entry: CatalogEntry,
    staging: string,
    force: boolean,
  ): Promise<KernelRow> {
    const finalDir = join(this.kernelsDir, name);
    let replaced: KernelRow | undefined;
    let installed: Replaced<KernelRow>;
    try {
      // The old directory is set aside, not removed, until the row commits (a crash keeps it).
      installed = replaceDir({
        store: this.d.store,
        table: this.d.store.kernels,
        log: this.d.log,
        finalDir,
        staging,
        crash: this.d.crash,
        kind: 'kernel',
        rows: () => {
          const old = this.d.store.kernels.getByName(name);
          if (old) {
            if (!force) throw alreadyExists(`kernel ${name} already exists (force replaces it)`);
            // A kernel an image boots: StoreError in_use, which the error table makes conflict.
            this.d.store.kernels.delete(old.id);
            replaced = old;
          }
          return this.d.store.kernels.insert({
            name,
            version: entry.release,
            kernelPath: join(finalDir, KERNEL_FILES.kernel),
            initrdPath: join(finalDir, KERNEL_FILES.initrd),
            modulesDir: join(finalDir, 'modules'),
            // `built`: from Debian packages, by banger (the wire's meaning of the word).
            source: 'built',
          });
        },
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw alreadyExists(`kernel ${name} already exists`);
      throw err;
    }
    await finishReplace(installed, this.d.log, this.d.crash, 'kernel');
    // A replaced kernel's files outside its own directory (a built image's kernel lives there).
    if (replaced) {
      for (const f of [replaced.kernelPath, replaced.initrdPath]) {
        if (f !== null && isInside(this.d.stateDir, f) && !isInside(finalDir, f)) {
          await rm(f, { force: true }).catch(() => undefined);
        }
      }
    }
    return installed.rows;
  }

  /** Throws unless a pull may record `name` (free, or forced over a kernel no image uses). */
  private checkFree(name: string, force: boolean): void {
    if (this.pulling.has(name)) throw conflict(`kernel ${name} is already being pulled`);
    const row = this.d.store.kernels.getByName(name);
    if (!row) return;
    if (!force) throw alreadyExists(`kernel ${name} already exists (--force replaces it)`);
    const users = imagesUsingKernel(this.d.store, row.id);
    if (users.length > 0) throw conflict(`kernel ${name} is used by ${users.join(', ')}`);
  }

  private async read(apt: AptContext, signal: AbortSignal): Promise<CatalogEntry[]> {
    try {
      return await readCatalog(apt, signal);
    } catch (err) {
      if (signal.aborted) throw err;
      throw archiveError(err, this.sources);
    }
  }

  private async withApt<T>(fn: (apt: AptContext) => Promise<T>): Promise<T> {
    const prev = this.aptLock;
    let unlock: () => void = () => undefined;
    this.aptLock = new Promise<void>((resolve) => (unlock = resolve));
    try {
      await prev.catch(() => undefined);
      const apt = await prepareApt(join(this.d.cacheDir, 'kernel-apt'), this.sources);
      return await fn(apt);
    } finally {
      unlock();
    }
  }

  private archiveLines(): string[] {
    return this.sources
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('deb '));
  }

  private uris(): string {
    return sourceUris(this.sources).join(', ');
  }

  private wireEntry(e: CatalogEntry): CatalogKernel {
    const kernels = this.d.store.kernels
      .list()
      .filter((k) => k.version === e.release)
      .map((k) => k.name);
    const w: CatalogKernel = {
      name: e.release,
      package: e.package,
      version: e.version,
      release: e.release,
      flavour: e.flavour,
      size_bytes: e.sizeBytes,
      latest: e.latest,
      aliases: [...e.aliases],
      pulled: kernels.length > 0,
      kernels,
    };
    if (e.installedSizeBytes !== undefined) w.installed_size_bytes = e.installedSizeBytes;
    return w;
  }

  private wire(row: KernelRow): ReturnType<typeof kernelToWire> {
    return kernelToWire(row, imagesUsingKernel(this.d.store, row.id));
  }
}
