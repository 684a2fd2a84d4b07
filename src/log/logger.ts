// Root pino logger. The mixin puts the current op id on every record written inside an RPC's
// async context; no call site passes it by hand.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Writable } from 'node:stream';
import pino, { type Logger, type StreamEntry } from 'pino';
import { opContext } from '../rpc/context.ts';

export type { Logger } from 'pino';

export interface LoggerOptions {
  name: string;
  level?: string;
  /** Also append JSON lines to this file. */
  file?: string;
  /** Write here instead of stderr (tests use an in-memory stream). */
  stream?: Writable;
  /** Keep stderr quiet (e.g. when a file or stream is the only wanted sink). */
  quiet?: boolean;
}

export function opMixin(): Record<string, unknown> {
  const s = opContext.getStore();
  return s ? { op_id: s.opId } : {};
}

export function createLogger(opts: LoggerOptions): Logger {
  // A multistream entry without a level passes only info and up: `trace` leaves the choice to
  // the logger's own level (else log_level = "debug" would still drop every debug line).
  const streams: StreamEntry[] = [];
  if (opts.stream) streams.push({ level: 'trace', stream: opts.stream });
  else if (!opts.quiet) streams.push({ level: 'trace', stream: process.stderr });
  if (opts.file) {
    mkdirSync(dirname(opts.file), { recursive: true });
    streams.push({
      level: 'trace',
      stream: pino.destination({ dest: opts.file, append: true, sync: true, mkdir: true }),
    });
  }
  return pino(
    {
      name: opts.name,
      level: opts.level ?? process.env.BANGER_LOG_LEVEL ?? 'info',
      base: { pid: process.pid, name: opts.name },
      timestamp: pino.stdTimeFunctions.isoTime,
      mixin: opMixin,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.multistream(streams.length > 0 ? streams : [{ level: 'trace', stream: process.stderr }]),
  );
}
