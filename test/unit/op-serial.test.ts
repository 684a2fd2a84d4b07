// Serial windows: the console bytes an operation covers, with the time each line was first seen,
// captured even when the VM's directory is deleted before the operation ends.
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.ts';
import { serialRecords, SerialWatcher, viewOfStored, type SerialWindowStore } from '../../src/ops/serial.ts';
import type { SerialWindowRow } from '../../src/store/rpclog.ts';
import { MemoryLog } from '../helpers/logs.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-opserial-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

type Saved = Parameters<SerialWindowStore['serialEnd']>[0] &
  Partial<Parameters<SerialWindowStore['serialBegin']>[0]>;
function fakeStore(): SerialWindowStore & { rows: Map<string, Saved> } {
  const rows = new Map<string, Saved>();
  return {
    rows,
    serialBegin(w) {
      rows.set(w.opId, {
        ...w,
        endOffset: -1,
        endedAt: new Date(0),
        samples: [],
        text: null,
        truncated: false,
      });
    },
    serialEnd(w) {
      rows.set(w.opId, { ...rows.get(w.opId)!, ...w });
    },
  };
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = createLogger({ name: 'test', stream: new MemoryLog() });

async function markAndBegin(w: SerialWatcher, path: string, opId: string): Promise<number> {
  const start = existsSync(path) ? statSync(path).size : 0;
  appendFileSync(path, `\nbanger: ${opId} vm.start begins\n`);
  await w.begin({ opId, vmId: 'vm1', vmName: 'calm-otter', path, startOffset: start });
  return start;
}

describe('SerialWatcher', () => {
  it('captures the window from the marker, each line timed when first seen', async () => {
    const path = join(dir, 'serial.log');
    writeFileSync(path, 'output of an earlier boot\n');
    const store = fakeStore();
    const w = new SerialWatcher(store, log, { sampleMs: 10 });
    const start = await markAndBegin(w, path, 'op-aaaaaa');
    expect(start).toBe('output of an earlier boot\n'.length);
    expect(w.hasOpen('op-aaaaaa')).toBe(true);
    appendFileSync(path, '[    0.000000] Linux version 6.1\n');
    await sleep(150);
    appendFileSync(path, '\x1b[0;32m  OK  \x1b[0m Reached target multi-user\r\n');
    await sleep(60);
    await w.end('op-aaaaaa');
    appendFileSync(path, 'after the op\n');
    expect(w.hasOpen('op-aaaaaa')).toBe(false);

    const saved = store.rows.get('op-aaaaaa')!;
    expect(saved.text).toBe(
      '\nbanger: op-aaaaaa vm.start begins\n[    0.000000] Linux version 6.1\n\x1b[0;32m  OK  \x1b[0m Reached target multi-user\r\n',
    );
    expect(saved.endOffset).toBe(start + Buffer.byteLength(saved.text!));
    const view = {
      vmName: 'calm-otter',
      path,
      startOffset: start,
      endOffset: saved.endOffset,
      t0: Date.now() - 1000,
      endedAt: Date.now(),
      samples: saved.samples,
      text: saved.text,
      truncated: false,
    };
    const { records, notes } = serialRecords(view);
    expect(notes).toEqual([]);
    expect(records.map((r) => r.msg)).toEqual([
      'banger: op-aaaaaa vm.start begins',
      '[    0.000000] Linux version 6.1',
      '  OK   Reached target multi-user',
    ]);
    expect(
      records.every((r) => r.source === 'serial' && r.in_window === true && r.fields?.vm === 'calm-otter'),
    ).toBe(true);
    // Seen in order; the last line at least ~150 ms after the kernel line.
    const ts = records.map((r) => r.t);
    expect(ts[1]! - ts[0]!).toBeGreaterThanOrEqual(0);
    expect(ts[2]! - ts[1]!).toBeGreaterThanOrEqual(100);
    expect(records[1]!.fields?.offset).toBe(start + '\nbanger: op-aaaaaa vm.start begins\n'.length);
  });

  it('still captures the window when the file is deleted before the op ends (a failed create undoes its disk)', async () => {
    const path = join(dir, 'serial.log');
    const store = fakeStore();
    const w = new SerialWatcher(store, log, { sampleMs: 10 });
    await markAndBegin(w, path, 'op-bbbbbb');
    appendFileSync(path, 'kernel panic? no, just a line\n');
    await sleep(30);
    unlinkSync(path);
    await w.end('op-bbbbbb');
    expect(store.rows.get('op-bbbbbb')!.text).toContain('just a line');
  });

  it('keeps the head and tail of a long window, with offsets right on both sides', async () => {
    const path = join(dir, 'serial.log');
    const store = fakeStore();
    const w = new SerialWatcher(store, log, { sampleMs: 10, captureBytes: 200 });
    const start = await markAndBegin(w, path, 'op-cccccc');
    const body =
      Array.from({ length: 50 }, (_, i) => `line ${String(i).padStart(2, '0')} ${'x'.repeat(20)}`).join(
        '\n',
      ) + '\n';
    appendFileSync(path, body);
    await w.end('op-cccccc');
    const saved = store.rows.get('op-cccccc')!;
    expect(saved.truncated).toBe(true);
    const view = {
      vmName: 'v',
      path,
      startOffset: start,
      endOffset: saved.endOffset,
      t0: 0,
      endedAt: 1,
      samples: saved.samples,
      text: saved.text,
      truncated: true,
    };
    const r = serialRecords(view);
    expect(r.notes[0]).toMatch(/middle is omitted/);
    const last = r.records.at(-1)!;
    expect(last.msg).toBe(`line 49 ${'x'.repeat(20)}`);
    const full = `\nbanger: op-cccccc vm.start begins\n${body}`;
    expect(last.fields?.offset).toBe(start + full.lastIndexOf('line 49'));
    expect(r.records.some((x) => /bytes of console output omitted/.test(x.msg))).toBe(true);
  });
});

describe('viewOfStored', () => {
  const row = (path: string, text: string | null): SerialWindowRow => ({
    opId: 'op-dddddd',
    vmId: 'vm1',
    vmName: 'calm-otter',
    path,
    startOffset: 4,
    endOffset: 14,
    startedAt: '2026-01-14T09:31:02.000Z',
    endedAt: '2026-01-14T09:31:05.000Z',
    samples: [
      [0, 4],
      [1000, 14],
    ],
    text,
    truncated: false,
  });

  it('reads a window whose capture was pruned from the file, by offsets', async () => {
    const path = join(dir, 'serial.log');
    writeFileSync(path, 'old\nhello one\nlater line\n');
    const v = await viewOfStored(row(path, null));
    expect(v.text).toBe('hello one\n');
    const r = serialRecords(v);
    expect(r.records.map((x) => [x.msg, x.time])).toEqual([['hello one', '2026-01-14T09:31:03.000Z']]);
  });

  it('notes a console that is gone', async () => {
    const r = serialRecords(await viewOfStored(row(join(dir, 'gone.log'), null)));
    expect(r.records).toEqual([]);
    expect(r.notes[0]).toMatch(/serial console of calm-otter for this operation is gone/);
  });
});
