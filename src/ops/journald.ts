// Reading an op's lines from journald, for daemons run as systemd units (their JSON logs go to
// stderr, which journald keeps as MESSAGE). Used only when a unit is configured ([logs]
// daemon_unit / helper_unit): `journalctl -o json -u UNIT --grep OPID`, bounded by the op's time.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { LogQuery, LogSource } from './file-log.ts';
import { sourceTitle } from './file-log.ts';
import { belongsTo, fromLogObject, type SourceRecord, type SourceResult } from './records.ts';

/** syslog priorities as journald stores them (PRIORITY), for lines that are not pino JSON. */
const PRIORITIES = ['fatal', 'fatal', 'fatal', 'error', 'warn', 'info', 'info', 'debug'];

/** journald's MESSAGE: a string, or an array of bytes when it is not valid UTF-8 (or too long). */
function messageText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.every((b) => typeof b === 'number'))
    return Buffer.from(v as number[]).toString('utf8');
  return undefined;
}

/**
 * One line of `journalctl -o json` → a trace record of the op, or undefined. The MESSAGE is
 * parsed as the daemon's pino JSON when it is one (time from the record); any other MESSAGE that
 * contains the id is kept as plain text at the entry's __REALTIME_TIMESTAMP.
 */
export function parseJournalEntry(
  line: string,
  opId: string,
  source: 'daemon' | 'helper',
): SourceRecord | undefined {
  let entry: unknown;
  try {
    entry = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return undefined;
  const e = entry as Record<string, unknown>;
  const msg = messageText(e.MESSAGE);
  if (msg === undefined || !msg.includes(opId)) return undefined;
  const rt = typeof e.__REALTIME_TIMESTAMP === 'string' ? Number(e.__REALTIME_TIMESTAMP) / 1000 : undefined;
  const at = rt !== undefined && Number.isFinite(rt) ? Math.floor(rt) : undefined;
  const trimmed = msg.trim();
  if (trimmed.startsWith('{')) {
    try {
      const rec = JSON.parse(trimmed) as unknown;
      if (typeof rec === 'object' && rec !== null && !Array.isArray(rec)) {
        const o = rec as Record<string, unknown>;
        return belongsTo(o, opId) ? fromLogObject(o, source, at) : undefined;
      }
    } catch {
      // not JSON after all: kept as text below
    }
  }
  if (at === undefined) return undefined;
  const out: SourceRecord = { t: at, time: new Date(at).toISOString(), source, msg: trimmed };
  const prio = typeof e.PRIORITY === 'string' ? PRIORITIES[Number(e.PRIORITY)] : undefined;
  if (prio) out.level = prio;
  return out;
}

/** Runs journalctl and yields its stdout lines; tests replace it. */
export type JournalRunner = (argv: string[]) => {
  lines: AsyncIterable<string>;
  done: Promise<{ code: number | null; stderr: string }>;
};

export const runJournalctl: JournalRunner = (argv) => {
  const p = spawn('journalctl', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => {
    p.on('error', (err) => resolve({ code: -1, stderr: err.message }));
    p.on('close', (code) => resolve({ code, stderr }));
  });
  return { lines: createInterface({ input: p.stdout, crlfDelay: Infinity }), done };
};

/** How far around the op's window journald is searched (clock skew, lines after the answer). */
const BEFORE_MS = 60_000;
const AFTER_MS = 10 * 60_000;

/** journalctl's arguments for one op: the unit, the id, and the window when known. */
export function journalArgs(unit: string, q: LogQuery): string[] {
  const argv = ['-o', 'json', '--no-pager', '--output-fields=MESSAGE,PRIORITY,__REALTIME_TIMESTAMP'];
  argv.push('-u', unit, '--grep', q.opId);
  if (q.from !== undefined) argv.push('--since', `@${Math.floor((q.from - BEFORE_MS) / 1000)}`);
  if (q.from !== undefined && q.to !== undefined)
    argv.push('--until', `@${Math.ceil((q.to + AFTER_MS) / 1000)}`);
  return argv;
}

export class JournaldLogSource implements LogSource {
  readonly source: 'daemon' | 'helper';
  readonly where: string;
  private readonly unit: string;
  private readonly run: JournalRunner;

  constructor(source: 'daemon' | 'helper', unit: string, run: JournalRunner = runJournalctl) {
    this.source = source;
    this.unit = unit;
    this.where = `journald unit ${unit}`;
    this.run = run;
  }

  async read(q: LogQuery): Promise<SourceResult> {
    const title = sourceTitle(this.source);
    const { lines, done } = this.run(journalArgs(this.unit, q));
    const records: SourceRecord[] = [];
    for await (const line of lines) {
      const r = parseJournalEntry(line, q.opId, this.source);
      if (r) records.push(r);
    }
    const { code, stderr } = await done;
    const notes: string[] = [];
    // journalctl exits 1 when --grep matched nothing; that is no error.
    if (code === -1) notes.push(`cannot run journalctl for ${title} (${this.where}): ${stderr}`);
    else if (code !== 0 && records.length === 0 && stderr.trim() !== '' && !/No entries/i.test(stderr))
      notes.push(`journalctl for ${title} (${this.where}) failed: ${stderr.trim().split('\n')[0]}`);
    return { records, notes };
  }
}
