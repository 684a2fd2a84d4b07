// Reading an op's lines back from a JSON log file (and its rotations), one line at a time: logs
// can be large, so nothing is loaded whole and only lines containing the id are parsed.
import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { parseLogLine, timeOf, type SourceRecord, type SourceResult } from './records.ts';

/** What a trace asks a log source for. Times are epoch ms, when known. */
export interface LogQuery {
  opId: string;
  /** When the operation began (lines before it may still belong to it: clocks, queues). */
  from?: number;
  /** When it ended; absent while it runs. */
  to?: number;
}

/** A process's log, wherever it is kept (a file, journald). */
export interface LogSource {
  readonly source: 'daemon' | 'helper';
  /** For notes: e.g. `/var/lib/banger/bangerd.log` or `journald unit bangerd.service`. */
  readonly where: string;
  read(q: LogQuery): Promise<SourceResult>;
}

export function sourceTitle(source: 'daemon' | 'helper'): string {
  return source === 'daemon' ? "the daemon's log" : "the root helper's log";
}

/** Rotations read besides the live file: FILE.1 (newest) … FILE.9 (oldest), as logrotate names them. */
const MAX_ROTATIONS = 9;
/** A file last written this long before the op began cannot hold its lines. */
const MTIME_SLACK_MS = 60_000;
const DEFAULT_MAX_RECORDS = 10_000;

/** The live file and its plain-text rotations that exist, oldest first. */
export function logFiles(path: string): { files: string[]; compressed: string[] } {
  const files: string[] = [];
  const compressed: string[] = [];
  for (let i = MAX_ROTATIONS; i >= 1; i--) {
    if (existsSync(`${path}.${i}`)) files.push(`${path}.${i}`);
    if (existsSync(`${path}.${i}.gz`)) compressed.push(`${path}.${i}.gz`);
  }
  if (existsSync(path)) files.push(path);
  return { files, compressed };
}

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EACCES') return 'permission denied';
  return e instanceof Error ? e.message : String(err);
}

/** Stream one file; collect the op's records; report the time of its first timestamped line. */
async function scanFile(
  file: string,
  opId: string,
  source: 'daemon' | 'helper',
  out: SourceRecord[],
  max: number,
): Promise<{ first?: number; capped: boolean }> {
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  let first: number | undefined;
  let capped = false;
  for await (const line of rl) {
    if (first === undefined && line.startsWith('{')) {
      const m = /"time":\s*("([^"]+)"|\d+)/.exec(line);
      if (m) first = timeOf(m[2] ?? Number(m[1]));
    }
    const r = parseLogLine(line, opId, source);
    if (!r) continue;
    if (out.length >= max) {
      capped = true;
      continue;
    }
    out.push(r);
  }
  return first === undefined ? { capped } : { first, capped };
}

export class FileLogSource implements LogSource {
  readonly source: 'daemon' | 'helper';
  readonly where: string;
  private readonly path: string;
  private readonly maxRecords: number;

  constructor(source: 'daemon' | 'helper', path: string, opts: { maxRecords?: number } = {}) {
    this.source = source;
    this.path = path;
    this.where = path;
    this.maxRecords = opts.maxRecords ?? DEFAULT_MAX_RECORDS;
  }

  async read(q: LogQuery): Promise<SourceResult> {
    const title = sourceTitle(this.source);
    const { files, compressed } = logFiles(this.path);
    if (files.length === 0) {
      return { records: [], notes: [`${title} ${this.path} does not exist`] };
    }
    const records: SourceRecord[] = [];
    const notes: string[] = [];
    let earliest: number | undefined;
    let capped = false;
    for (const [i, file] of files.entries()) {
      try {
        const st = await stat(file);
        // A rotation last written before the op began holds none of its lines.
        if (q.from !== undefined && file !== this.path && st.mtimeMs < q.from - MTIME_SLACK_MS) continue;
        const r = await scanFile(file, q.opId, this.source, records, this.maxRecords);
        if (i === 0 && r.first !== undefined) earliest = r.first;
        capped ||= r.capped;
      } catch (err) {
        notes.push(`cannot read ${title} ${file}: ${errText(err)}`);
      }
    }
    if (capped) notes.push(`${title}: only the first ${this.maxRecords} lines with this id are shown`);
    // The log begins after the op began: lines are missing if it was rotated (or nothing was found).
    const rotated = files.length > 1 || compressed.length > 0;
    if (
      q.from !== undefined &&
      earliest !== undefined &&
      earliest > q.from &&
      (rotated || records.length === 0)
    ) {
      const gz = compressed.length > 0 ? ` (older lines may be in ${compressed.join(', ')}, not read)` : '';
      notes.push(
        `${title} ${this.path} begins at ${new Date(earliest).toISOString()}, after this operation began ` +
          `(${new Date(q.from).toISOString()}): its earlier lines were rotated away${gz}`,
      );
    }
    return { records, notes };
  }
}
