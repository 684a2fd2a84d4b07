// Summaries: an RPC's record joined with the operation it began; op.list's filters.
import { describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import { buildSummary, matches, operationFromRow, summarize } from '../../src/ops/summary.ts';
import type { RpcLogRow } from '../../src/store/rpclog.ts';

const rpc = (over: Partial<RpcLogRow> = {}): RpcLogRow => ({
  seq: 1,
  opId: 'op-3f9a1c',
  method: 'vm.create.begin',
  startedAt: '2026-01-14T09:31:02.000Z',
  endedAt: '2026-01-14T09:31:02.020Z',
  durationMs: 20,
  ok: true,
  code: null,
  message: null,
  vmName: null,
  ...over,
});
const create: Operation = {
  id: 'op-3f9a1c',
  kind: 'vm.create',
  method: 'vm.create.begin',
  state: 'failed',
  started_at: '2026-01-14T09:31:02.005Z',
  ended_at: '2026-01-14T09:31:35.700Z',
  vm: 'calm-otter',
  steps: [{ name: 'boot', state: 'failed', duration_ms: 5 }],
  error: { code: 'operation_failed', message: 'boot failed' },
};

describe('buildSummary', () => {
  it('a create: the RPC answered at once, the summary carries the operation outcome and total duration', () => {
    expect(buildSummary(rpc(), create)).toEqual({
      op_id: 'op-3f9a1c',
      method: 'vm.create.begin',
      started_at: '2026-01-14T09:31:02.000Z',
      ended_at: '2026-01-14T09:31:35.700Z',
      duration_ms: 33700,
      ok: false,
      code: 'operation_failed',
      message: 'boot failed',
      vm: 'calm-otter',
      kind: 'vm.create',
      state: 'failed',
      steps: 1,
    });
  });

  it('a plain call, failed; a running operation has no end', () => {
    expect(
      buildSummary(
        rpc({ method: 'vm.stop', ok: false, code: 'not_running', message: 'no', vmName: 'x' }),
        undefined,
      ),
    ).toMatchObject({
      ok: false,
      code: 'not_running',
      vm: 'x',
      duration_ms: 20,
    });
    const running = buildSummary(undefined, {
      ...create,
      state: 'running',
      ended_at: undefined,
      error: undefined,
    } as Operation);
    expect(running).toMatchObject({ ok: true, state: 'running' });
    expect(running.ended_at).toBeUndefined();
  });
});

describe('matches and summarize', () => {
  const s = buildSummary(rpc(), create);
  it('filters by method or kind, vm, failed, window', () => {
    expect(matches(s, { method: 'vm.create' })).toBe(true);
    expect(matches(s, { method: 'vm.create.begin' })).toBe(true);
    expect(matches(s, { method: 'vm.stop' })).toBe(false);
    expect(matches(s, { vm: 'calm-otter', failed_only: true })).toBe(true);
    expect(matches(s, { vm: 'other' })).toBe(false);
    expect(matches({ ...s, ok: true }, { failed_only: true })).toBe(false);
    expect(matches(s, { since: '2026-01-14T09:31:03.000Z' })).toBe(false);
    expect(matches(s, { until: '2026-01-14T09:31:03.000Z' })).toBe(true);
  });

  it('groups by id (first RPC wins), operations without a kept RPC row included, newest first', () => {
    const out = summarize(
      [
        rpc({ seq: 5, opId: 'op-bbbbbb', startedAt: '2026-01-14T10:00:00.000Z', method: 'vm.start' }),
        rpc(),
        rpc({ seq: 2, method: 'vm.create.status' }),
      ],
      [create, { ...create, id: 'op-cccccc', started_at: '2026-01-14T08:00:00.000Z' }],
    );
    expect(out.map((x) => [x.op_id, x.method])).toEqual([
      ['op-bbbbbb', 'vm.start'],
      ['op-3f9a1c', 'vm.create.begin'],
      ['op-cccccc', 'vm.create.begin'],
    ]);
  });

  it('operationFromRow drops malformed steps and keeps the error', () => {
    const op = operationFromRow({
      id: 'op-3f9a1c',
      kind: 'vm.create',
      method: 'vm.create.begin',
      state: 'running',
      vmId: null,
      vmName: 'v',
      imageName: null,
      startedAt: '2026-01-14T09:31:02.000Z',
      endedAt: null,
      steps: [{ name: 'boot', state: 'running' }, { nope: 1 }],
      error: null,
      result: null,
    });
    expect(op).toEqual({
      id: 'op-3f9a1c',
      kind: 'vm.create',
      method: 'vm.create.begin',
      state: 'running',
      started_at: '2026-01-14T09:31:02.000Z',
      vm: 'v',
      steps: [{ name: 'boot', state: 'running' }],
      current_step: 'boot',
    });
  });
});
