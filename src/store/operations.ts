import type { DatabaseSync, SQLInputValue, StatementSync } from 'node:sqlite';
import { StoreError } from './errors.ts';
import { type Clock, type Row, iso, json, oneOf, str, strOrNull, toJson } from './rows.ts';

export const OPERATION_STATES = ['running', 'succeeded', 'failed', 'canceled'] as const;
export type OperationState = (typeof OPERATION_STATES)[number];

export interface OperationRow {
  /** The op id. */
  id: string;
  kind: string;
  method: string;
  state: OperationState;
  vmId: string | null;
  vmName: string | null;
  imageName: string | null;
  startedAt: string;
  endedAt: string | null;
  /** Parsed steps_json (an array unless someone stored something else). */
  steps: unknown;
  /** Parsed error_json, null when unset. */
  error: unknown;
  /** Parsed result_json, null when unset. */
  result: unknown;
}

export interface NewOperation {
  /** The op id (from the RPC context); required. */
  id: string;
  kind: string;
  method: string;
  /** Defaults to 'running'. */
  state?: OperationState;
  vmId?: string | null;
  vmName?: string | null;
  imageName?: string | null;
  /** Defaults to now. */
  startedAt?: Date | string;
  /** Defaults to []. */
  steps?: unknown;
}

/** Properties left undefined are unchanged; null clears a nullable column. */
export interface OperationPatch {
  state?: OperationState;
  vmId?: string | null;
  vmName?: string | null;
  imageName?: string | null;
  endedAt?: Date | string | null;
  /** Replaces steps_json. */
  steps?: unknown;
  error?: unknown;
  result?: unknown;
}

export interface OperationFilter {
  state?: OperationState;
  kind?: string;
  vmName?: string;
  /** Only state 'failed' (combines with the other filters). */
  failedOnly?: boolean;
  /** Only operations started at or after this instant. */
  since?: Date | string;
  /** At most this many, newest first. Default 100; 0 or negative means no limit. */
  limit?: number;
}

export interface PruneOptions {
  /** Keep at most this many operations (the newest by started_at). */
  maxCount?: number;
  /** Delete operations that ended more than this many days ago. */
  maxAgeDays?: number;
}

export const DEFAULT_LIST_LIMIT = 100;

const COLS =
  'id, kind, method, state, vm_id, vm_name, image_name, started_at, ended_at, steps_json, error_json, result_json';

const PATCHABLE: ReadonlyArray<[keyof OperationPatch, string, (v: unknown) => SQLInputValue]> = [
  ['state', 'state', (v) => v as string],
  ['vmId', 'vm_id', (v) => v as string | null],
  ['vmName', 'vm_name', (v) => v as string | null],
  ['imageName', 'image_name', (v) => v as string | null],
  ['endedAt', 'ended_at', (v) => (v === null ? null : iso(v as Date | string))],
  ['steps', 'steps_json', (v) => JSON.stringify(v ?? [])],
  ['error', 'error_json', toJson],
  ['result', 'result_json', toJson],
];

const UPDATE_SQL =
  'UPDATE operations SET ' +
  PATCHABLE.map(([, c]) => `${c} = CASE WHEN :set_${c} THEN :${c} ELSE ${c} END`).join(', ') +
  ` WHERE id = :id RETURNING ${COLS}`;

function toOperation(r: Row): OperationRow {
  const t = 'operations';
  return {
    id: str(r, t, 'id'),
    kind: str(r, t, 'kind'),
    method: str(r, t, 'method'),
    state: oneOf(r, t, 'state', OPERATION_STATES),
    vmId: strOrNull(r, t, 'vm_id'),
    vmName: strOrNull(r, t, 'vm_name'),
    imageName: strOrNull(r, t, 'image_name'),
    startedAt: str(r, t, 'started_at'),
    endedAt: strOrNull(r, t, 'ended_at'),
    steps: json(r, t, 'steps_json'),
    error: json(r, t, 'error_json'),
    result: json(r, t, 'result_json'),
  };
}

export class OperationsRepo {
  readonly #now: Clock;
  readonly #insert: StatementSync;
  readonly #get: StatementSync;
  readonly #update: StatementSync;
  readonly #list: StatementSync;
  readonly #interrupt: StatementSync;
  readonly #prune: StatementSync;

  constructor(db: DatabaseSync, now: Clock) {
    this.#now = now;
    this.#insert = db.prepare(
      `INSERT INTO operations (${COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL) RETURNING ${COLS}`,
    );
    this.#get = db.prepare(`SELECT ${COLS} FROM operations WHERE id = ?`);
    this.#update = db.prepare(UPDATE_SQL);
    this.#list = db.prepare(
      `SELECT ${COLS} FROM operations
       WHERE (:state IS NULL OR state = :state)
         AND (:kind IS NULL OR kind = :kind)
         AND (:vm_name IS NULL OR vm_name = :vm_name)
         AND (:failed_only = 0 OR state = 'failed')
         AND (:since IS NULL OR started_at >= :since)
       ORDER BY started_at DESC, id DESC
       LIMIT :limit`,
    );
    this.#interrupt = db.prepare(
      `UPDATE operations SET state = 'failed', ended_at = :now, error_json = :error WHERE state = 'running'`,
    );
    // Running operations are never pruned.
    this.#prune = db.prepare(
      `DELETE FROM operations
       WHERE state != 'running'
         AND ((:cutoff IS NOT NULL AND coalesce(ended_at, started_at) < :cutoff)
           OR (:max_count IS NOT NULL AND id NOT IN (
                SELECT id FROM operations ORDER BY started_at DESC, id DESC LIMIT coalesce(:max_count, -1))))`,
    );
  }

  /** Throws a UNIQUE violation if the op id is already recorded. */
  insert(op: NewOperation): OperationRow {
    const row = this.#insert.get(
      op.id,
      op.kind,
      op.method,
      op.state ?? 'running',
      op.vmId ?? null,
      op.vmName ?? null,
      op.imageName ?? null,
      iso(op.startedAt ?? this.#now()),
      JSON.stringify(op.steps ?? []),
    );
    if (!row) throw new Error('operations insert returned no row');
    return toOperation(row);
  }

  get(id: string): OperationRow | undefined {
    const r = this.#get.get(id);
    return r ? toOperation(r) : undefined;
  }

  /** Partial update; returns the updated row. Throws StoreError 'not_found'. */
  update(id: string, patch: OperationPatch): OperationRow {
    const params: Record<string, SQLInputValue> = { id };
    for (const [prop, col, bind] of PATCHABLE) {
      const v = patch[prop];
      params[`set_${col}`] = v === undefined ? 0 : 1;
      params[col] = v === undefined ? null : bind(v);
    }
    const r = this.#update.get(params);
    if (!r) throw new StoreError('not_found', `no operation with id ${id}`);
    return toOperation(r);
  }

  /** End an operation: set its final state, ended_at = now (unless given), error/result. */
  finish(
    id: string,
    outcome: {
      state: Exclude<OperationState, 'running'>;
      error?: unknown;
      result?: unknown;
      endedAt?: Date | string;
    },
  ): OperationRow {
    return this.update(id, {
      state: outcome.state,
      endedAt: outcome.endedAt ?? this.#now(),
      error: outcome.error,
      result: outcome.result,
    });
  }

  /** Newest first. */
  list(filter: OperationFilter = {}): OperationRow[] {
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
    return this.#list
      .all({
        state: filter.state ?? null,
        kind: filter.kind ?? null,
        vm_name: filter.vmName ?? null,
        failed_only: filter.failedOnly ? 1 : 0,
        since: filter.since === undefined ? null : iso(filter.since),
        limit: limit > 0 ? Math.floor(limit) : -1,
      })
      .map(toOperation);
  }

  /**
   * At daemon start: every operation still 'running' was cut short by a crash or restart. Marks
   * them 'failed' with `error` and ended_at = now; returns how many.
   */
  failInterrupted(error: unknown): number {
    return Number(this.#interrupt.run({ now: this.#now().toISOString(), error: toJson(error) }).changes);
  }

  /**
   * Retention: delete finished operations beyond the newest `maxCount`, and those that ended more
   * than `maxAgeDays` ago. Running operations are kept. Returns how many rows were deleted.
   */
  prune(opts: PruneOptions): number {
    const { maxCount, maxAgeDays } = opts;
    if (maxCount === undefined && maxAgeDays === undefined) return 0;
    const cutoff =
      maxAgeDays === undefined
        ? null
        : new Date(this.#now().getTime() - maxAgeDays * 86_400_000).toISOString();
    const r = this.#prune.run({
      cutoff,
      max_count: maxCount === undefined ? null : Math.max(0, Math.floor(maxCount)),
    });
    return Number(r.changes);
  }
}
