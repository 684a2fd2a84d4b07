// A bounded set of file operations in flight. Writing tens of thousands of small files one
// await at a time leaves the process idle between thread-pool round trips (most of an image's
// unpack time); with a few in flight the latency overlaps. Bounded by count and by bytes held, so
// memory stays small; the first failure is reported by the next submit() or by drain().
export class TaskPool {
  private readonly maxTasks: number;
  private readonly maxBytes: number;
  private running = 0;
  private bytes = 0;
  private failure: unknown;
  private waiters: (() => void)[] = [];

  constructor(maxTasks = 32, maxBytes = 64 * 1024 * 1024) {
    this.maxTasks = maxTasks;
    this.maxBytes = maxBytes;
  }

  /** Start fn once there is room (it holds `bytes` until done); resolves when it has started. */
  async submit(fn: () => Promise<void>, bytes = 0): Promise<void> {
    while (this.running >= this.maxTasks || (this.running > 0 && this.bytes + bytes > this.maxBytes)) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.check();
    this.running++;
    this.bytes += bytes;
    fn()
      .catch((e: unknown) => {
        this.failure ??= e;
      })
      .finally(() => {
        this.running--;
        this.bytes -= bytes;
        const w = this.waiters;
        this.waiters = [];
        for (const r of w) r();
      });
  }

  /** Wait for everything submitted; throws the first failure. */
  async drain(): Promise<void> {
    while (this.running > 0) await new Promise<void>((r) => this.waiters.push(r));
    this.check();
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}
