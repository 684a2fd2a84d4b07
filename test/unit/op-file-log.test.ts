// Reading an op's lines back from log files: only its lines, rotations included, and a note when
// the lines it needs were rotated away.
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileLogSource, logFiles } from '../../src/ops/file-log.ts';
import { parseLogLine } from '../../src/ops/records.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-oplog-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const line = (time: string, op: string | undefined, msg: string, extra: object = {}): string =>
  JSON.stringify({
    level: 'info',
    time,
    pid: 1,
    name: 'bangerd',
    ...(op ? { op_id: op } : {}),
    msg,
    ...extra,
  });

describe('parseLogLine', () => {
  it('keeps the lines of the op, with level, duration and other fields', () => {
    const r = parseLogLine(
      line('2026-01-14T09:31:02.500Z', 'op-aaaaaa', 'rpc completed', { method: 'vm.stop', duration_ms: 12 }),
      'op-aaaaaa',
      'daemon',
    );
    expect(r).toMatchObject({
      source: 'daemon',
      msg: 'rpc completed',
      level: 'info',
      duration_ms: 12,
      time: '2026-01-14T09:31:02.500Z',
      fields: { method: 'vm.stop', duration_ms: 12 },
    });
    expect(r!.fields).not.toHaveProperty('pid');
  });

  it('skips other ids (even ones the id is a prefix of), non-JSON and numeric pino levels map', () => {
    expect(
      parseLogLine(line('2026-01-14T09:31:02Z', 'op-aaaaaa11', 'x'), 'op-aaaaaa', 'daemon'),
    ).toBeUndefined();
    expect(parseLogLine('op-aaaaaa crashed here', 'op-aaaaaa', 'daemon')).toBeUndefined();
    const n = parseLogLine(
      JSON.stringify({ level: 40, time: 1700000000000, op_id: 'op-aaaaaa', msg: 'w' }),
      'op-aaaaaa',
      'helper',
    );
    expect(n).toMatchObject({ level: 'warn', source: 'helper', time: new Date(1700000000000).toISOString() });
  });

  it('keeps a line that names the op as the operation it acts on', () => {
    const r = parseLogLine(
      line('2026-01-14T09:31:02Z', 'op-bbbbbb', 'step started', { operation_id: 'op-aaaaaa' }),
      'op-aaaaaa',
      'daemon',
    );
    expect(r?.msg).toBe('step started');
  });
});

describe('FileLogSource', () => {
  it('reads the live file and its rotations oldest first, only lines with the id', async () => {
    const f = join(dir, 'bangerd.log');
    writeFileSync(
      `${f}.1`,
      [
        line('2026-01-14T09:00:00Z', 'op-000001', 'old'),
        line('2026-01-14T09:31:02Z', 'op-aaaaaa', 'in rotation'),
      ].join('\n') + '\n',
    );
    writeFileSync(
      f,
      [
        line('2026-01-14T09:31:03Z', 'op-aaaaaa', 'in live file'),
        'not json op-aaaaaa',
        line('2026-01-14T09:31:04Z', 'op-bbbbbb', 'other op'),
        line('2026-01-14T09:31:05Z', 'op-aaaaaa', 'torn last line').slice(0, -5),
      ].join('\n'),
    );
    const r = await new FileLogSource('daemon', f).read({
      opId: 'op-aaaaaa',
      from: Date.parse('2026-01-14T09:31:02Z'),
    });
    expect(r.records.map((x) => x.msg)).toEqual(['in rotation', 'in live file']);
    expect(r.notes).toEqual([]);
  });

  it('an unknown id: no records and no notes', async () => {
    const f = join(dir, 'bangerd.log');
    writeFileSync(f, line('2026-01-14T09:31:03Z', 'op-aaaaaa', 'x') + '\n');
    const r = await new FileLogSource('daemon', f).read({ opId: 'op-ffffff' });
    expect(r).toEqual({ records: [], notes: [] });
  });

  it('says when the op began before the oldest line kept: rotated away', async () => {
    const f = join(dir, 'bangerd-root.log');
    writeFileSync(`${f}.1`, line('2026-01-14T10:00:00Z', 'op-cccccc', 'newer') + '\n');
    writeFileSync(`${f}.2.gz`, 'compressed');
    writeFileSync(f, line('2026-01-14T10:05:00Z', 'op-cccccc', 'newest') + '\n');
    const r = await new FileLogSource('helper', f).read({
      opId: 'op-aaaaaa',
      from: Date.parse('2026-01-14T09:31:02Z'),
    });
    expect(r.records).toEqual([]);
    expect(r.notes).toHaveLength(1);
    expect(r.notes[0]).toMatch(
      /root helper's log .* begins at 2026-01-14T10:00:00.000Z, after this operation began \(2026-01-14T09:31:02.000Z\): its earlier lines were rotated away/,
    );
    expect(r.notes[0]).toContain('.2.gz');
  });

  it('skips a rotation last written before the op began, and notes a missing file', async () => {
    const f = join(dir, 'bangerd.log');
    writeFileSync(`${f}.1`, line('2026-01-14T09:31:02Z', 'op-aaaaaa', 'stale but matching') + '\n');
    utimesSync(`${f}.1`, new Date('2026-01-13T00:00:00Z'), new Date('2026-01-13T00:00:00Z'));
    writeFileSync(f, line('2026-01-14T09:31:03Z', 'op-aaaaaa', 'live') + '\n');
    const r = await new FileLogSource('daemon', f).read({
      opId: 'op-aaaaaa',
      from: Date.parse('2026-01-14T09:31:02Z'),
    });
    expect(r.records.map((x) => x.msg)).toEqual(['live']);
    expect(logFiles(f).files).toEqual([`${f}.1`, f]);

    const missing = await new FileLogSource('helper', join(dir, 'nope.log')).read({ opId: 'op-aaaaaa' });
    expect(missing.notes[0]).toMatch(/root helper's log .*nope\.log does not exist/);
  });

  it('streams a large file and caps what it keeps', async () => {
    const f = join(dir, 'big.log');
    const lines: string[] = [];
    for (let i = 0; i < 50_000; i++)
      lines.push(line('2026-01-14T09:31:03Z', i % 10 === 0 ? 'op-aaaaaa' : 'op-bbbbbb', `n${i}`));
    writeFileSync(f, lines.join('\n') + '\n');
    const r = await new FileLogSource('daemon', f, { maxRecords: 100 }).read({ opId: 'op-aaaaaa' });
    expect(r.records).toHaveLength(100);
    expect(r.notes[0]).toMatch(/only the first 100 lines/);
  });
});
