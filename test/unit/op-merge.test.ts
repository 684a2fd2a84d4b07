// The merger: records from several sources on one timeline, ordered by time, labels kept.
import { describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import { mergeTimeline, stepRecords } from '../../src/ops/merge.ts';
import type { SourceRecord, TraceSource } from '../../src/ops/records.ts';

const T0 = Date.parse('2026-01-14T09:31:02.000Z');
function rec(source: TraceSource, ms: number, msg: string): SourceRecord {
  return { t: T0 + ms, time: new Date(T0 + ms).toISOString(), source, msg };
}

describe('mergeTimeline', () => {
  it('orders records of three sources by time and keeps each source label', () => {
    const daemon = [
      rec('daemon', 0, 'step started'),
      rec('daemon', 900, 'step done'),
      rec('daemon', 2000, 'rpc completed'),
    ];
    const helper = [rec('helper', 150, 'helper rpc completed'), rec('helper', 1500, 'helper rpc failed')];
    const serial = [
      rec('serial', 400, 'Linux version 6.1'),
      rec('serial', 1200, 'Reached target multi-user'),
    ];
    const out = mergeTimeline([daemon, helper, serial], T0);
    expect(out.map((r) => [r.rel_ms, r.source, r.msg])).toEqual([
      [0, 'daemon', 'step started'],
      [150, 'helper', 'helper rpc completed'],
      [400, 'serial', 'Linux version 6.1'],
      [900, 'daemon', 'step done'],
      [1200, 'serial', 'Reached target multi-user'],
      [1500, 'helper', 'helper rpc failed'],
      [2000, 'daemon', 'rpc completed'],
    ]);
    // No internal sort key leaks out.
    expect(out.every((r) => !('t' in r))).toBe(true);
  });

  it('at equal times puts the step first, then daemon, helper, serial; one source keeps its order', () => {
    const out = mergeTimeline(
      [
        [rec('serial', 5, 's1'), rec('serial', 5, 's2')],
        [rec('helper', 5, 'h')],
        [rec('daemon', 5, 'd1'), rec('daemon', 5, 'd2')],
        [rec('step', 5, 'boot done')],
      ],
      T0,
    );
    expect(out.map((r) => r.msg)).toEqual(['boot done', 'd1', 'd2', 'h', 's1', 's2']);
  });

  it('times are relative to the operation start, negative before it', () => {
    const out = mergeTimeline([[rec('daemon', -120, 'before'), rec('daemon', 30, 'after')]], T0);
    expect(out.map((r) => r.rel_ms)).toEqual([-120, 30]);
  });
});

describe('stepRecords', () => {
  it('one record per step at its start with its duration, and the outcome at the end', () => {
    const op: Operation = {
      id: 'op-abcdef',
      kind: 'vm.create',
      method: 'vm.create.begin',
      state: 'failed',
      started_at: new Date(T0).toISOString(),
      ended_at: new Date(T0 + 5000).toISOString(),
      steps: [
        {
          name: 'prepare_disk',
          state: 'undone',
          started_at: new Date(T0 + 10).toISOString(),
          duration_ms: 40,
        },
        {
          name: 'wait_ready',
          state: 'failed',
          started_at: new Date(T0 + 100).toISOString(),
          duration_ms: 4800,
          detail: 'boom',
        },
      ],
      error: { code: 'operation_failed', message: 'boom' },
    };
    const recs = stepRecords(op);
    expect(recs.map((r) => [r.t - T0, r.source, r.msg, r.duration_ms])).toEqual([
      [10, 'step', 'prepare_disk undone', 40],
      [100, 'step', 'wait_ready failed: boom', 4800],
      [5000, 'step', 'vm.create failed: boom', 5000],
    ]);
    expect(recs[2]!.fields).toMatchObject({ state: 'failed', code: 'operation_failed' });
  });
});
