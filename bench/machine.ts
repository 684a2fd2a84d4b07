// What the numbers were measured on: saved with every result, since these machines differ and
// are shared (the load average says how busy it was).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem, version as osVersion } from 'node:os';
import { ROOT } from './world.ts';

export interface MachineInfo {
  cpu_model: string;
  cores: number;
  memory_gib: number;
  kernel: string;
  qemu_version: string;
  node_version: string;
  accel?: string;
  accel_reason?: string;
  git_commit?: string;
  git_dirty?: boolean;
  load_average_start: number[];
  load_average_end?: number[];
}

function tryRun(argv: string[]): string | undefined {
  try {
    return execFileSync(argv[0]!, argv.slice(1), {
      encoding: 'utf8',
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return undefined;
  }
}

/** "model name" from /proc/cpuinfo text. */
export function cpuModel(cpuinfo: string): string {
  return /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
}

export function describeMachine(): MachineInfo {
  const info: MachineInfo = {
    cpu_model: cpuModel(readFileSync('/proc/cpuinfo', 'utf8')),
    cores: cpus().length,
    memory_gib: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: `${release()} ${osVersion()}`,
    qemu_version: tryRun(['qemu-system-x86_64', '--version'])?.split('\n')[0] ?? 'unknown',
    node_version: process.version,
    load_average_start: loadavg().map((x) => Math.round(x * 100) / 100),
  };
  const commit = tryRun(['git', 'rev-parse', 'HEAD']);
  if (commit) {
    info.git_commit = commit;
    info.git_dirty = (tryRun(['git', 'status', '--porcelain', '--untracked-files=no']) ?? '') !== '';
  }
  return info;
}
