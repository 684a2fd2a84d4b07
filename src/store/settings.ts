import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { str } from './rows.ts';

/** A string key/value table for small daemon-wide settings. */
export class SettingsRepo {
  readonly #get: StatementSync;
  readonly #set: StatementSync;
  readonly #delete: StatementSync;
  readonly #all: StatementSync;

  constructor(db: DatabaseSync) {
    this.#get = db.prepare('SELECT value FROM settings WHERE key = ?');
    this.#set = db.prepare(
      'INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    );
    this.#delete = db.prepare('DELETE FROM settings WHERE key = ?');
    this.#all = db.prepare('SELECT key, value FROM settings ORDER BY key');
  }

  get(key: string): string | undefined {
    const r = this.#get.get(key);
    return r ? str(r, 'settings', 'value') : undefined;
  }

  /** Insert or replace. */
  set(key: string, value: string): void {
    this.#set.run(key, value);
  }

  /** Returns false if the key was not set. */
  delete(key: string): boolean {
    return Number(this.#delete.run(key).changes) > 0;
  }

  all(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const r of this.#all.all()) out[str(r, 'settings', 'key')] = str(r, 'settings', 'value');
    return out;
  }
}
