// The CLI side of `banger op`: op ids and times as typed, table cells, timeline lines.
import { describe, expect, it } from 'vitest';
import type { OpSummary, TraceRecord } from '../../generated/types.gen.ts';
import {
  formatRel,
  formatResult,
  formatTraceHeader,
  formatTraceLine,
  opColumns,
  parseOpId,
  parseWhen,
} from '../../src/cli/op-format.ts';
import { ErrorResponse } from '../../src/rpc/errors.ts';

const NOW = Date.parse('2026-01-14T12:00:00.000Z');

describe('parseOpId / parseWhen', () => {
  it('accepts an op id as errors print it, or its hex alone', () => {
    expect(parseOpId('op-3f9a1c07b2d4')).toBe('op-3f9a1c07b2d4');
    expect(parseOpId('3F9A1C')).toBe('op-3f9a1c');
    const e = (() => {
      try {
        parseOpId('op-xyz');
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(ErrorResponse);
    expect((e as ErrorResponse).code).toBe('bad_request');
  });

  it('reads durations ago and dates', () => {
    expect(parseWhen('30m', '--since', NOW)).toBe('2026-01-14T11:30:00.000Z');
    expect(parseWhen('2d', '--since', NOW)).toBe('2026-01-12T12:00:00.000Z');
    expect(parseWhen('2026-01-14T09:30:00Z', '--until', NOW)).toBe('2026-01-14T09:30:00.000Z');
    expect(() => parseWhen('yesterday-ish', '--since', NOW)).toThrow(
      /--since yesterday-ish: give a duration ago/,
    );
  });
});

const summary: OpSummary = {
  op_id: 'op-3f9a1c',
  method: 'vm.create.begin',
  started_at: '2026-01-14T11:59:00.000Z',
  ended_at: '2026-01-14T11:59:33.700Z',
  duration_ms: 33700,
  ok: false,
  code: 'operation_failed',
  vm: 'calm-otter',
  kind: 'vm.create',
  state: 'failed',
};

describe('list and header', () => {
  it('table cells: relative start, duration, result', () => {
    const cells = opColumns(false, NOW).map((c) => c.get(summary));
    expect(cells).toEqual([
      'op-3f9a1c',
      'vm.create.begin',
      'calm-otter',
      '1m ago',
      '33.7 s',
      'operation_failed',
    ]);
    expect(formatResult({ ...summary, state: 'running' }, false)).toBe('running');
    expect(formatResult({ ...summary, ok: true, state: 'succeeded' }, false)).toBe('ok');
  });

  it('the trace header says what and how it ended', () => {
    expect(formatTraceHeader(summary, summary.op_id, false)).toMatch(
      /^op-3f9a1c {2}vm\.create\.begin {2}\(vm\.create\) {2}vm calm-otter {2}operation_failed in 33\.7 s {2}started 2026-01-14 11:59:00 UTC/,
    );
    expect(formatTraceHeader(undefined, 'op-3f9a1c', false)).toBe(
      'op-3f9a1c (no record kept; log lines only)',
    );
  });
});

describe('timeline lines', () => {
  const base = { time: '2026-01-14T11:59:00.000Z' };
  it('relative times line up', () => {
    expect(formatRel(0)).toBe('   +0.000s');
    expect(formatRel(12_345)).toBe('  +12.345s');
    expect(formatRel(-120)).toBe('   -0.120s');
  });

  it('daemon and helper lines show level (unless info), duration and fields', () => {
    const d: TraceRecord = {
      ...base,
      rel_ms: 4991,
      source: 'daemon',
      level: 'warn',
      msg: 'step failed',
      duration_ms: 4590,
      fields: { step: 'wait_ready', err: 'injected fault', duration_ms: 4590, operation_id: 'op-3f9a1c' },
    };
    expect(formatTraceLine(d, false)).toBe(
      '   +4.991s  daemon  warn step failed (4.6 s)  step=wait_ready err="injected fault"',
    );
    const h: TraceRecord = {
      ...base,
      rel_ms: 200,
      source: 'helper',
      level: 'info',
      msg: 'helper rpc completed',
      duration_ms: 9,
      fields: { method: 'priv.ping' },
    };
    expect(formatTraceLine(h, false)).toBe(
      '   +0.200s  helper  helper rpc completed (9 ms)  method=priv.ping',
    );
  });

  it('serial lines are marked as console lines of a VM; steps show their duration', () => {
    const s: TraceRecord = {
      ...base,
      rel_ms: 970,
      source: 'serial',
      msg: '[    0.0] Linux version',
      in_window: true,
      fields: { vm: 'calm-otter', offset: 42 },
    };
    expect(formatTraceLine(s, false)).toBe('   +0.970s  serial  calm-otter │ [    0.0] Linux version');
    const st: TraceRecord = {
      ...base,
      rel_ms: 60,
      source: 'step',
      msg: 'boot done',
      duration_ms: 300,
      fields: { step: 'boot', state: 'done' },
    };
    expect(formatTraceLine(st, false)).toBe('   +0.060s  step    boot done (300 ms)');
  });
});
