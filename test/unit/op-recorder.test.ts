// The recorder: one row per call (polls left out), the VM a call touched, an operation's summary
// line when it ends, and retention.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Operation } from '../../generated/types.gen.ts';
import { createLogger } from '../../src/log/logger.ts';
import { isQuietMethod, OpRecorder, vmFromParams } from '../../src/ops/recorder.ts';
import { SerialWatcher } from '../../src/ops/serial.ts';
import { openStore } from '../../src/store/db.ts';
import { RpcLogRepo } from '../../src/store/rpclog.ts';
import type { Store } from '../../src/store/store.ts';
import { MemoryLog } from '../helpers/logs.ts';

let dir: string;
let store: Store;
let repo: RpcLogRepo;
let mem: MemoryLog;
let rec: OpRecorder;
const live = new Set<string>();

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-oprec-'));
  store = openStore(join(dir, 'state.db'));
  repo = new RpcLogRepo(store.db);
  mem = new MemoryLog();
  const log = createLogger({ name: 'bangerd', stream: mem });
  rec = new OpRecorder({
    repo,
    store,
    log,
    serial: new SerialWatcher(repo, log),
    isLive: (id) => live.has(id),
    retention: { maxCount: 10, maxAgeDays: 30 },
    pruneEveryCalls: 5,
  });
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (opId: string, method: string, ok = true, params?: unknown) => ({
  opId,
  method,
  startedAt: Date.now(),
  endedAt: Date.now() + 10,
  durationMs: 10,
  ok,
  ...(ok ? {} : { code: 'not_found', message: 'gone' }),
  ...(params !== undefined ? { params } : {}),
});

describe('OpRecorder', () => {
  it('helpers: quiet methods, the VM a vm.* call names', () => {
    expect(['ping', 'vm.create.status', 'image.build.status', 'op.trace'].map(isQuietMethod)).toEqual([
      true,
      true,
      true,
      true,
    ]);
    expect(['daemon.status', 'vm.create.begin', 'vm.stop'].some(isQuietMethod)).toBe(false);
    expect(vmFromParams('vm.stop', { name: 'calm' })).toBe('calm');
    expect(vmFromParams('image.show', { name: 'default' })).toBeUndefined();
    expect(vmFromParams('vm.list', undefined)).toBeUndefined();
  });

  it('records calls (not successful polls, but failed ones), with the VM', () => {
    rec.onRpcFinished(call('op-000001', 'vm.stop', true, { name: 'calm' }));
    rec.onRpcFinished(call('op-000002', 'vm.create.status'));
    rec.onRpcFinished(call('op-000003', 'vm.create.status', false));
    rec.onRpcFinished({ ...call('op-000004', 'vm.create.begin'), vm: 'noted' });
    rec.onRpcFinished(call('op-000005', '', false));
    expect(repo.list().map((r) => [r.opId, r.method, r.ok, r.vmName])).toEqual([
      ['op-000005', '(malformed request)', false, null],
      ['op-000004', 'vm.create.begin', true, 'noted'],
      ['op-000003', 'vm.create.status', false, null],
      ['op-000001', 'vm.stop', true, 'calm'],
    ]);
  });

  it('writes one summary line when an operation ends', () => {
    const op: Operation = {
      id: 'op-0000aa',
      kind: 'vm.create',
      method: 'vm.create.begin',
      state: 'running',
      started_at: '2026-01-14T09:31:02.000Z',
      steps: [],
    };
    rec.onOperationSaved(op);
    expect(mem.byOp('op-0000aa')).toEqual([]);
    const failed = {
      ...op,
      state: 'failed' as const,
      ended_at: '2026-01-14T09:31:05.000Z',
      error: { code: 'operation_failed', message: 'x' },
    };
    rec.onOperationSaved(failed);
    rec.onOperationSaved(failed);
    const lines = mem.byOp('op-0000aa');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      msg: 'operation failed',
      kind: 'vm.create',
      duration_ms: 3000,
      code: 'operation_failed',
      level: 'warn',
    });
  });

  it('prunes every few calls to the configured count', () => {
    for (let i = 0; i < 25; i++) rec.onRpcFinished(call(`op-1${String(i).padStart(5, '0')}`, 'vm.stop'));
    expect(repo.list().length).toBeLessThanOrEqual(10 + 5);
    rec.prune();
    expect(repo.list()).toHaveLength(10);
  });
});
