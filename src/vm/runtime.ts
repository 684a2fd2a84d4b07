// Live VMM handles by VM id. A handle is attached when a VM boots (or when a restarted daemon
// reattaches to a VM that kept running); its exit and its events are watched and handed to the
// lifecycle owner (src/vm/lifecycle.ts), which records what they mean.
import type { ExitInfo, VmmDriver, VmmEvent, VmmHandle } from '../engine/index.ts';
import type { Logger } from '../log/logger.ts';

export type ExitListener = (vmId: string, expected: boolean, info: ExitInfo) => void;
export type EventListener = (vmId: string, event: VmmEvent) => void;

export class VmRuntime {
  private readonly handles = new Map<string, VmmHandle>();
  private readonly unsubscribe = new Map<string, () => void>();
  private readonly expecting = new Set<string>();
  readonly driver: VmmDriver;
  private readonly log: Logger;
  private onExit: ExitListener;
  private onEvent: EventListener | undefined;

  constructor(
    driver: VmmDriver,
    log: Logger,
    onExit: ExitListener = () => undefined,
    onEvent?: EventListener,
  ) {
    this.driver = driver;
    this.log = log;
    this.onExit = onExit;
    this.onEvent = onEvent;
  }

  /** Who hears exits and events (the lifecycle owner, which is made after the runtime). */
  listen(onExit: ExitListener, onEvent?: EventListener): void {
    this.onExit = onExit;
    this.onEvent = onEvent;
  }

  get(id: string): VmmHandle | undefined {
    return this.handles.get(id);
  }

  isRunning(id: string): boolean {
    return this.handles.has(id);
  }

  /** Ids of every attached VMM. */
  ids(): string[] {
    return [...this.handles.keys()];
  }

  attach(id: string, handle: VmmHandle): void {
    this.handles.set(id, handle);
    this.unsubscribe.set(
      id,
      handle.onEvent((ev) => {
        if (this.handles.get(id) !== handle) return;
        // The exit event carries why (waitExit() only the code and signal); it comes first.
        if (ev.kind === 'exit') this.exited(id, handle, ev.info);
        else this.onEvent?.(id, ev);
      }),
    );
    void handle.waitExit().then(
      (info) => this.exited(id, handle, info),
      (err: unknown) => this.exited(id, handle, { code: null, signal: null, reason: String(err) }),
    );
  }

  /** Mark the next exit of this VM as asked for (stop, kill, delete). */
  expectExit(id: string): void {
    this.expecting.add(id);
  }

  private exited(id: string, handle: VmmHandle, info: ExitInfo): void {
    if (this.handles.get(id) !== handle) return;
    this.handles.delete(id);
    this.unsubscribe.get(id)?.();
    this.unsubscribe.delete(id);
    const expected = this.expecting.delete(id);
    this.log.info(
      { vm_id: id, pid: handle.pid, expected, code: info.code, signal: info.signal, how: info.reason },
      'VMM exited',
    );
    this.onExit(id, expected, info);
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
    for (const u of this.unsubscribe.values()) u();
    this.unsubscribe.clear();
    await Promise.all(all.map((h) => h.release().catch(() => undefined)));
  }
}
