// The op service: what the daemon recorded about each op id (op.list, op.show) and the merged
// timeline of everything that carries one (op.trace). See src/ops/ and docs/op-trace.md.
import type { OpService } from '../../../generated/handlers.gen.ts';
import type * as T from '../../../generated/types.gen.ts';
import { ErrorResponse } from '../../rpc/errors.ts';
import { buildTrace, lookup, type TraceDeps } from '../../ops/trace.ts';
import { matches, operationFromRow, summarize } from '../../ops/summary.ts';

const DEFAULT_LIMIT = 50;

export class OpServiceImpl implements OpService {
  private readonly d: TraceDeps;

  constructor(deps: TraceDeps) {
    this.d = deps;
  }

  async list(p: T.OpListParams): Promise<T.OpListResult> {
    const window: { since?: string; until?: string } = {};
    if (p.since !== undefined) window.since = p.since;
    if (p.until !== undefined) window.until = p.until;
    // Retention bounds both tables, so reading the window whole and filtering here is cheap.
    const rpcs = this.d.repo.list({ ...window, limit: this.d.retention.maxCount * 2 });
    const ops = this.d.store.operations
      .list({ ...(p.since !== undefined ? { since: p.since } : {}), limit: 0 })
      .map(operationFromRow);
    const operations = summarize(rpcs, ops)
      .filter((s) => matches(s, p))
      .slice(0, p.limit ?? DEFAULT_LIMIT);
    return { operations };
  }

  async show(p: T.OpShowParams): Promise<T.OpShowResult> {
    const { summary, operation } = lookup(this.d, p.op_id);
    if (!summary)
      throw new ErrorResponse(
        'not_found',
        `no record of ${p.op_id}: records are kept for the newest ${this.d.retention.maxCount} operations of the last ${this.d.retention.maxAgeDays} days, and successful status polls are not recorded; banger op trace ${p.op_id} also searches the logs`,
      );
    return operation ? { summary, operation } : { summary };
  }

  async trace(p: T.OpTraceParams): Promise<T.OpTraceResult> {
    return buildTrace(this.d, p.op_id, p.serial === undefined ? {} : { serial: p.serial });
  }
}
