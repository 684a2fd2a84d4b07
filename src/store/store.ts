// The Store: one open database plus its repositories, each with statements prepared once.
import type { DatabaseSync } from 'node:sqlite';
import { ImagesRepo } from './images.ts';
import { KernelsRepo } from './kernels.ts';
import { OperationsRepo, type PruneOptions } from './operations.ts';
import type { Clock } from './rows.ts';
import { SettingsRepo } from './settings.ts';
import { withTransaction } from './tx.ts';
import { VmsRepo } from './vms.ts';

export interface StoreInit {
  path: string;
  readOnly: boolean;
  /** Clock for created_at/updated_at/retention; tests inject a fixed one. */
  now?: Clock;
  /** Migration ids applied by this open. */
  appliedMigrations?: number[];
  warnings?: string[];
}

export class Store {
  readonly db: DatabaseSync;
  readonly path: string;
  readonly readOnly: boolean;
  /** Migration ids applied when this store was opened (empty if the schema was current). */
  readonly appliedMigrations: readonly number[];
  /** Things the daemon should log at warn level (e.g. the schema is from a newer banger). */
  readonly warnings: readonly string[];
  readonly kernels: KernelsRepo;
  readonly images: ImagesRepo;
  readonly vms: VmsRepo;
  readonly operations: OperationsRepo;
  readonly settings: SettingsRepo;

  /** Wraps an open, migrated database. Most callers want openStore(). */
  constructor(db: DatabaseSync, init: StoreInit) {
    const now = init.now ?? (() => new Date());
    this.db = db;
    this.path = init.path;
    this.readOnly = init.readOnly;
    this.appliedMigrations = init.appliedMigrations ?? [];
    this.warnings = init.warnings ?? [];
    this.kernels = new KernelsRepo(db, now);
    this.images = new ImagesRepo(db, now);
    this.vms = new VmsRepo(db, now);
    this.operations = new OperationsRepo(db, now);
    this.settings = new SettingsRepo(db);
  }

  /**
   * Run fn in one write transaction (BEGIN IMMEDIATE ... COMMIT; ROLLBACK if it throws). fn must
   * be synchronous. Nested calls (including the repos' own) become savepoints.
   */
  transaction<T>(fn: () => T): T {
    return withTransaction(this.db, fn);
  }

  /** Operation retention; see OperationsRepo.prune. Returns how many were deleted. */
  pruneOperations(opts: PruneOptions): number {
    return this.operations.prune(opts);
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}
