// The [logs] table of bangerd's config: where `banger op trace` reads each process's log back,
// and how long operation records are kept.
//
//   [logs]
//   helper_file = "/var/log/banger/bangerd-root.log"  # bangerd-root --log-file
//   daemon_unit = "bangerd.service"                    # read the daemon's lines from journald
//   helper_unit = "bangerd-root.service"               # read the helper's lines from journald
//   max_operations = 1000                              # op records kept (newest)
//   max_age_days = 30                                  # and for at most this long

export interface LogsConfig {
  /** The root helper's JSON log file (its --log-file), if it keeps one. */
  helper_file: string | undefined;
  /** systemd unit whose journal holds the daemon's lines (instead of its log file). */
  daemon_unit: string | undefined;
  /** systemd unit whose journal holds the helper's lines (instead of helper_file). */
  helper_unit: string | undefined;
  max_operations: number;
  max_age_days: number;
}

export const DEFAULT_LOGS_CONFIG: LogsConfig = {
  helper_file: undefined,
  daemon_unit: undefined,
  helper_unit: undefined,
  max_operations: 1000,
  max_age_days: 30,
};

const KEYS = new Set(['helper_file', 'daemon_unit', 'helper_unit', 'max_operations', 'max_age_days']);
const UNIT = /^[A-Za-z0-9:_.@-]{1,200}\.service$/;

/** Validate the raw [logs] table (strictly: a typo is an error at start-up). */
export function parseLogsConfig(raw: unknown, source = 'config'): LogsConfig {
  const c: LogsConfig = { ...DEFAULT_LOGS_CONFIG };
  if (raw === undefined) return c;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new Error(`${source}: logs must be a table`);
  const t = raw as Record<string, unknown>;
  for (const k of Object.keys(t)) if (!KEYS.has(k)) throw new Error(`${source}: unknown key "logs.${k}"`);
  if (t.helper_file !== undefined) {
    if (typeof t.helper_file !== 'string' || !t.helper_file.startsWith('/'))
      throw new Error(`${source}: logs.helper_file must be an absolute path`);
    c.helper_file = t.helper_file;
  }
  for (const k of ['daemon_unit', 'helper_unit'] as const) {
    const v = t[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' || !UNIT.test(v))
      throw new Error(`${source}: logs.${k} must be a systemd unit name such as bangerd.service`);
    c[k] = v;
  }
  if (t.max_operations !== undefined) {
    const v = t.max_operations;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 10 || v > 1_000_000)
      throw new Error(`${source}: logs.max_operations must be an integer from 10 to 1000000`);
    c.max_operations = v;
  }
  if (t.max_age_days !== undefined) {
    const v = t.max_age_days;
    if (typeof v !== 'number' || !(v > 0) || v > 3650)
      throw new Error(`${source}: logs.max_age_days must be a positive number of days, at most 3650`);
    c.max_age_days = v;
  }
  return c;
}
