// Live VMM handles by VM id. A handle is attached when a VM boots (or when a restarted daemon
// reattaches to a VM that kept running); its exit is watched so a guest that powers itself off
// is recorded as stopped.
import type { VmmDriver, VmmHandle } from '../engine/index.ts';
import type { Logger } from '../log/logger.ts';

export type ExitListener = (vmId: string, expected: boolean) => void;

export class VmRuntime {
  private readonly handles = new Map<string, VmmHandle>();
  private readonly expecting = new Set<string>();
  readonly driver: VmmDriver;
  private readonly log: Logger;
  private readonly onExit: ExitListener;

  constructor(driver: VmmDriver, log: Logger, onExit: ExitListener) {
    this.driver = driver;
    this.log = log;
    this.onExit = onExit;
  }

  get(id: string): VmmHandle | undefined {
    return this.handles.get(id);
  }

  isRunning(id: string): boolean {
    return this.handles.has(id);
  }

  attach(id: string, handle: VmmHandle): void {
    this.handles.set(id, handle);
    void handle.waitExit().then(
      (info) => this.exited(id, handle, `code ${info.code ?? '?'}, signal ${info.signal ?? 'none'}`),
      (err: unknown) => this.exited(id, handle, String(err)),
    );
  }

  /** Mark the next exit of this VM as asked for (stop, kill, delete). */
  expectExit(id: string): void {
    this.expecting.add(id);
  }

  private exited(id: string, handle: VmmHandle, how: string): void {
    if (this.handles.get(id) !== handle) return;
    this.handles.delete(id);
    const expected = this.expecting.delete(id);
    this.log.info({ vm_id: id, pid: handle.pid, expected, how }, 'VMM exited');
    this.onExit(id, expected);
  }

  /** Reattach to a VM that may have kept running while the daemon was away. */
  async reattach(id: string, vmDir: string): Promise<VmmHandle | null> {
    const h = await this.driver.reattach(vmDir, { logger: this.log });
    if (h) this.attach(id, h);
    return h;
  }

  /** Drop control connections; the VMs keep running (daemon shutdown). */
  async releaseAll(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear(); // no exit after this point is a VM stopping
    await Promise.all(all.map((h) => h.release().catch(() => undefined)));
  }
}
