// journald: the parser over sample `journalctl -o json` output, and the reader's arguments.
import { describe, expect, it } from 'vitest';
import { JournaldLogSource, journalArgs, parseJournalEntry } from '../../src/ops/journald.ts';

const pino = (o: object): string => JSON.stringify({ level: 'info', pid: 42, name: 'bangerd', ...o });

// Shaped like real `journalctl -o json` lines: every value a string, MESSAGE the stderr line.
const SAMPLE = [
  {
    __CURSOR: 's=1;i=1',
    __REALTIME_TIMESTAMP: '1768383062120000',
    __MONOTONIC_TIMESTAMP: '123',
    _SYSTEMD_UNIT: 'bangerd.service',
    PRIORITY: '6',
    SYSLOG_IDENTIFIER: 'bangerd',
    MESSAGE: pino({
      time: '2026-01-14T09:31:02.110Z',
      op_id: 'op-3f9a1c',
      msg: 'rpc completed',
      method: 'vm.stop',
      duration_ms: 7,
    }),
  },
  {
    __REALTIME_TIMESTAMP: '1768383062300000',
    PRIORITY: '3',
    MESSAGE: 'plain text from a crash mentioning op-3f9a1c',
  },
  {
    __REALTIME_TIMESTAMP: '1768383062400000',
    PRIORITY: '6',
    // Not valid UTF-8 or too long: journald stores MESSAGE as an array of bytes.
    MESSAGE: [
      ...Buffer.from(
        pino({ time: '2026-01-14T09:31:02.400Z', op_id: 'op-3f9a1c', msg: 'step failed', level: 'warn' }),
      ),
    ],
  },
  {
    __REALTIME_TIMESTAMP: '1768383062500000',
    MESSAGE: pino({ time: '2026-01-14T09:31:02.500Z', op_id: 'op-3f9a1c0', msg: 'other op' }),
  },
  { __REALTIME_TIMESTAMP: '1768383062600000', MESSAGE: null },
].map((e) => JSON.stringify(e));

describe('parseJournalEntry', () => {
  it('turns pino JSON messages into records with their own time; keeps plain lines at the entry time', () => {
    const recs = SAMPLE.map((l) => parseJournalEntry(l, 'op-3f9a1c', 'daemon')).filter(
      (r) => r !== undefined,
    );
    expect(recs.map((r) => [r.time, r.source, r.level, r.msg])).toEqual([
      ['2026-01-14T09:31:02.110Z', 'daemon', 'info', 'rpc completed'],
      ['2026-01-14T09:31:02.300Z', 'daemon', 'error', 'plain text from a crash mentioning op-3f9a1c'],
      ['2026-01-14T09:31:02.400Z', 'daemon', 'warn', 'step failed'],
    ]);
    expect(recs[0]!.duration_ms).toBe(7);
    expect(recs[0]!.fields).toMatchObject({ method: 'vm.stop' });
  });

  it('ignores garbage', () => {
    expect(parseJournalEntry('not json', 'op-3f9a1c', 'helper')).toBeUndefined();
    expect(parseJournalEntry('[1,2]', 'op-3f9a1c', 'helper')).toBeUndefined();
  });
});

describe('JournaldLogSource', () => {
  it('asks journalctl for the unit, the id and the window, and parses what it prints', async () => {
    let argv: string[] = [];
    const src = new JournaldLogSource('helper', 'bangerd-root.service', (a) => {
      argv = a;
      return {
        lines: (async function* () {
          yield* SAMPLE;
        })(),
        done: Promise.resolve({ code: 0, stderr: '' }),
      };
    });
    const from = Date.parse('2026-01-14T09:31:02.000Z');
    const r = await src.read({ opId: 'op-3f9a1c', from, to: from + 5000 });
    expect(argv).toEqual(journalArgs('bangerd-root.service', { opId: 'op-3f9a1c', from, to: from + 5000 }));
    expect(argv).toEqual(
      expect.arrayContaining(['-o', 'json', '-u', 'bangerd-root.service', '--grep', 'op-3f9a1c']),
    );
    expect(argv[argv.indexOf('--since') + 1]).toBe(`@${Math.floor((from - 60_000) / 1000)}`);
    expect(r.records.map((x) => x.source)).toEqual(['helper', 'helper', 'helper']);
    expect(r.notes).toEqual([]);
  });

  it('notes a journalctl that cannot run; a grep without matches is no error', async () => {
    const missing = new JournaldLogSource('daemon', 'bangerd.service', () => ({
      lines: (async function* () {})(),
      done: Promise.resolve({ code: -1, stderr: 'spawn journalctl ENOENT' }),
    }));
    expect((await missing.read({ opId: 'op-3f9a1c' })).notes[0]).toMatch(
      /cannot run journalctl for the daemon's log/,
    );
    const none = new JournaldLogSource('daemon', 'bangerd.service', () => ({
      lines: (async function* () {})(),
      done: Promise.resolve({ code: 1, stderr: '' }),
    }));
    expect(await none.read({ opId: 'op-3f9a1c' })).toEqual({ records: [], notes: [] });
  });
});
