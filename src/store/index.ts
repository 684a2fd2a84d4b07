// The state store of bangerd: SQLite (node:sqlite) under the state dir.
export {
  BUSY_TIMEOUT_MS,
  openDatabase,
  openStore,
  type OpenDatabaseOptions,
  type OpenStoreOptions,
} from './db.ts';
export {
  StoreError,
  isCheckViolation,
  isForeignKeyViolation,
  isNotNullViolation,
  isStoreError,
  isUniqueViolation,
  sqliteErrcode,
  uniqueViolationColumns,
  type StoreErrorCode,
} from './errors.ts';
export {
  IMAGE_SOURCES,
  ImagesRepo,
  type ImageRow,
  type ImageSource,
  type NewImage,
  type OciRunConfig,
} from './images.ts';
export {
  ARTIFACT_SOURCES,
  KernelsRepo,
  type ArtifactSource,
  type KernelRow,
  type NewKernel,
} from './kernels.ts';
export {
  MIGRATIONS,
  checkMigrations,
  migrationStatus,
  runMigrations,
  type AppliedMigration,
  type Migration,
  type MigrationCheck,
  type MigrationResult,
  type MigrationStatus,
} from './migrations.ts';
export {
  DEFAULT_LIST_LIMIT,
  OPERATION_STATES,
  OperationsRepo,
  type NewOperation,
  type OperationFilter,
  type OperationPatch,
  type OperationRow,
  type OperationState,
  type PruneOptions,
} from './operations.ts';
export { type Clock, newId } from './rows.ts';
export { SettingsRepo } from './settings.ts';
export { Store, type StoreInit } from './store.ts';
export { withTransaction } from './tx.ts';
export {
  VM_STATES,
  VmsRepo,
  type NewVm,
  type VmPatch,
  type VmRow,
  type VmState,
  type SavedStateInfo,
  type VmStateWrite,
  type VmSecretRef,
} from './vms.ts';
