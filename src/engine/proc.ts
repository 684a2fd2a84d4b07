// Reading /proc: enough to tell whether a pid is still the process we started (start time and
// host boot id), what program it runs, and when it is gone. Injectable root for tests.
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export interface ProcStat {
  pid: number;
  /** Kernel's comm: the executable's name, truncated to 15 bytes. */
  comm: string;
  /** R, S, D, Z (zombie), X (dead), ... */
  state: string;
  ppid: number;
  /** Start time in clock ticks since boot (field 22). */
  startTime: number;
}

export interface ProcFs {
  stat(pid: number): ProcStat | null;
  cmdline(pid: number): string[] | null;
  bootId(): string;
}

/** Parse /proc/PID/stat. comm may contain spaces and parens, so split at the last ')'. */
export function parseProcStat(text: string): ProcStat | null {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const pid = Number(text.slice(0, open).trim());
  const comm = text.slice(open + 1, close);
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  // rest[0] is field 3 (state); field N is rest[N - 3].
  const state = rest[0];
  const ppid = Number(rest[1]);
  const startTime = Number(rest[19]);
  if (!Number.isInteger(pid) || state === undefined || !Number.isFinite(startTime)) return null;
  return { pid, comm, state, ppid, startTime };
}

export function createProcFs(root = '/proc'): ProcFs {
  const read = (p: string): string | null => {
    try {
      return readFileSync(join(root, p), 'utf8');
    } catch {
      return null;
    }
  };
  return {
    stat(pid) {
      const t = read(`${pid}/stat`);
      return t === null ? null : parseProcStat(t);
    },
    cmdline(pid) {
      const t = read(`${pid}/cmdline`);
      if (t === null) return null;
      const parts = t.split('\0');
      if (parts.at(-1) === '') parts.pop();
      return parts;
    },
    bootId() {
      return (read('sys/kernel/random/boot_id') ?? '').trim();
    },
  };
}

export const hostProcFs: ProcFs = createProcFs();

/** True while `pid` is alive (not a zombie) and still the process that started at `startTime`. */
export function isSameLiveProcess(procfs: ProcFs, pid: number, startTime: number): boolean {
  const st = procfs.stat(pid);
  return st !== null && st.startTime === startTime && st.state !== 'Z' && st.state !== 'X';
}

/** Does the process run a program whose name starts with `prefix` (comm or argv[0])? */
export function runsProgram(procfs: ProcFs, pid: number, prefix: string): boolean {
  const st = procfs.stat(pid);
  if (st?.comm.startsWith(prefix.slice(0, 15))) return true;
  const argv0 = procfs.cmdline(pid)?.[0];
  return argv0 !== undefined && basename(argv0).startsWith(prefix);
}
