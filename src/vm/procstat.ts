// Resource use of a process from /proc: CPU seconds and resident memory.
import { readFile } from 'node:fs/promises';

const CLK_TCK = 100;

export interface ProcUsage {
  cpuSeconds: number;
  rssBytes: number;
}

export async function procUsage(pid: number): Promise<ProcUsage | undefined> {
  try {
    const [stat, status] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readFile(`/proc/${pid}/status`, 'utf8'),
    ]);
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    const rss = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return { cpuSeconds: (utime + stime) / CLK_TCK, rssBytes: rss ? Number(rss[1]) * 1024 : 0 };
  } catch {
    return undefined;
  }
}
