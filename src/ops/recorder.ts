// The op recorder: turns each served RPC into a row of rpc_log, closes serial windows when their
// operation ends, writes one summary line when an operation (work that outlives its RPC) ends,
// and keeps every table bounded by retention.
import type { Operation } from '../../generated/types.gen.ts';
import type { Logger } from '../log/logger.ts';
import { withOpId } from '../rpc/context.ts';
import type { RpcFinished } from '../rpc/server.ts';
import type { Store } from '../store/index.ts';
import type { RpcLogRepo } from '../store/rpclog.ts';
import type { SerialWatcher } from './serial.ts';

/**
 * Successful calls of these are not recorded, or pollers would drown everything else: ping, the
 * status phase of operations (vm.create.status, image.build.status; not daemon.status), op.*.
 */
export function isQuietMethod(method: string): boolean {
  return method === 'ping' || /^[a-z]+\.[a-z]+\.status$/.test(method) || method.startsWith('op.');
}

/** The VM a call names, for vm.* methods whose params carry `name`. */
export function vmFromParams(method: string, params: unknown): string | undefined {
  if (!method.startsWith('vm.') || typeof params !== 'object' || params === null) return undefined;
  const name = (params as { name?: unknown }).name;
  return typeof name === 'string' && name.length > 0 && name.length <= 64 ? name : undefined;
}

export interface RecorderDeps {
  repo: RpcLogRepo;
  store: Store;
  log: Logger;
  serial: SerialWatcher;
  /** Is an operation with this id still running in this daemon? */
  isLive: (opId: string) => boolean;
  retention: { maxCount: number; maxAgeDays: number };
  /** Prune after this many recorded calls (default 200), and every pruneEveryMs (10 min). */
  pruneEveryCalls?: number;
  pruneEveryMs?: number;
}

export class OpRecorder {
  private readonly d: RecorderDeps;
  private sinceP = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly ended = new Set<string>();

  constructor(deps: RecorderDeps) {
    this.d = deps;
  }

  start(): void {
    this.prune();
    this.timer = setInterval(() => this.prune(), this.d.pruneEveryMs ?? 600_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.d.serial.endAll();
  }

  /** The server's onFinished hook. */
  onRpcFinished(f: RpcFinished): void {
    if (!(f.ok && isQuietMethod(f.method))) {
      this.d.repo.insert({
        opId: f.opId,
        method: f.method || '(malformed request)',
        startedAt: new Date(f.startedAt),
        endedAt: new Date(f.endedAt),
        durationMs: f.durationMs,
        ok: f.ok,
        code: f.code ?? null,
        message: f.message ?? null,
        vmName: f.vm ?? vmFromParams(f.method, f.params) ?? null,
      });
      if (++this.sinceP >= (this.d.pruneEveryCalls ?? 200)) this.prune();
    }
    // A synchronous call (vm.start) ends its console window with its answer; an operation that
    // runs on (vm.create) ends it in onOperationSaved.
    if (!this.d.isLive(f.opId) && this.d.serial.hasOpen(f.opId)) void this.d.serial.end(f.opId);
  }

  /** Every persist of an operation (each step boundary, and its end). */
  onOperationSaved(op: Operation): void {
    this.d.serial.sampleOp(op.id);
    if (op.state === 'running' || this.ended.has(op.id)) return;
    this.ended.add(op.id);
    if (this.ended.size > 1000) this.ended.clear();
    void this.d.serial.end(op.id);
    const duration_ms = op.ended_at ? Date.parse(op.ended_at) - Date.parse(op.started_at) : undefined;
    const fields = { kind: op.kind, state: op.state, duration_ms, steps: op.steps.length, vm: op.vm };
    // The operation's own summary line, the counterpart of `rpc completed`/`rpc failed` for work
    // that outlives the RPC that began it.
    withOpId(op.id, op.method, () => {
      if (op.state === 'succeeded') this.d.log.info(fields, 'operation completed');
      else
        this.d.log.warn(
          { ...fields, code: op.error?.code, error: op.error?.message },
          op.state === 'canceled' ? 'operation canceled' : 'operation failed',
        );
    });
  }

  prune(): void {
    this.sinceP = 0;
    const { maxCount, maxAgeDays } = this.d.retention;
    try {
      const n = this.d.repo.prune({ maxCount, maxAgeDays });
      const m = this.d.store.pruneOperations({ maxCount, maxAgeDays });
      if (n + m > 0) this.d.log.debug({ rpc_records: n, operations: m }, 'pruned op records');
    } catch (err) {
      this.d.log.warn({ err }, 'pruning op records failed');
    }
  }
}
