// The merger: records from every source on one timeline, ordered by time, each keeping its
// source label; times become relative to the operation's start.
import type { Operation, Step, TraceRecord } from '../../generated/types.gen.ts';
import type { SourceRecord, TraceSource } from './records.ts';

/** At equal times: the step first (it frames what follows), then the daemon, helper, console. */
const RANK: Record<TraceSource, number> = { step: 0, daemon: 1, helper: 2, serial: 3 };

export function mergeTimeline(sources: readonly (readonly SourceRecord[])[], startMs: number): TraceRecord[] {
  const all: SourceRecord[] = sources.flat();
  // Array.prototype.sort is stable: records of one source at one time keep their order.
  all.sort((a, b) => a.t - b.t || RANK[a.source] - RANK[b.source]);
  return all.map(({ t, ...r }) => ({ ...r, rel_ms: t - startMs }));
}

function stepMsg(s: Step): string {
  const detail = s.detail ? `: ${s.detail}` : '';
  return `${s.name} ${s.state}${detail}`;
}

/**
 * The operation's recorded steps as records (one per step, at its start, with its duration), and
 * its outcome at its end. These come from the store, so they survive log rotation.
 */
export function stepRecords(op: Operation): SourceRecord[] {
  const out: SourceRecord[] = [];
  const opStart = Date.parse(op.started_at);
  for (const [i, s] of op.steps.entries()) {
    const t = s.started_at ? Date.parse(s.started_at) : opStart;
    const r: SourceRecord = {
      t,
      time: new Date(t).toISOString(),
      source: 'step',
      msg: stepMsg(s),
      fields: { step: s.name, state: s.state, index: i + 1 },
    };
    if (s.duration_ms !== undefined) r.duration_ms = s.duration_ms;
    out.push(r);
  }
  if (op.ended_at) {
    const t = Date.parse(op.ended_at);
    const fields: Record<string, unknown> = { operation: op.kind, state: op.state };
    if (op.error) fields.code = op.error.code;
    out.push({
      t,
      time: new Date(t).toISOString(),
      source: 'step',
      msg: `${op.kind} ${op.state}${op.error ? `: ${op.error.message}` : ''}`,
      duration_ms: Math.max(0, t - opStart),
      fields,
    });
  }
  return out;
}
