// op.trace: everything that carries one op id, on one timeline. The sources are the daemon's and
// the helper's logs (files or journald), the operation's steps from the store, and the serial
// console windows of the VMs the operation booted.
import type { OpSummary, OpTraceResult, Operation } from '../../generated/types.gen.ts';
import { OpError } from './errors.ts';
import type { Store } from '../store/index.ts';
import type { RpcLogRepo } from '../store/rpclog.ts';
import { sourceTitle, type LogSource } from './file-log.ts';
import { mergeTimeline, stepRecords } from './merge.ts';
import type { SourceRecord, SourceResult } from './records.ts';
import { serialRecords, viewOfStored, type SerialWatcher } from './serial.ts';
import { buildSummary, operationFromRow } from './summary.ts';

export interface TraceDeps {
  repo: RpcLogRepo;
  store: Store;
  /** The logs to search, one per process, and why any process's log cannot be searched. */
  logs: () => Promise<{ sources: LogSource[]; notes: string[] }>;
  serial: SerialWatcher;
  retention: { maxCount: number; maxAgeDays: number };
}

/** The record and the operation of an op id, if either is kept. */
export function lookup(
  d: Pick<TraceDeps, 'repo' | 'store'>,
  opId: string,
): { summary?: OpSummary; operation?: Operation } {
  const rpc = d.repo.byOp(opId)[0];
  const row = d.store.operations.get(opId);
  const operation = row ? operationFromRow(row) : undefined;
  if (!rpc && !operation) return {};
  const out: { summary?: OpSummary; operation?: Operation } = { summary: buildSummary(rpc, operation) };
  if (operation) out.operation = operation;
  return out;
}

async function serialFor(d: TraceDeps, opId: string): Promise<SourceResult> {
  const live = await d.serial.liveViews(opId);
  const liveNames = new Set(live.map((v) => v.path));
  const stored = d.repo.serialWindows(opId).filter((w) => !liveNames.has(w.path));
  const views = [...live, ...(await Promise.all(stored.map((w) => viewOfStored(w))))];
  const out: SourceResult = { records: [], notes: [] };
  for (const w of stored) {
    if (w.endOffset === null)
      out.notes.push(
        `the daemon stopped before this operation's console window of ${w.vmName} closed: its lines up to now are shown`,
      );
  }
  for (const v of views) {
    const r = serialRecords(v);
    out.records.push(...r.records);
    out.notes.push(...r.notes);
  }
  return out;
}

export async function buildTrace(
  d: TraceDeps,
  opId: string,
  opts: { serial?: boolean } = {},
): Promise<OpTraceResult> {
  const { summary, operation } = lookup(d, opId);
  const from = summary ? Date.parse(summary.started_at) : undefined;
  const to = summary?.ended_at ? Date.parse(summary.ended_at) : undefined;
  const q = { opId, ...(from !== undefined ? { from } : {}), ...(to !== undefined ? { to } : {}) };

  const { sources, notes: standing } = await d.logs();
  const logs = await Promise.all(
    sources.map((s) =>
      s.read(q).catch((err: unknown): SourceResult => ({
        records: [],
        notes: [`cannot read ${sourceTitle(s.source)} (${s.where}): ${String(err)}`],
      })),
    ),
  );
  const steps: SourceRecord[] = operation ? stepRecords(operation) : [];
  const serial: SourceResult = opts.serial === false ? { records: [], notes: [] } : await serialFor(d, opId);

  const found = logs.reduce((n, r) => n + r.records.length, 0) + steps.length + serial.records.length;
  if (!summary && found === 0) {
    const where = sources.map((s) => `${sourceTitle(s.source)} (${s.where})`).join(', ');
    throw new OpError(
      'not_found',
      `no trace of ${opId}: no operation record (the newest ${d.retention.maxCount} operations of the last ${d.retention.maxAgeDays} days are kept) and no log line carries it${where ? ` in ${where}` : ''}`,
    );
  }

  const notes: string[] = [];
  if (!summary) {
    notes.push(
      `no record of ${opId} is kept (pruned by retention, or a successful status poll, which is not recorded); showing the log lines that carry it`,
    );
  }
  for (const [i, r] of logs.entries()) {
    notes.push(...r.notes);
    const s = sources[i]!;
    if (summary && s.source === 'daemon' && r.records.length === 0 && r.notes.length === 0)
      notes.push(
        `${sourceTitle(s.source)} (${s.where}) has no line with ${opId}: it was rotated away or written elsewhere`,
      );
  }
  notes.push(...serial.notes);
  notes.push(...standing);

  const all = [...steps, ...logs.flatMap((r) => r.records), ...serial.records];
  const start = from ?? Math.min(...all.map((r) => r.t));
  const result: OpTraceResult = {
    op_id: opId,
    records: mergeTimeline([steps, ...logs.map((r) => r.records), serial.records], start),
    notes,
  };
  if (summary) result.summary = summary;
  return result;
}
