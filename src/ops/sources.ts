// Which logs an op trace reads: per process, journald when a unit is configured, else a file.
// The root helper's file is, in order: given at start, [logs] helper_file, or the one the helper
// itself names (priv.ping's log_file), so a helper run with --log-file needs no configuration.
import { FileLogSource, type LogSource } from './file-log.ts';
import type { LogsConfig } from './config.ts';
import { JournaldLogSource } from './journald.ts';

export interface LogSourcesOptions {
  cfg: LogsConfig;
  /** The daemon's own --log-file. */
  daemonLogFile: string | undefined;
  /** The helper's log file if known up front (tests). */
  helperLogFile?: string | undefined;
  /** A root helper is configured. */
  helperConfigured: boolean;
  /** Ask the helper which file it logs to (undefined: none, or not reachable). */
  askHelper?: () => Promise<string | undefined>;
  /** How long the helper's answer is reused (default 60 s). */
  cacheMs?: number;
}

export class LogSources {
  private readonly o: LogSourcesOptions;
  private asked: { at: number; file: string | undefined } | undefined;

  constructor(o: LogSourcesOptions) {
    this.o = o;
  }

  private async helperFile(): Promise<string | undefined> {
    const known = this.o.helperLogFile ?? this.o.cfg.helper_file;
    if (known || !this.o.askHelper) return known;
    const now = Date.now();
    if (!this.asked || now - this.asked.at > (this.o.cacheMs ?? 60_000)) {
      const file = await this.o.askHelper().catch(() => undefined);
      this.asked = { at: now, file };
    }
    return this.asked.file;
  }

  async resolve(): Promise<{ sources: LogSource[]; notes: string[] }> {
    const { cfg } = this.o;
    const sources: LogSource[] = [];
    const notes: string[] = [];
    if (cfg.daemon_unit) sources.push(new JournaldLogSource('daemon', cfg.daemon_unit));
    else if (this.o.daemonLogFile) sources.push(new FileLogSource('daemon', this.o.daemonLogFile));
    else
      notes.push(
        "the daemon's lines are not shown: bangerd runs without --log-file and no [logs] daemon_unit is set",
      );
    if (this.o.helperConfigured) {
      const file = cfg.helper_unit ? undefined : await this.helperFile();
      if (cfg.helper_unit) sources.push(new JournaldLogSource('helper', cfg.helper_unit));
      else if (file) sources.push(new FileLogSource('helper', file));
      else
        notes.push(
          "the root helper's lines are not shown: it names no log file (run bangerd-root with --log-file), or set [logs] helper_file or helper_unit in bangerd's config",
        );
    }
    return { sources, notes };
  }
}
