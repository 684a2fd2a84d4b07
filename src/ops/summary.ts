// One op's summary: the RPC's record (method, duration, result, VM) joined with the multi-step
// operation it began, if any (a vm.create.begin answers in milliseconds; its create runs on).
import type { OpListParams, OpSummary, Operation, Step } from '../../generated/types.gen.ts';
import type { OperationRow } from '../store/index.ts';
import type { RpcLogRow } from '../store/rpclog.ts';

const STEP_STATES = new Set(['pending', 'running', 'done', 'failed', 'undone', 'skipped']);

function isStep(v: unknown): v is Step {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  return typeof s.name === 'string' && typeof s.state === 'string' && STEP_STATES.has(s.state);
}

/** A stored operation row in its wire form. */
export function operationFromRow(r: OperationRow): Operation {
  const op: Operation = {
    id: r.id,
    kind: r.kind,
    method: r.method,
    state: r.state,
    started_at: r.startedAt,
    steps: Array.isArray(r.steps) ? r.steps.filter(isStep) : [],
  };
  if (r.endedAt) op.ended_at = r.endedAt;
  if (r.vmName) op.vm = r.vmName;
  if (r.imageName) op.image = r.imageName;
  const e = r.error as { code?: unknown; message?: unknown } | null;
  if (e && typeof e.code === 'string' && typeof e.message === 'string')
    op.error = { code: e.code, message: e.message };
  const running = op.steps.findLast((s) => s.state === 'running');
  if (op.state === 'running' && running) op.current_step = running.name;
  return op;
}

/** Join an RPC record and an operation of one id; at least one must be given. */
export function buildSummary(rpc: RpcLogRow | undefined, op: Operation | undefined): OpSummary {
  if (!rpc && !op) throw new Error('buildSummary needs a record');
  const opId = rpc?.opId ?? op!.id;
  const starts = [rpc?.startedAt, op?.started_at].filter((s): s is string => !!s).sort();
  const started = starts[0]!;
  const s: OpSummary = { op_id: opId, method: rpc?.method ?? op!.method, started_at: started, ok: true };
  const ended = op ? op.ended_at : rpc!.endedAt;
  if (ended) {
    s.ended_at = ended;
    s.duration_ms = Math.max(0, Date.parse(ended) - Date.parse(started));
  }
  if (rpc && !rpc.ok) {
    s.ok = false;
    if (rpc.code) s.code = rpc.code;
    if (rpc.message) s.message = rpc.message;
  } else if (op && (op.state === 'failed' || op.state === 'canceled')) {
    s.ok = false;
    s.code = op.error?.code ?? (op.state === 'canceled' ? 'canceled' : 'operation_failed');
    if (op.error?.message) s.message = op.error.message;
  }
  const vm = rpc?.vmName ?? op?.vm;
  if (vm) s.vm = vm;
  if (op) {
    s.kind = op.kind;
    s.state = op.state;
    s.steps = op.steps.length;
  }
  return s;
}

/** Does a summary pass op.list's filters (the time window is applied by the query too)? */
export function matches(s: OpSummary, p: OpListParams): boolean {
  if (p.method !== undefined && s.method !== p.method && s.kind !== p.method) return false;
  if (p.vm !== undefined && s.vm !== p.vm) return false;
  if (p.failed_only && s.ok) return false;
  if (p.since !== undefined && Date.parse(s.started_at) < Date.parse(p.since)) return false;
  if (p.until !== undefined && Date.parse(s.started_at) >= Date.parse(p.until)) return false;
  return true;
}

/** Group records by op id into summaries, newest first. */
export function summarize(rpcs: readonly RpcLogRow[], ops: readonly Operation[]): OpSummary[] {
  const firstRpc = new Map<string, RpcLogRow>();
  for (const r of rpcs) {
    const cur = firstRpc.get(r.opId);
    if (!cur || r.seq < cur.seq) firstRpc.set(r.opId, r);
  }
  const byId = new Map<string, Operation>(ops.map((o) => [o.id, o]));
  const ids = new Set([...firstRpc.keys(), ...byId.keys()]);
  return [...ids]
    .map((id) => buildSummary(firstRpc.get(id), byId.get(id)))
    .sort((a, b) => (a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : 0));
}
