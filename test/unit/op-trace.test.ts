// buildTrace over a real store and log files: one timeline of the daemon's and helper's lines,
// the steps and the console; unknown ids; logs rotated away.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.ts';
import { FileLogSource } from '../../src/ops/file-log.ts';
import { SerialWatcher } from '../../src/ops/serial.ts';
import { buildTrace, type TraceDeps } from '../../src/ops/trace.ts';
import { toErrorResponse } from '../../src/rpc/errors.ts';
import { OpError } from '../../src/ops/errors.ts';
import { openStore } from '../../src/store/db.ts';
import { RpcLogRepo } from '../../src/store/rpclog.ts';
import type { Store } from '../../src/store/store.ts';
import { MemoryLog } from '../helpers/logs.ts';

const OP = 'op-3f9a1c07b2d4';
const T0 = Date.parse('2026-01-14T09:31:02.000Z');
const at = (ms: number): string => new Date(T0 + ms).toISOString();
const line = (ms: number, name: string, msg: string, extra: object = {}, op = OP): string =>
  JSON.stringify({ level: 'info', time: at(ms), pid: 1, name, op_id: op, msg, ...extra });

let dir: string;
let store: Store;
let deps: TraceDeps;
let daemonLog: string;
let helperLog: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-optrace-'));
  store = openStore(join(dir, 'state.db'));
  const repo = new RpcLogRepo(store.db);
  daemonLog = join(dir, 'bangerd.log');
  helperLog = join(dir, 'bangerd-root.log');
  deps = {
    repo,
    store,
    serial: new SerialWatcher(repo, createLogger({ name: 't', stream: new MemoryLog() })),
    retention: { maxCount: 1000, maxAgeDays: 30 },
    logs: async () => ({
      sources: [new FileLogSource('daemon', daemonLog), new FileLogSource('helper', helperLog)],
      notes: [],
    }),
  };
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

function recordCreate(): void {
  deps.repo.insert({
    opId: OP,
    method: 'vm.create.begin',
    startedAt: at(0),
    endedAt: at(3),
    durationMs: 3,
    ok: true,
    code: null,
    message: null,
    vmName: null,
  });
  store.operations.insert({
    id: OP,
    kind: 'vm.create',
    method: 'vm.create.begin',
    vmName: 'calm-otter',
    startedAt: at(1),
  });
  store.operations.update(OP, {
    state: 'failed',
    endedAt: at(5000),
    steps: [
      { name: 'prepare_disk', state: 'undone', started_at: at(10), duration_ms: 40 },
      { name: 'boot', state: 'undone', started_at: at(60), duration_ms: 300 },
      { name: 'wait_ready', state: 'failed', started_at: at(400), duration_ms: 4590, detail: 'injected' },
    ],
    error: { code: 'operation_failed', message: 'injected' },
  });
  deps.repo.serialBegin({
    opId: OP,
    vmId: 'v1',
    vmName: 'calm-otter',
    path: join(dir, 'gone.log'),
    startOffset: 0,
    startedAt: at(70),
  });
  deps.repo.serialEnd({
    opId: OP,
    vmId: 'v1',
    endOffset: 79,
    endedAt: at(4990),
    samples: [
      [0, 42],
      [900, 66],
      [2000, 79],
    ],
    text: `\nbanger: ${OP} vm.create begins\n[    0.0] Linux version\nlogin: ready\n`,
    truncated: false,
  });
}

describe('buildTrace', () => {
  it('merges the daemon, helper, step and serial records of one id in time order', async () => {
    recordCreate();
    writeFileSync(
      daemonLog,
      [
        line(2, 'bangerd', 'rpc completed', { method: 'vm.create.begin', duration_ms: 3 }),
        line(61, 'bangerd', 'step started', { step: 'boot', operation_id: OP }),
        line(1000, 'bangerd', 'other op', {}, 'op-aaaaaa'),
        line(4991, 'bangerd', 'step failed', { step: 'wait_ready', err: 'injected', level: 'warn' }),
      ].join('\n') + '\n',
    );
    writeFileSync(
      helperLog,
      line(200, 'bangerd-root', 'helper rpc completed', { method: 'priv.tap.ensure', duration_ms: 9 }) + '\n',
    );
    const r = await buildTrace(deps, OP);
    expect(r.notes).toEqual([]);
    expect(r.summary).toMatchObject({
      op_id: OP,
      ok: false,
      kind: 'vm.create',
      vm: 'calm-otter',
      duration_ms: 5000,
    });
    expect(r.records.map((x) => [x.rel_ms, x.source, x.msg])).toEqual([
      [2, 'daemon', 'rpc completed'],
      [10, 'step', 'prepare_disk undone'],
      [60, 'step', 'boot undone'],
      [61, 'daemon', 'step started'],
      [70, 'serial', `banger: ${OP} vm.create begins`],
      [200, 'helper', 'helper rpc completed'],
      [400, 'step', 'wait_ready failed: injected'],
      [970, 'serial', '[    0.0] Linux version'],
      [2070, 'serial', 'login: ready'],
      [4991, 'daemon', 'step failed'],
      [5000, 'step', 'vm.create failed: injected'],
    ]);
    expect(r.records.find((x) => x.source === 'helper')!.duration_ms).toBe(9);
    expect(r.records.filter((x) => x.source === 'serial').every((x) => x.in_window)).toBe(true);
    const steps = r.records.filter((x) => x.source === 'step' && x.fields?.step);
    expect(steps.reduce((n, s) => n + (s.duration_ms ?? 0), 0)).toBe(40 + 300 + 4590);
    const noSerial = await buildTrace(deps, OP, { serial: false });
    expect(noSerial.records.some((x) => x.source === 'serial')).toBe(false);
  });

  it('an unknown id is not_found, naming where it looked', async () => {
    writeFileSync(daemonLog, line(0, 'bangerd', 'rpc completed') + '\n');
    const err = await buildTrace(deps, 'op-ffffffffffff').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpError);
    expect(toErrorResponse(err, 'op-000000').code).toBe('not_found');
    expect((err as OpError).message).toMatch(
      /no trace of op-ffffffffffff: .*newest 1000 operations .*bangerd\.log/,
    );
  });

  it('logs rotated away: the record and steps remain, notes say why lines are missing', async () => {
    recordCreate();
    writeFileSync(`${daemonLog}.1`, line(99_000_000, 'bangerd', 'much later', {}, 'op-aaaaaa') + '\n');
    writeFileSync(daemonLog, line(99_100_000, 'bangerd', 'later still', {}, 'op-aaaaaa') + '\n');
    const r = await buildTrace(deps, OP, { serial: false });
    expect(r.records.map((x) => x.source)).toEqual(['step', 'step', 'step', 'step']);
    expect(r.notes.join('\n')).toMatch(
      /daemon's log .*bangerd\.log begins at .*after this operation began.*rotated away/,
    );
    expect(r.notes.join('\n')).toMatch(/root helper's log .*bangerd-root\.log does not exist/);
  });

  it('lines but no record (pruned, or a status poll): shown, with a note', async () => {
    writeFileSync(
      daemonLog,
      line(0, 'bangerd', 'rpc completed', { method: 'vm.create.status' }, 'op-bbbbbb') + '\n',
    );
    writeFileSync(helperLog, '');
    const r = await buildTrace(deps, 'op-bbbbbb');
    expect(r.summary).toBeUndefined();
    expect(r.records).toHaveLength(1);
    expect(r.records[0]!.rel_ms).toBe(0);
    expect(r.notes[0]).toMatch(/no record of op-bbbbbb is kept/);
  });
});
