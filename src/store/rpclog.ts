// What `banger op` reads back: one summary row per served RPC (rpc_log) and, per operation that
// booted a VM, the window of that VM's serial console the operation covers (op_serial). Both are
// bounded by retention (count and age), like the operations table.
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { type Clock, type Row, bool, int, iso, json, str, strOrNull } from './rows.ts';

/** Migration 2: additive; the baseline's tables are untouched. */
export const RPC_LOG_SQL = `
CREATE TABLE rpc_log (
  seq         INTEGER PRIMARY KEY,
  op_id       TEXT NOT NULL,
  method      TEXT NOT NULL,
  started_at  TEXT NOT NULL,
  ended_at    TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
  code        TEXT,
  message     TEXT,
  vm_name     TEXT
) STRICT;
CREATE INDEX rpc_log_op_id ON rpc_log (op_id);
CREATE INDEX rpc_log_started_at ON rpc_log (started_at);

CREATE TABLE op_serial (
  op_id        TEXT NOT NULL,
  vm_id        TEXT NOT NULL,
  vm_name      TEXT NOT NULL,
  path         TEXT NOT NULL,
  start_offset INTEGER NOT NULL,
  end_offset   INTEGER,
  started_at   TEXT NOT NULL,
  ended_at     TEXT,
  samples_json TEXT NOT NULL DEFAULT '[]',
  text         TEXT,
  truncated    INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1)),
  PRIMARY KEY (op_id, vm_id)
) STRICT;
CREATE INDEX op_serial_started_at ON op_serial (started_at);
`;

export interface RpcLogRow {
  seq: number;
  opId: string;
  method: string;
  startedAt: string;
  endedAt: string;
  durationMs: number;
  ok: boolean;
  code: string | null;
  message: string | null;
  vmName: string | null;
}

export type NewRpcLog = Omit<RpcLogRow, 'seq' | 'startedAt' | 'endedAt'> & {
  startedAt: Date | string;
  endedAt: Date | string;
};

/** [ms since the window began, file size then]: when each byte of the console was first seen. */
export type SerialSample = [number, number];

export interface SerialWindowRow {
  opId: string;
  vmId: string;
  vmName: string;
  path: string;
  startOffset: number;
  /** Null while the operation runs (or if the daemon died before it ended). */
  endOffset: number | null;
  startedAt: string;
  endedAt: string | null;
  samples: SerialSample[];
  /** The window's bytes, captured when it closed (the file may be gone by the time of a trace). */
  text: string | null;
  /** The capture kept only part of a large window. */
  truncated: boolean;
}

export interface RetentionOptions {
  maxCount?: number;
  maxAgeDays?: number;
  /** op_serial rows keep their captured text only for the newest this many (default 200). */
  maxSerialTexts?: number;
}

const RPC_COLS = 'seq, op_id, method, started_at, ended_at, duration_ms, ok, code, message, vm_name';
const SER_COLS =
  'op_id, vm_id, vm_name, path, start_offset, end_offset, started_at, ended_at, samples_json, text, truncated';

function toRpc(r: Row): RpcLogRow {
  const t = 'rpc_log';
  return {
    seq: int(r, t, 'seq'),
    opId: str(r, t, 'op_id'),
    method: str(r, t, 'method'),
    startedAt: str(r, t, 'started_at'),
    endedAt: str(r, t, 'ended_at'),
    durationMs: int(r, t, 'duration_ms'),
    ok: bool(r, t, 'ok'),
    code: strOrNull(r, t, 'code'),
    message: strOrNull(r, t, 'message'),
    vmName: strOrNull(r, t, 'vm_name'),
  };
}

function toSerial(r: Row): SerialWindowRow {
  const t = 'op_serial';
  const samples = json(r, t, 'samples_json');
  return {
    opId: str(r, t, 'op_id'),
    vmId: str(r, t, 'vm_id'),
    vmName: str(r, t, 'vm_name'),
    path: str(r, t, 'path'),
    startOffset: int(r, t, 'start_offset'),
    endOffset: r.end_offset === null ? null : int(r, t, 'end_offset'),
    startedAt: str(r, t, 'started_at'),
    endedAt: strOrNull(r, t, 'ended_at'),
    samples: Array.isArray(samples) ? (samples as SerialSample[]) : [],
    text: strOrNull(r, t, 'text'),
    truncated: bool(r, t, 'truncated'),
  };
}

export class RpcLogRepo {
  readonly #now: Clock;
  readonly #insert: StatementSync;
  readonly #byOp: StatementSync;
  readonly #list: StatementSync;
  readonly #serialUpsert: StatementSync;
  readonly #serialClose: StatementSync;
  readonly #serialByOp: StatementSync;
  readonly #pruneAge: StatementSync;
  readonly #pruneCount: StatementSync;
  readonly #pruneSerialAge: StatementSync;
  readonly #pruneSerialCount: StatementSync;
  readonly #pruneSerialText: StatementSync;

  constructor(db: DatabaseSync, now: Clock = () => new Date()) {
    this.#now = now;
    this.#insert = db.prepare(
      `INSERT INTO rpc_log (op_id, method, started_at, ended_at, duration_ms, ok, code, message, vm_name)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ${RPC_COLS}`,
    );
    this.#byOp = db.prepare(`SELECT ${RPC_COLS} FROM rpc_log WHERE op_id = ? ORDER BY seq`);
    this.#list = db.prepare(
      `SELECT ${RPC_COLS} FROM rpc_log
       WHERE (:since IS NULL OR started_at >= :since) AND (:until IS NULL OR started_at < :until)
       ORDER BY started_at DESC, seq DESC LIMIT :limit`,
    );
    this.#serialUpsert = db.prepare(
      `INSERT INTO op_serial (op_id, vm_id, vm_name, path, start_offset, started_at)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (op_id, vm_id) DO UPDATE SET path = excluded.path`,
    );
    this.#serialClose = db.prepare(
      `UPDATE op_serial SET end_offset = :end_offset, ended_at = :ended_at, samples_json = :samples,
         text = :text, truncated = :truncated WHERE op_id = :op_id AND vm_id = :vm_id`,
    );
    this.#serialByOp = db.prepare(`SELECT ${SER_COLS} FROM op_serial WHERE op_id = ? ORDER BY started_at`);
    this.#pruneAge = db.prepare('DELETE FROM rpc_log WHERE ended_at < ?');
    this.#pruneCount = db.prepare(
      'DELETE FROM rpc_log WHERE seq NOT IN (SELECT seq FROM rpc_log ORDER BY seq DESC LIMIT ?)',
    );
    this.#pruneSerialAge = db.prepare('DELETE FROM op_serial WHERE started_at < ?');
    this.#pruneSerialCount = db.prepare(
      `DELETE FROM op_serial WHERE rowid NOT IN
         (SELECT rowid FROM op_serial ORDER BY started_at DESC LIMIT ?)`,
    );
    this.#pruneSerialText = db.prepare(
      `UPDATE op_serial SET text = NULL WHERE text IS NOT NULL AND rowid NOT IN
         (SELECT rowid FROM op_serial WHERE text IS NOT NULL ORDER BY started_at DESC LIMIT ?)`,
    );
  }

  insert(r: NewRpcLog): RpcLogRow {
    const row = this.#insert.get(
      r.opId,
      r.method,
      iso(r.startedAt),
      iso(r.endedAt),
      Math.max(0, Math.round(r.durationMs)),
      r.ok ? 1 : 0,
      r.code,
      r.message,
      r.vmName,
    );
    if (!row) throw new Error('rpc_log insert returned no row');
    return toRpc(row);
  }

  /** Every RPC recorded under this op id, oldest first (usually one). */
  byOp(opId: string): RpcLogRow[] {
    return this.#byOp.all(opId).map(toRpc);
  }

  /** Newest first, started in [since, until). */
  list(q: { since?: string; until?: string; limit?: number } = {}): RpcLogRow[] {
    return this.#list
      .all({ since: q.since ?? null, until: q.until ?? null, limit: q.limit ?? -1 })
      .map(toRpc);
  }

  /** Record where an operation's serial window begins (idempotent per op and VM). */
  serialBegin(w: {
    opId: string;
    vmId: string;
    vmName: string;
    path: string;
    startOffset: number;
    startedAt: Date | string;
  }): void {
    this.#serialUpsert.run(w.opId, w.vmId, w.vmName, w.path, w.startOffset, iso(w.startedAt));
  }

  serialEnd(w: {
    opId: string;
    vmId: string;
    endOffset: number;
    endedAt: Date | string;
    samples: SerialSample[];
    text: string | null;
    truncated: boolean;
  }): void {
    this.#serialClose.run({
      op_id: w.opId,
      vm_id: w.vmId,
      end_offset: w.endOffset,
      ended_at: iso(w.endedAt),
      samples: JSON.stringify(w.samples),
      text: w.text,
      truncated: w.truncated ? 1 : 0,
    });
  }

  serialWindows(opId: string): SerialWindowRow[] {
    return this.#serialByOp.all(opId).map(toSerial);
  }

  /** Delete beyond the newest maxCount and older than maxAgeDays; returns rows deleted. */
  prune(opts: RetentionOptions): number {
    let n = 0;
    if (opts.maxAgeDays !== undefined) {
      const cutoff = new Date(this.#now().getTime() - opts.maxAgeDays * 86_400_000).toISOString();
      n += Number(this.#pruneAge.run(cutoff).changes);
      n += Number(this.#pruneSerialAge.run(cutoff).changes);
    }
    if (opts.maxCount !== undefined) {
      const keep = Math.max(0, Math.floor(opts.maxCount));
      n += Number(this.#pruneCount.run(keep).changes);
      n += Number(this.#pruneSerialCount.run(keep).changes);
    }
    this.#pruneSerialText.run(Math.max(0, Math.floor(opts.maxSerialTexts ?? 200)));
    return n;
  }
}
