// Explicit, checked mapping from node:sqlite rows (Record<string, SQLOutputValue>) to typed values.
import { randomBytes } from 'node:crypto';
import type { SQLOutputValue } from 'node:sqlite';
import { StoreError } from './errors.ts';

export type Row = Record<string, SQLOutputValue>;

/** A fresh random id: 12 lowercase hex characters (48 bits). */
export function newId(): string {
  return randomBytes(6).toString('hex');
}

function bad(table: string, col: string, v: SQLOutputValue | undefined, want: string): StoreError {
  const got = v === null ? 'null' : v instanceof Uint8Array ? 'blob' : typeof v;
  return new StoreError('bad_row', `${table}.${col}: expected ${want}, got ${got}`);
}

export function str(r: Row, table: string, col: string): string {
  const v = r[col];
  if (typeof v !== 'string') throw bad(table, col, v, 'text');
  return v;
}

export function strOrNull(r: Row, table: string, col: string): string | null {
  const v = r[col];
  if (v === null) return null;
  if (typeof v !== 'string') throw bad(table, col, v, 'text or null');
  return v;
}

export function int(r: Row, table: string, col: string): number {
  const v = r[col];
  if (typeof v === 'bigint') return Number(v);
  if (typeof v !== 'number' || !Number.isInteger(v)) throw bad(table, col, v, 'integer');
  return v;
}

export function bool(r: Row, table: string, col: string): boolean {
  return int(r, table, col) !== 0;
}

export function oneOf<T extends string>(r: Row, table: string, col: string, allowed: readonly T[]): T {
  const v = str(r, table, col);
  if (!(allowed as readonly string[]).includes(v)) {
    throw new StoreError('bad_row', `${table}.${col}: unexpected value ${JSON.stringify(v)}`);
  }
  return v as T;
}

/** A JSON column: parsed, or null for SQL NULL. */
export function json(r: Row, table: string, col: string): unknown {
  const v = strOrNull(r, table, col);
  if (v === null) return null;
  try {
    return JSON.parse(v) as unknown;
  } catch (err) {
    throw new StoreError('bad_row', `${table}.${col}: invalid JSON`, { cause: err });
  }
}

/** Serialize a JSON column value; undefined and null both store SQL NULL. */
export function toJson(v: unknown): string | null {
  return v === undefined || v === null ? null : JSON.stringify(v);
}

export function iso(d: Date | string): string {
  return typeof d === 'string' ? d : d.toISOString();
}

export type Clock = () => Date;

export function plural(n: number, word: string): string {
  return n === 1 ? word : `${word}s`;
}
