// The op record tables (migration 2): one row per RPC, serial windows, retention by count and age.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/db.ts';
import { RpcLogRepo } from '../../src/store/rpclog.ts';
import type { Store } from '../../src/store/store.ts';

let dir: string;
let store: Store;
let repo: RpcLogRepo;
let now: number;
const DAY = 86_400_000;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-opstore-'));
  now = Date.parse('2026-01-14T12:00:00.000Z');
  store = openStore(join(dir, 'state.db'), { now: () => new Date(now) });
  repo = new RpcLogRepo(store.db, () => new Date(now));
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function call(opId: string, at: number, extra: Partial<Parameters<RpcLogRepo['insert']>[0]> = {}) {
  return repo.insert({
    opId,
    method: 'vm.stop',
    startedAt: new Date(at),
    endedAt: new Date(at + 5),
    durationMs: 5,
    ok: true,
    code: null,
    message: null,
    vmName: null,
    ...extra,
  });
}

describe('RpcLogRepo', () => {
  it('records calls and reads them back by id and by time window, newest first', () => {
    call('op-000001', now - 3000);
    call('op-000002', now - 2000, { ok: false, code: 'not_found', message: 'vm "x" not found', vmName: 'x' });
    call('op-000003', now - 1000);
    expect(repo.byOp('op-000002')).toEqual([
      expect.objectContaining({
        opId: 'op-000002',
        ok: false,
        code: 'not_found',
        vmName: 'x',
        durationMs: 5,
      }),
    ]);
    expect(repo.list().map((r) => r.opId)).toEqual(['op-000003', 'op-000002', 'op-000001']);
    expect(
      repo
        .list({ since: new Date(now - 2500).toISOString(), until: new Date(now - 1000).toISOString() })
        .map((r) => r.opId),
    ).toEqual(['op-000002']);
  });

  it('keeps serial windows, closed with their capture', () => {
    repo.serialBegin({
      opId: 'op-000001',
      vmId: 'v1',
      vmName: 'calm',
      path: '/x/serial.log',
      startOffset: 10,
      startedAt: new Date(now),
    });
    expect(repo.serialWindows('op-000001')[0]).toMatchObject({
      startOffset: 10,
      endOffset: null,
      text: null,
    });
    repo.serialEnd({
      opId: 'op-000001',
      vmId: 'v1',
      endOffset: 30,
      endedAt: new Date(now + 9),
      samples: [
        [0, 10],
        [9, 30],
      ],
      text: 'hello',
      truncated: false,
    });
    expect(repo.serialWindows('op-000001')).toEqual([
      expect.objectContaining({
        vmName: 'calm',
        startOffset: 10,
        endOffset: 30,
        samples: [
          [0, 10],
          [9, 30],
        ],
        text: 'hello',
        truncated: false,
      }),
    ]);
  });

  it('retention: by count keeps the newest, by age drops old ones, captures only for the newest few', () => {
    for (let i = 0; i < 10; i++) call(`op-00000${i}`, now - (10 - i) * DAY);
    for (let i = 0; i < 3; i++) {
      repo.serialBegin({
        opId: `op-00000${i + 7}`,
        vmId: 'v',
        vmName: 'v',
        path: '/p',
        startOffset: 0,
        startedAt: new Date(now - (3 - i) * 1000),
      });
      repo.serialEnd({
        opId: `op-00000${i + 7}`,
        vmId: 'v',
        endOffset: 1,
        endedAt: new Date(now),
        samples: [],
        text: 'x',
        truncated: false,
      });
    }
    expect(repo.prune({ maxCount: 5, maxSerialTexts: 1 })).toBe(5);
    expect(repo.list().map((r) => r.opId)).toEqual([
      'op-000009',
      'op-000008',
      'op-000007',
      'op-000006',
      'op-000005',
    ]);
    expect(repo.serialWindows('op-000009')[0]!.text).toBe('x');
    expect(repo.serialWindows('op-000008')[0]!.text).toBeNull();
    repo.prune({ maxAgeDays: 2.5 });
    expect(repo.list().map((r) => r.opId)).toEqual(['op-000009', 'op-000008']);
  });
});
