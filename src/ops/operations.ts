// Operations: long or multi-step work (create, build, stop) recorded as named steps with
// durations and undo actions. The operation id is the op id of the RPC that began it.
import type { Operation, Step } from '../../generated/types.gen.ts';
import type { Logger } from '../log/logger.ts';
import { toErrorResponse } from '../rpc/errors.ts';
import { OpError } from './errors.ts';

export interface OperationSink {
  save(op: Operation): void;
}

export interface OperationQuery {
  state?: Operation['state'];
  limit?: number;
}

type Undo = () => Promise<void>;

export class OperationTracker {
  readonly op: Operation;
  private readonly undos: { step: Step; undo: Undo }[] = [];
  private readonly registry: OperationRegistry;
  readonly abort = new AbortController();
  private readonly stepStarted = new Map<Step, number>();
  private lastProgressPersist = 0;

  constructor(registry: OperationRegistry, op: Operation) {
    this.registry = registry;
    this.op = op;
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Run one named step; its undo (if any) is registered only when the step succeeds. */
  async step<T>(
    name: string,
    fn: (signal: AbortSignal) => Promise<T>,
    undo?: (result: T) => Promise<void>,
  ): Promise<T> {
    if (this.signal.aborted) throw new OpError('canceled', `${this.op.kind} canceled before ${name}`);
    const step: Step = { name, state: 'running', started_at: new Date().toISOString() };
    this.op.steps.push(step);
    this.op.current_step = name;
    this.persist();
    this.registry.stepStarting(this.op, name);
    const t0 = performance.now();
    this.registry.log.info({ step: name, operation_id: this.op.id }, 'step started');
    try {
      const result = await fn(this.signal);
      step.state = 'done';
      step.duration_ms = Math.round(performance.now() - t0);
      if (undo) this.undos.push({ step, undo: () => undo(result) });
      this.registry.log.info({ step: name, duration_ms: step.duration_ms }, 'step done');
      return result;
    } catch (err) {
      step.state = 'failed';
      step.duration_ms = Math.round(performance.now() - t0);
      step.detail = err instanceof Error ? err.message : String(err);
      this.registry.log.warn({ step: name, duration_ms: step.duration_ms, err: step.detail }, 'step failed');
      throw err;
    } finally {
      this.persist();
    }
  }

  /** Register an undo not tied to a step (e.g. for a record made before the first step). */
  registerUndo(undo: Undo): void {
    const step: Step = { name: 'record', state: 'done' };
    this.undos.push({ step, undo });
  }

  /** Record detail on the step running now (progress for long steps). */
  progress(detail: string): void {
    const s = this.op.steps.at(-1);
    if (s && s.state === 'running') {
      s.detail = detail;
      this.persist();
    }
  }

  // Callback-driven steps: for work that reports its own stage transitions (the image builder's
  // onStage) instead of running each stage as a function.

  /** Begin a named step (running); it stays open until stepDone or stepFail. */
  stepStart(name: string, detail?: string): void {
    const step: Step = { name, state: 'running', started_at: new Date().toISOString() };
    if (detail) step.detail = detail;
    this.op.steps.push(step);
    this.stepStarted.set(step, performance.now());
    this.op.current_step = name;
    this.registry.log.info({ step: name, operation_id: this.op.id, detail }, 'step started');
    this.persist();
    this.registry.stepStarting(this.op, name);
  }

  /** Progress note on the running step `name`; persisted at most once a second. */
  stepProgress(name: string, detail: string): void {
    const step = this.runningStep(name);
    if (!step) return;
    step.detail = detail;
    const now = performance.now();
    if (now - this.lastProgressPersist >= 1000) {
      this.lastProgressPersist = now;
      this.persist();
    }
  }

  /**
   * Finish the running step `name`. A step that was never started (work that reports only its
   * end, e.g. a cache hit) is recorded as done with the given duration.
   */
  stepDone(name: string, opts: { durationMs?: number; detail?: string } = {}): void {
    let step = this.runningStep(name);
    if (!step) {
      this.registry.stepStarting(this.op, name);
      const ms = Math.max(0, Math.round(opts.durationMs ?? 0));
      step = { name, state: 'running', started_at: new Date(Date.now() - ms).toISOString() };
      this.op.steps.push(step);
      this.stepStarted.set(step, performance.now() - ms);
    }
    const t0 = this.stepStarted.get(step) ?? performance.now();
    this.stepStarted.delete(step);
    step.state = 'done';
    step.duration_ms = Math.max(0, Math.round(opts.durationMs ?? performance.now() - t0));
    if (opts.detail) step.detail = opts.detail;
    this.settleCurrentStep();
    this.registry.log.info({ step: name, duration_ms: step.duration_ms }, 'step done');
    this.persist();
  }

  /** Record a step that did not run, and why (e.g. `warm`: booting cold because ...). */
  stepSkipped(name: string, detail: string): void {
    this.op.steps.push({
      name,
      state: 'skipped',
      started_at: new Date().toISOString(),
      duration_ms: 0,
      detail,
    });
    this.registry.log.info({ step: name, detail }, 'step skipped');
    this.persist();
  }

  /** Mark the running step `name` (or, without a name, every running step) failed. */
  stepFail(name: string | undefined, detail: string): void {
    const steps =
      name === undefined
        ? this.op.steps.filter((s) => s.state === 'running')
        : [this.runningStep(name)].filter((s): s is Step => s !== undefined);
    for (const step of steps) {
      const t0 = this.stepStarted.get(step) ?? performance.now();
      this.stepStarted.delete(step);
      step.state = 'failed';
      step.duration_ms = Math.max(0, Math.round(performance.now() - t0));
      step.detail = detail;
      this.registry.log.warn({ step: step.name, duration_ms: step.duration_ms, err: detail }, 'step failed');
    }
    this.settleCurrentStep();
    if (steps.length > 0) this.persist();
  }

  private runningStep(name: string): Step | undefined {
    for (let i = this.op.steps.length - 1; i >= 0; i--) {
      const s = this.op.steps[i];
      if (s && s.name === name && s.state === 'running') return s;
    }
    return undefined;
  }

  private settleCurrentStep(): void {
    const running = this.op.steps.findLast((s) => s.state === 'running');
    if (running) this.op.current_step = running.name;
    else delete this.op.current_step;
  }

  /** A point to roll back to with rollbackTo (the undos registered so far stay). */
  undoMark(): number {
    return this.undos.length;
  }

  /**
   * Undo, in reverse order, only the steps completed since `mark` (a fallback that retries part
   * of a pipeline another way); undo failures are logged, never thrown.
   */
  async rollbackTo(mark: number): Promise<void> {
    await this.rollback(mark);
  }

  /** Undo completed steps in reverse order; undo failures are logged, never thrown. */
  async rollback(mark = 0): Promise<void> {
    while (this.undos.length > mark) {
      const { step, undo } = this.undos.pop()!;
      try {
        await undo();
        step.state = 'undone';
      } catch (err) {
        this.registry.log.error({ step: step.name, err }, 'undo failed');
        step.detail = `undo failed: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    this.persist();
  }

  succeed(): void {
    this.finish('succeeded');
  }

  fail(err: unknown): void {
    const e = toErrorResponse(err, this.op.id);
    this.op.error = { code: e.code, message: e.bareMessage };
    this.finish(e.code === 'canceled' ? 'canceled' : 'failed');
  }

  private finish(state: Operation['state']): void {
    this.op.state = state;
    this.op.ended_at = new Date().toISOString();
    delete this.op.current_step;
    this.persist();
  }

  private persist(): void {
    this.registry.persist(this.op);
  }
}

export class OperationRegistry {
  readonly log: Logger;
  private readonly live = new Map<string, OperationTracker>();
  private readonly recent: Operation[] = [];
  private readonly sink: OperationSink | undefined;
  private readonly keep: number;
  private readonly onStepStart: ((op: Operation, step: string) => void) | undefined;

  constructor(
    log: Logger,
    opts: {
      sink?: OperationSink;
      keepRecent?: number;
      /** Told when a step begins, after it is persisted (the crash-test hook, src/vm/crash.ts). */
      onStepStart?: (op: Operation, step: string) => void;
    } = {},
  ) {
    this.log = log;
    this.sink = opts.sink;
    this.keep = opts.keepRecent ?? 200;
    this.onStepStart = opts.onStepStart;
  }

  stepStarting(op: Operation, step: string): void {
    this.onStepStart?.(op, step);
  }

  begin(
    id: string,
    kind: string,
    method: string,
    extra: Partial<Pick<Operation, 'vm' | 'image'>> = {},
  ): OperationTracker {
    if (this.live.has(id)) throw new OpError('conflict', `operation ${id} already exists`);
    const op: Operation = {
      id,
      kind,
      method,
      state: 'running',
      started_at: new Date().toISOString(),
      steps: [],
      ...extra,
    };
    const t = new OperationTracker(this, op);
    this.live.set(id, t);
    this.persist(op);
    return t;
  }

  get(id: string): OperationTracker | undefined {
    return this.live.get(id);
  }

  find(id: string): Operation | undefined {
    return this.live.get(id)?.op ?? this.recent.find((o) => o.id === id);
  }

  list(q: OperationQuery = {}): Operation[] {
    const all = [...[...this.live.values()].map((t) => t.op), ...this.recent];
    const seen = new Set<string>();
    return all
      .filter((o) => (seen.has(o.id) ? false : (seen.add(o.id), true)))
      .filter((o) => (q.state ? o.state === q.state : true))
      .sort((a, b) => (a.started_at < b.started_at ? 1 : -1))
      .slice(0, q.limit ?? 100);
  }

  persist(op: Operation): void {
    if (op.state !== 'running' && this.live.has(op.id)) {
      this.live.delete(op.id);
      this.recent.unshift(op);
      if (this.recent.length > this.keep) this.recent.length = this.keep;
    }
    try {
      this.sink?.save(op);
    } catch (err) {
      this.log.error({ err, operation_id: op.id }, 'could not persist operation');
    }
  }
}
