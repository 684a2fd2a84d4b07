// Trace records: what every source (daemon log, helper log, operation steps, serial console)
// turns its lines into before the merger orders them on one timeline.
import type { TraceRecord } from '../../generated/types.gen.ts';

export type TraceSource = TraceRecord['source'];

/** A record before the merger sets rel_ms. `t` is epoch milliseconds (the sort key). */
export type SourceRecord = Omit<TraceRecord, 'rel_ms'> & { t: number };

/** What a source could read: its records, and what it could not (for the trace's notes). */
export interface SourceResult {
  records: SourceRecord[];
  notes: string[];
}

const PINO_LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/** Fields every pino record carries that the trace shows elsewhere (or not at all). */
const SHOWN_ELSEWHERE = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'op_id', 'v']);

function levelOf(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return PINO_LEVELS[v] ?? String(v);
  return undefined;
}

/** Epoch ms of a pino `time` (ISO string with isoTime, epoch ms by pino's default). */
export function timeOf(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/**
 * Does this parsed log record belong to the op? Its `op_id` is the id (every line written inside
 * the RPC's async context), or it names the id as the operation it acts on (`operation_id`).
 */
export function belongsTo(rec: Record<string, unknown>, opId: string): boolean {
  return rec.op_id === opId || rec.operation_id === opId;
}

/** A parsed pino JSON record → a trace record, or undefined when it has no usable time. */
export function fromLogObject(
  rec: Record<string, unknown>,
  source: TraceSource,
  fallbackTime?: number,
): SourceRecord | undefined {
  const t = timeOf(rec.time) ?? fallbackTime;
  if (t === undefined) return undefined;
  const out: SourceRecord = {
    t,
    time: new Date(t).toISOString(),
    source,
    msg: typeof rec.msg === 'string' ? rec.msg : typeof rec.message === 'string' ? rec.message : '',
  };
  const level = levelOf(rec.level);
  if (level !== undefined) out.level = level;
  if (typeof rec.duration_ms === 'number') out.duration_ms = rec.duration_ms;
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rec)) if (!SHOWN_ELSEWHERE.has(k)) fields[k] = v;
  if (Object.keys(fields).length > 0) out.fields = fields;
  return out;
}

/**
 * One JSON log line → a trace record, if it is a JSON object that belongs to the op. Lines that
 * are not JSON objects (a crash trace on stderr, a torn last line) are skipped.
 */
export function parseLogLine(line: string, opId: string, source: TraceSource): SourceRecord | undefined {
  if (!line.includes(opId)) return undefined; // cheap filter before JSON.parse
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const rec = v as Record<string, unknown>;
  return belongsTo(rec, opId) ? fromLogObject(rec, source) : undefined;
}
