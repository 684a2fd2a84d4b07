// The accelerator decision, made once per daemon start and reported by daemon.status.
import { join } from 'node:path';
import { probeAccel, qemuVersion, type Accel, type AccelProbeResult } from '../engine/index.ts';
import type { Logger } from '../log/logger.ts';
import type { Store } from '../store/index.ts';
import type { DaemonConfig } from './config.ts';

export class EngineInfo {
  private probe: Promise<AccelProbeResult> | undefined;
  private result: AccelProbeResult | undefined;
  private version: string | undefined;
  private readonly config: DaemonConfig;
  private readonly store: Store;
  private readonly stateDir: string;
  private readonly log: Logger;

  constructor(config: DaemonConfig, store: Store, stateDir: string, log: Logger) {
    this.config = config;
    this.store = store;
    this.stateDir = stateDir;
    this.log = log;
  }

  /** The accelerator to boot with; probes (once) on first use. */
  async accel(): Promise<Accel> {
    if (!this.probe) {
      const def = this.store.images.getDefault();
      const kernel = def ? this.store.kernels.getById(def.kernelId) : undefined;
      const opts: Parameters<typeof probeAccel>[0] = {
        config: this.config.accel,
        cacheFile: join(this.stateDir, 'accel-cache.json'),
        logger: this.log,
      };
      if (kernel) {
        opts.kernel = kernel.kernelPath;
        if (kernel.initrdPath) opts.initrd = kernel.initrdPath;
      }
      this.probe = probeAccel(opts).then((r) => {
        this.result = r;
        this.log.info(
          { accel: r.accel, reason: r.reason, verified: r.verified, duration_ms: r.durationMs },
          'accelerator chosen',
        );
        // An unverified answer (no kernel yet) is asked again once a kernel exists.
        if (!r.verified && !kernel) this.probe = undefined;
        return r;
      });
    }
    return (await this.probe).accel;
  }

  async status(): Promise<{ driver: string; accel?: Accel; accel_reason?: string; qemu_version?: string }> {
    this.version ??= await qemuVersion().catch(() => undefined);
    const out: { driver: string; accel?: Accel; accel_reason?: string; qemu_version?: string } = {
      driver: 'qemu',
    };
    if (this.version) out.qemu_version = this.version;
    if (this.result) {
      out.accel = this.result.accel;
      out.accel_reason = this.result.reason;
    }
    return out;
  }
}
