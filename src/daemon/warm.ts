// The daemon's warm templates: `image.warm.*`, the lookup vm.create uses, the optional
// background warm after a cold create, and removal of stale templates no VM backs on.
import type * as T from '../../generated/types.gen.ts';
import type { Accel, VmmDriver } from '../engine/index.ts';
import type { Logger } from '../log/logger.ts';
import type { RpcContext } from '../rpc/context.ts';
import { mintOpId, withOpId } from '../rpc/context.ts';
import { ErrorResponse, notFound } from '../rpc/errors.ts';
import type { ImageRow, KernelRow, Store } from '../store/index.ts';
import type { WarmSource } from '../vm/create.ts';
import { parseSize } from '../vm/sizes.ts';
import {
  buildTemplate,
  findTemplate,
  isCurrent,
  listTemplates,
  sweepTemplates,
  warmKey,
  warmKeyHash,
  type TemplateManifest,
  type WarmDeps,
  type WarmSpec,
  type WarmTemplate,
} from '../vm/warm.ts';
import type { DaemonConfig } from './config.ts';
import type { VmNetwork } from '../vm/network.ts';
import type { OperationRegistry } from '../ops/operations.ts';
import { isoTimestamp } from './services/convert.ts';

export interface WarmServiceDeps {
  store: Store;
  ops: OperationRegistry;
  log: Logger;
  config: DaemonConfig;
  driver: VmmDriver;
  accel: () => Promise<Accel>;
  engineVersion: () => Promise<string>;
  installPubKey: () => Promise<string>;
  readyTimeoutMs: number;
  network: VmNetwork;
  resolveImage: (name: string | undefined) => Promise<{ image: ImageRow; kernel: KernelRow }>;
}

export class WarmService implements WarmSource {
  private readonly d: WarmServiceDeps;
  /** Specs warmed (or being warmed) in the background this daemon run: at most once each. */
  private readonly autoWarmed = new Set<string>();
  /** Finished warm operations → the template they made (image.warm.status). */
  private readonly made = new Map<string, string>();
  readonly reidentifyTimeoutMs = 30_000;

  constructor(d: WarmServiceDeps) {
    this.d = d;
  }

  private warmDeps(): WarmDeps {
    const deps: WarmDeps = {
      driver: this.d.driver,
      log: this.d.log,
      accel: this.d.accel,
      engineVersion: this.d.engineVersion,
      installPubKey: this.d.installPubKey,
      readyTimeoutMs: this.d.readyTimeoutMs,
    };
    // Rootless, the network refuses (bridge templates need the root helper).
    deps.bridgeTap = (id) => this.d.network.templateTap(id);
    return deps;
  }

  private async engine(): Promise<{ version: string; accel: Accel }> {
    return { version: await this.d.engineVersion(), accel: await this.d.accel() };
  }

  /** WarmSource: the finished template matching this spec, or why there is none. */
  async lookup(
    image: ImageRow,
    kernel: KernelRow,
    spec: WarmSpec,
  ): Promise<{ template: WarmTemplate } | { template?: undefined; reason: string }> {
    if (this.d.driver.name !== 'qemu')
      return { reason: `warm start needs QEMU (engine ${this.d.driver.name})` };
    let hash: string;
    try {
      hash = warmKeyHash(await warmKey(image, kernel, spec, await this.engine()));
    } catch (err) {
      return { reason: `cannot key a warm template: ${(err as Error).message}` };
    }
    const found = await findTemplate(image, hash);
    if (found) return { template: found };
    const all = await listTemplates(image);
    const sameSpec = all.some(
      (t) =>
        t.manifest &&
        t.manifest.key.vcpus === spec.vcpus &&
        t.manifest.key.memoryMib === spec.memoryMib &&
        t.manifest.key.diskSizeBytes === spec.diskSizeBytes &&
        t.manifest.key.networkMode === spec.networkMode,
    );
    return {
      reason: sameSpec
        ? `the warm template of this spec is stale (the image, kernel or engine changed); rebuild it with: banger image warm ${image.name}`
        : `no warm template for this spec (make one with: banger image warm ${image.name})`,
    };
  }

  /** WarmSource: after a cold create, warm that spec in the background (config warm.auto). */
  coldCreated(image: ImageRow, kernel: KernelRow, spec: WarmSpec): void {
    if (!this.d.config.warm.auto || this.d.driver.name !== 'qemu') return;
    const k = JSON.stringify([image.id, spec]);
    if (this.autoWarmed.has(k)) return;
    this.autoWarmed.add(k);
    const opId = mintOpId();
    void withOpId(opId, 'image.warm.begin', async () => {
      const t = this.d.ops.begin(opId, 'image.warm', 'image.warm.begin', { image: image.name });
      this.d.log.info(
        { image: image.name, spec },
        'warming in the background after a cold create (warm.auto)',
      );
      await this.runWarm(t, image, kernel, spec, false).then(
        () => t.succeed(),
        (err: unknown) => {
          this.d.log.warn({ err: (err as Error).message }, 'background warm failed');
          t.fail(err);
        },
      );
    });
  }

  private async runWarm(
    t: ReturnType<OperationRegistry['begin']>,
    image: ImageRow,
    kernel: KernelRow,
    spec: WarmSpec,
    force: boolean,
  ): Promise<WarmTemplate> {
    if (force) {
      const hash = warmKeyHash(await warmKey(image, kernel, spec, await this.engine()));
      const users = this.usersOf(hash.slice(0, 16));
      if (users.length > 0)
        throw new ErrorResponse(
          'conflict',
          `the template's disk backs ${users.length} VM(s) (${users.join(', ')}); delete them first`,
        );
    }
    let stage = '';
    const tpl = await buildTemplate(this.warmDeps(), image, kernel, spec, {
      signal: t.signal,
      force,
      onProgress: (next, detail) => {
        if (next !== stage) {
          if (stage) t.stepDone(stage);
          t.stepStart(next, detail);
          stage = next;
        } else t.stepProgress(stage, detail);
      },
    }).catch((err: unknown) => {
      if (stage) t.stepFail(stage, err instanceof Error ? err.message : String(err));
      throw err;
    });
    if (stage) t.stepDone(stage);
    await this.sweep(image, kernel).catch(() => undefined);
    return tpl;
  }

  async begin(p: T.ImageWarmBeginParams, ctx: RpcContext): Promise<T.ImageWarmBeginResult> {
    if (this.d.driver.name !== 'qemu')
      throw new ErrorResponse('conflict', `warm templates need QEMU; this daemon runs ${this.d.driver.name}`);
    if (p.name !== undefined && !this.d.store.images.getByName(p.name)) throw notFound(`image "${p.name}"`);
    const { image, kernel } = await this.d.resolveImage(p.name);
    const cfg = this.d.config.vm_defaults;
    const mode = await this.d.network.chooseMode(p.network, false);
    const spec: WarmSpec = {
      vcpus: p.vcpus ?? cfg.vcpus,
      memoryMib: p.memory_mib ?? cfg.memory_mib,
      diskSizeBytes: parseSize(p.disk_size ?? cfg.disk_size, 'disk size'),
      networkMode: mode === 'bridge' ? 'bridge' : 'user',
    };
    const t = this.d.ops.begin(ctx.opId, 'image.warm', 'image.warm.begin', { image: image.name });
    void this.runWarm(t, image, kernel, spec, p.force ?? false).then(
      (tpl) => {
        this.made.set(ctx.opId, tpl.manifest.keyHash.slice(0, 16));
        t.succeed();
      },
      (err: unknown) => t.fail(err),
    );
    return { operation_id: ctx.opId, name: image.name };
  }

  async status(p: T.ImageWarmStatusParams): Promise<T.ImageWarmStatusResult> {
    const op = this.d.ops.find(p.operation_id);
    if (!op || op.kind !== 'image.warm') throw notFound(`warm operation ${p.operation_id}`);
    const r: T.ImageWarmStatusResult = { operation: op };
    const id = this.made.get(op.id);
    const image = op.image ? this.d.store.images.getByName(op.image) : undefined;
    if (id && image) {
      const found = (await this.templates(image)).find((w) => w.id === id);
      if (found) r.template = found;
    }
    return r;
  }

  private usersOf(hash16: string): string[] {
    return this.d.store.vms
      .list()
      .filter((v) => v.warmTemplate === hash16)
      .map((v) => v.name);
  }

  /** An image's templates as the wire shows them. */
  async templates(image: ImageRow): Promise<T.WarmTemplate[]> {
    const kernel = this.d.store.kernels.getById(image.kernelId);
    const engine = await this.engine().catch(() => undefined);
    const out: T.WarmTemplate[] = [];
    for (const t of await listTemplates(image)) {
      if (!t.manifest) continue;
      const m: TemplateManifest = t.manifest;
      const current = kernel && engine ? await isCurrent(image, kernel, m, engine) : false;
      out.push({
        id: t.hash16,
        image: image.name,
        vcpus: m.key.vcpus,
        memory_mib: m.key.memoryMib,
        disk_size_bytes: m.key.diskSizeBytes,
        network: m.key.networkMode,
        accel: m.key.engine.accel,
        engine_version: m.key.engine.version,
        created_at: isoTimestamp(m.createdAt),
        state_bytes: m.stateBytes,
        boot_ms: m.bootMs,
        save_ms: m.saveMs,
        stale: !current,
        used_by: this.usersOf(t.hash16),
      });
    }
    return out;
  }

  /** Remove the image's stale or unfinished templates no VM backs on. */
  async sweep(image: ImageRow, kernel?: KernelRow): Promise<string[]> {
    const k = kernel ?? this.d.store.kernels.getById(image.kernelId);
    if (!k) return [];
    const inUse = new Set(this.d.store.vms.list().flatMap((v) => (v.warmTemplate ? [v.warmTemplate] : [])));
    return sweepTemplates(image, k, await this.engine(), (h) => inUse.has(h), this.d.log);
  }

  /** WarmSource: a clone is gone; its template may be stale and now unused. */
  vmDeleted(vm: { imageId: string }): void {
    const image = this.d.store.images.getById(vm.imageId);
    if (image) void this.sweep(image).catch(() => undefined);
  }

  /** Every template directory of every image (start-up reconciliation stops their VMMs). */
  async templateDirs(): Promise<{ dir: string; finished: boolean }[]> {
    const out: { dir: string; finished: boolean }[] = [];
    for (const image of this.d.store.images.list()) {
      for (const t of await listTemplates(image))
        out.push({ dir: t.dir, finished: t.manifest !== undefined });
    }
    return out;
  }

  /** Sweep every image (daemon start). */
  async sweepAll(): Promise<void> {
    for (const image of this.d.store.images.list()) {
      await this.sweep(image).catch((err: unknown) =>
        this.d.log.warn({ image: image.name, err: (err as Error).message }, 'warm template sweep failed'),
      );
    }
  }
}
