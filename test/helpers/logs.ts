// Capture pino output in memory and read it back as parsed NDJSON records.
import { Writable } from 'node:stream';

export interface LogRecord {
  msg: string;
  op_id?: string;
  method?: string;
  code?: string;
  duration_ms?: number;
  [k: string]: unknown;
}

export class MemoryLog extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) this.lines.push(l);
    cb();
  }
  records(): LogRecord[] {
    return this.lines.map((l) => JSON.parse(l) as LogRecord);
  }
  byOp(opId: string): LogRecord[] {
    return this.records().filter((r) => r.op_id === opId);
  }
}

/** Wait until a predicate over the records holds (log writes can trail the response slightly). */
export async function waitForRecord(
  log: MemoryLog,
  pred: (r: LogRecord) => boolean,
  timeoutMs = 2000,
): Promise<LogRecord> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const hit = log.records().find(pred);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no matching log record; have:\n${log.lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
