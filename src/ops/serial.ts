// A VM's serial console has no timestamps and the guest knows nothing of op ids. So while an
// operation that booted a VM runs, the daemon watches that VM's console file: the byte offset
// where the op began (just before its `banger: op-… begins` marker), the file's size sampled
// every 250 ms and at every step boundary (so each line gets the time it was first seen), and
// the offset where the op ended. When the window closes its bytes are captured into the store:
// a failed create deletes the VM's directory, console included, while it undoes its steps (the
// open file handle keeps the bytes readable until then).
import { fstatSync } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import type { Logger } from '../log/logger.ts';
import type { SerialSample, SerialWindowRow } from '../store/rpclog.ts';
import type { SourceRecord, SourceResult } from './records.ts';

/** Where an operation's serial window is stored (the rpc_log repo; a fake in tests). */
export interface SerialWindowStore {
  serialBegin(w: {
    opId: string;
    vmId: string;
    vmName: string;
    path: string;
    startOffset: number;
    startedAt: Date;
  }): void;
  serialEnd(w: {
    opId: string;
    vmId: string;
    endOffset: number;
    endedAt: Date;
    samples: SerialSample[];
    text: string | null;
    truncated: boolean;
  }): void;
}

/** What machine.ts calls when it writes an op's marker into a VM's console. */
export interface SerialMarks {
  /** The marker was appended at startOffset of path; watch the console from there. */
  begin(w: { opId: string; vmId: string; vmName: string; path: string; startOffset: number }): Promise<void>;
}

export interface SerialWatcherOptions {
  sampleMs?: number;
  /** Bytes of a window kept in the store (head and tail when larger). */
  captureBytes?: number;
  /** A window still open after this long is closed (an op that never ended). */
  maxWindowMs?: number;
  maxSamples?: number;
}

interface OpenWindow {
  opId: string;
  vmId: string;
  vmName: string;
  path: string;
  fh: FileHandle;
  startOffset: number;
  t0: number;
  samples: SerialSample[];
  timer: NodeJS.Timeout;
  closing?: Promise<void>;
}

/** A serial window as a trace reads it: stored, or still open in this daemon. */
export interface SerialWindowView {
  vmName: string;
  path: string;
  startOffset: number;
  endOffset: number | null;
  t0: number;
  endedAt: number | null;
  samples: SerialSample[];
  text: string | null;
  truncated: boolean;
}

export class SerialWatcher implements SerialMarks {
  private readonly store: SerialWindowStore;
  private readonly log: Logger;
  private readonly open = new Map<string, OpenWindow>();
  private readonly sampleMs: number;
  private readonly captureBytes: number;
  private readonly maxWindowMs: number;
  private readonly maxSamples: number;

  constructor(store: SerialWindowStore, log: Logger, opts: SerialWatcherOptions = {}) {
    this.store = store;
    this.log = log;
    this.sampleMs = opts.sampleMs ?? 250;
    this.captureBytes = opts.captureBytes ?? 256 * 1024;
    this.maxWindowMs = opts.maxWindowMs ?? 30 * 60_000;
    this.maxSamples = opts.maxSamples ?? 4000;
  }

  private key(opId: string, vmId: string): string {
    return `${opId} ${vmId}`;
  }

  async begin(w: {
    opId: string;
    vmId: string;
    vmName: string;
    path: string;
    startOffset: number;
  }): Promise<void> {
    const key = this.key(w.opId, w.vmId);
    if (this.open.has(key)) return; // a second boot of the same VM in one op: one window
    let fh: FileHandle;
    try {
      fh = await open(w.path, 'r');
    } catch (err) {
      this.log.warn({ err, vm: w.vmName }, 'cannot watch the serial console for op trace');
      return;
    }
    const t0 = Date.now();
    const win: OpenWindow = {
      ...w,
      fh,
      t0,
      samples: [[0, w.startOffset]],
      timer: setInterval(() => this.sample(win), this.sampleMs),
    };
    win.timer.unref();
    this.open.set(key, win);
    this.sample(win);
    try {
      this.store.serialBegin({ ...w, startedAt: new Date(t0) });
    } catch (err) {
      this.log.warn({ err }, 'cannot record the serial window');
    }
  }

  private sample(win: OpenWindow): void {
    let size: number;
    try {
      size = fstatSync(win.fh.fd).size;
    } catch {
      return;
    }
    const now = Date.now() - win.t0;
    const last = win.samples.at(-1);
    if (last && last[1] === size) return;
    win.samples.push([now, size]);
    if (win.samples.length > this.maxSamples) {
      // Thin the middle: keep every other sample (the first and last stay).
      win.samples = win.samples.filter((_, i) => i % 2 === 0 || i === win.samples.length - 1);
    }
    if (now > this.maxWindowMs) void this.close(win);
  }

  /** Sample every window of this op now (at step boundaries). */
  sampleOp(opId: string): void {
    for (const w of this.open.values()) if (w.opId === opId) this.sample(w);
  }

  hasOpen(opId: string): boolean {
    for (const w of this.open.values()) if (w.opId === opId) return true;
    return false;
  }

  /** The operation ended: close its windows and store what they saw. */
  async end(opId: string): Promise<void> {
    await Promise.all([...this.open.values()].filter((w) => w.opId === opId).map((w) => this.close(w)));
  }

  async endAll(): Promise<void> {
    await Promise.all([...this.open.values()].map((w) => this.close(w)));
  }

  private close(win: OpenWindow): Promise<void> {
    win.closing ??= (async () => {
      clearInterval(win.timer);
      this.sample(win);
      const end = win.samples.at(-1)?.[1] ?? win.startOffset;
      let text: string | null = null;
      let truncated = false;
      try {
        const r = await readWindow(win.fh, win.startOffset, end, this.captureBytes);
        text = r.text;
        truncated = r.truncated;
      } catch (err) {
        this.log.warn({ err, vm: win.vmName }, 'cannot capture the serial window');
      }
      await win.fh.close().catch(() => undefined);
      this.open.delete(this.key(win.opId, win.vmId));
      try {
        this.store.serialEnd({
          opId: win.opId,
          vmId: win.vmId,
          endOffset: end,
          endedAt: new Date(),
          samples: win.samples,
          text,
          truncated,
        });
      } catch (err) {
        this.log.warn({ err }, 'cannot record the serial window');
      }
    })();
    return win.closing;
  }

  /** The open windows of an op, read live (the op still runs). */
  async liveViews(opId: string): Promise<SerialWindowView[]> {
    const out: SerialWindowView[] = [];
    for (const w of this.open.values()) {
      if (w.opId !== opId) continue;
      this.sample(w);
      const end = w.samples.at(-1)?.[1] ?? w.startOffset;
      const r = await readWindow(w.fh, w.startOffset, end, this.captureBytes).catch(() => null);
      out.push({
        vmName: w.vmName,
        path: w.path,
        startOffset: w.startOffset,
        endOffset: null,
        t0: w.t0,
        endedAt: null,
        samples: [...w.samples],
        text: r?.text ?? null,
        truncated: r?.truncated ?? false,
      });
    }
    return out;
  }
}

const OMITTED = (n: number): string => `\n… ${n} bytes of console output omitted …\n`;
const OMITTED_LINE = /^… (\d+) bytes of console output omitted …$/;

/** Read [start, end) of the console; when larger than cap, its head and tail. */
async function readWindow(
  fh: FileHandle,
  start: number,
  end: number,
  cap: number,
): Promise<{ text: string; truncated: boolean }> {
  const len = Math.max(0, end - start);
  const read = async (pos: number, n: number): Promise<string> => {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, pos);
    return buf.subarray(0, bytesRead).toString('utf8');
  };
  if (len <= cap) return { text: await read(start, len), truncated: false };
  const head = Math.floor(cap / 4);
  const tail = cap - head;
  return {
    text: (await read(start, head)) + OMITTED(len - cap) + (await read(end - tail, tail)),
    truncated: true,
  };
}

/** A stored window whose text was not captured (pruned, or the daemon died): read the file. */
export async function viewOfStored(w: SerialWindowRow, captureBytes = 256 * 1024): Promise<SerialWindowView> {
  const view: SerialWindowView = {
    vmName: w.vmName,
    path: w.path,
    startOffset: w.startOffset,
    endOffset: w.endOffset,
    t0: Date.parse(w.startedAt),
    endedAt: w.endedAt === null ? null : Date.parse(w.endedAt),
    samples: w.samples,
    text: w.text,
    truncated: w.truncated,
  };
  if (view.text !== null) return view;
  try {
    const size = (await stat(w.path)).size;
    const end = Math.min(size, w.endOffset ?? size);
    if (end < w.startOffset) return view; // the file was replaced since
    const fh = await open(w.path, 'r');
    try {
      const r = await readWindow(fh, w.startOffset, end, captureBytes);
      view.text = r.text;
      view.truncated = r.truncated;
    } finally {
      await fh.close();
    }
  } catch {
    // gone: the caller notes it
  }
  return view;
}

// Terminal control sequences (colours, cursor moves) and other control bytes but tab.
// eslint-disable-next-line no-control-regex
const CONTROL = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]/g;

/**
 * A window's console lines as trace records. Each line's time is when it was first seen: the
 * first sample whose file size covers the line's last byte (at most one sample interval late).
 */
export function serialRecords(view: SerialWindowView): SourceResult {
  const notes: string[] = [];
  if (view.text === null) {
    notes.push(
      `the serial console of ${view.vmName} for this operation is gone (${view.path} was removed and its capture was pruned)`,
    );
    return { records: [], notes };
  }
  if (view.truncated)
    notes.push(`the serial console of ${view.vmName} in this window was long; its middle is omitted`);
  const records: SourceRecord[] = [];
  const buf = Buffer.from(view.text, 'utf8');
  const fallback = view.endedAt ?? view.t0 + (view.samples.at(-1)?.[0] ?? 0);
  let pos = 0;
  let si = 0;
  // Offsets after a truncation marker are shifted by the bytes it stands for.
  let shift = 0;
  while (pos < buf.length) {
    const nl = buf.indexOf(0x0a, pos);
    const stop = nl === -1 ? buf.length : nl + 1;
    const lineStart = view.startOffset + pos + shift;
    const raw = buf.subarray(pos, nl === -1 ? buf.length : nl).toString('utf8');
    pos = stop;
    const omitted = view.truncated ? OMITTED_LINE.exec(raw) : null;
    if (omitted) shift += Number(omitted[1]) - Buffer.byteLength(OMITTED(Number(omitted[1])));
    const lineEnd = view.startOffset + stop + shift;
    const line = raw.replace(CONTROL, '').trimEnd();
    if (line.trim() === '') continue;
    while (si < view.samples.length && view.samples[si]![1] < lineEnd) si++;
    const sample = view.samples[si];
    const t = sample ? view.t0 + sample[0] : fallback;
    records.push({
      t,
      time: new Date(t).toISOString(),
      source: 'serial',
      msg: line,
      in_window: true,
      fields: { vm: view.vmName, offset: lineStart },
    });
  }
  return { records, notes };
}
