// Formatting for `banger op list|show|trace`: op ids and time windows on the command line, the
// list table, the detail view and the timeline lines. Pure functions (unit-tested).
import type { OpSummary, Operation, TraceRecord } from '../../generated/types.gen.ts';
import { formatDuration, formatRelativeTime, formatTimestamp, paint } from './format.ts';
import type { Column } from './table.ts';
import { usageError } from './vm-ref.ts';

const OP_ID = /^op-[0-9a-f]{6,32}$/;

/** An op id as typed: `op-3f9a1c`, or the hex alone (`3f9a1c`), as errors print it. */
export function parseOpId(input: string): string {
  const s = input.trim().toLowerCase();
  if (OP_ID.test(s)) return s;
  if (OP_ID.test(`op-${s}`)) return `op-${s}`;
  throw usageError(`"${input}" is not an op id: errors end with one, e.g. (op-3f9a1c07b2d4)`);
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * A point in time for --since/--until: a duration ago (`30m`, `2h`, `7d`) or a date/time
 * (`2026-01-14`, `2026-01-14T09:30:00Z`), as the wire's ISO form.
 */
export function parseWhen(input: string, flag: string, now: number = Date.now()): string {
  const m = /^(\d+)\s*([smhdw])$/.exec(input.trim());
  if (m) return new Date(now - Number(m[1]) * UNIT_MS[m[2]!]!).toISOString();
  const t = Date.parse(input);
  if (Number.isNaN(t))
    throw usageError(`${flag} ${input}: give a duration ago (30m, 2h, 7d) or a date (2026-01-14T09:30:00Z)`);
  return new Date(t).toISOString();
}

/** ok, running, or the error code; coloured. */
export function formatResult(s: OpSummary, color: boolean): string {
  if (s.state === 'running') return paint(color, 'yellow', 'running');
  if (s.ok) return paint(color, 'green', 'ok');
  return paint(color, 'red', s.code ?? 'failed');
}

export function opColumns(color: boolean, now: number): Column<OpSummary>[] {
  return [
    { header: 'OP', get: (s) => s.op_id },
    { header: 'METHOD', get: (s) => s.method },
    { header: 'VM', get: (s) => s.vm ?? '' },
    { header: 'STARTED', get: (s) => formatRelativeTime(s.started_at, now) },
    {
      header: 'TOOK',
      get: (s) => (s.duration_ms !== undefined ? formatDuration(s.duration_ms) : '…'),
      align: 'right',
    },
    { header: 'RESULT', get: (s) => formatResult(s, color) },
  ];
}

/** The detail view of one op. */
export function opFields(
  s: OpSummary,
  op: Operation | undefined,
  now: number,
): [string, string | undefined][] {
  return [
    ['op', s.op_id],
    ['method', s.method],
    ['kind', s.kind],
    ['vm', s.vm],
    ['image', op?.image],
    ['result', formatResult(s, false) + (s.state && s.state !== 'running' ? ` (${s.state})` : '')],
    ['error', s.message],
    ['started', formatTimestamp(s.started_at, now)],
    ['ended', s.ended_at ? formatTimestamp(s.ended_at, now) : undefined],
    ['took', s.duration_ms !== undefined ? formatDuration(s.duration_ms) : undefined],
    ['step now', op?.current_step],
  ];
}

/** `+12.345s` / `-0.120s`, right-aligned to a fixed width so the timeline's columns line up. */
export function formatRel(ms: number): string {
  const sign = ms < 0 ? '-' : '+';
  return `${sign}${(Math.abs(ms) / 1000).toFixed(3)}s`.padStart(10);
}

/** Fields shown on a timeline line: everything but what the line already says. */
const HIDDEN_FIELDS = new Set(['operation_id', 'duration_ms', 'in_window', 'index']);

function fieldValue(v: unknown): string {
  if (typeof v === 'string') return /\s/.test(v) ? JSON.stringify(v) : v;
  if (typeof v === 'object' && v !== null && 'message' in v && typeof v.message === 'string')
    return JSON.stringify(v.message);
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

function fieldText(r: TraceRecord): string {
  if (!r.fields || r.source === 'serial' || r.source === 'step') return '';
  const parts = Object.entries(r.fields)
    .filter(([k, v]) => !HIDDEN_FIELDS.has(k) && v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${fieldValue(v)}`);
  return parts.length > 0 ? `  ${parts.join(' ')}` : '';
}

const SOURCE_STYLE = { step: 'cyan', daemon: 'bold', helper: 'yellow', serial: 'dim' } as const;

/**
 * One timeline line: relative time, source, level (when not info), message, duration and the
 * record's other fields. Serial lines are marked with `│`: the guest does not know op ids, those
 * lines are the ones its console printed while the operation ran.
 */
export function formatTraceLine(r: TraceRecord, color: boolean): string {
  const src = paint(color, SOURCE_STYLE[r.source], r.source.padEnd(6));
  const rel = formatRel(r.rel_ms);
  if (r.source === 'serial') {
    const vm = typeof r.fields?.vm === 'string' ? `${r.fields.vm} ` : '';
    return `${rel}  ${src}  ${paint(color, 'dim', `${vm}│`)} ${r.msg}`;
  }
  const lvl =
    r.level && r.level !== 'info'
      ? `${paint(color, r.level === 'warn' ? 'yellow' : r.level === 'debug' || r.level === 'trace' ? 'dim' : 'red', r.level)} `
      : '';
  let msg = r.msg;
  if (r.source === 'step') {
    const failed = r.fields?.state === 'failed' || r.fields?.state === 'canceled';
    msg = paint(color, failed ? 'red' : 'cyan', msg);
  }
  const dur = r.duration_ms !== undefined ? ` (${formatDuration(r.duration_ms)})` : '';
  return `${rel}  ${src}  ${lvl}${msg}${dur}${fieldText(r)}`;
}

/** The header line of a trace: what the op was and how it ended. */
export function formatTraceHeader(s: OpSummary | undefined, opId: string, color: boolean): string {
  if (!s) return `${opId} (no record kept; log lines only)`;
  const parts = [s.op_id, s.method];
  if (s.kind && s.kind !== s.method) parts.push(`(${s.kind})`);
  if (s.vm) parts.push(`vm ${s.vm}`);
  const took = s.duration_ms !== undefined ? ` in ${formatDuration(s.duration_ms)}` : '';
  parts.push(`${formatResult(s, color)}${took}`);
  parts.push(`started ${formatTimestamp(s.started_at)}`);
  return parts.join('  ');
}
