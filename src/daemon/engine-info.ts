// The accelerator decision, made once per daemon start and reported by daemon.status.
import { join } from 'node:path';
import {
  probeAccel,
  qemuVersion,
  type Accel,
  type AccelProbeResult,
  type EngineSelection,
} from '../engine/index.ts';
import type { DaemonStatusResult } from '../../generated/types.gen.ts';
import type { Logger } from '../log/logger.ts';
import type { Store } from '../store/index.ts';
import type { DaemonConfig } from './config.ts';

type EngineStatus = NonNullable<DaemonStatusResult['engine']>;

export class EngineInfo {
  private probe: Promise<AccelProbeResult> | undefined;
  private result: AccelProbeResult | undefined;
  /** True while a probe runs: daemon status says `probing` rather than nothing. */
  private probing = false;
  private version: string | undefined;
  private readonly config: DaemonConfig;
  private readonly store: Store;
  private readonly stateDir: string;
  private readonly log: Logger;
  /** The driver this daemon runs and why (src/engine/select.ts). */
  private readonly selection: EngineSelection;

  constructor(
    config: DaemonConfig,
    store: Store,
    stateDir: string,
    log: Logger,
    selection: EngineSelection = { driver: 'qemu', reason: 'engine = "qemu" (the default)' },
  ) {
    this.config = config;
    this.store = store;
    this.stateDir = stateDir;
    this.log = log;
    this.selection = selection;
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
      this.probing = true;
      const probe = probeAccel(opts);
      // A failed probe (e.g. QEMU missing) is not "probing" forever; its caller sees the error
      // and the next VM start probes again.
      probe.then(
        () => (this.probing = false),
        () => {
          this.probing = false;
          this.probe = undefined;
        },
      );
      this.probe = probe.then((r) => {
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

  async status(): Promise<EngineStatus> {
    this.version ??= await qemuVersion().catch(() => undefined);
    const out: EngineStatus = { driver: this.selection.driver, driver_reason: this.selection.reason };
    if (this.version && this.selection.driver === 'qemu') out.qemu_version = this.version;
    if (this.probing) {
      out.accel = 'probing';
      out.accel_reason = 'a test boot under KVM decides (up to about 10 s)';
    } else if (this.result) {
      out.accel = this.result.accel;
      out.accel_reason = this.result.reason;
    } else if (this.config.accel !== 'auto') {
      // Configured: known without probing (what probeAccel answers for it).
      out.accel = this.config.accel;
      out.accel_reason = `configured: accel = ${this.config.accel}${this.config.accel === 'kvm' ? ' (not probed)' : ''}`;
    } else {
      out.accel_reason = 'not probed yet: the first VM start test-boots KVM to decide';
    }
    return out;
  }
}
