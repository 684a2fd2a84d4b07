import { readFile } from 'node:fs/promises';
import { availableParallelism, hostname, totalmem } from 'node:os';
import type { DaemonOperationsService, DaemonService } from '../../../generated/handlers.gen.ts';
import { PROTOCOL_VERSION } from '../../../generated/methods.gen.ts';
import type { DaemonStatusResult } from '../../../generated/types.gen.ts';
import type { RpcContext } from '../../rpc/context.ts';
import type { VmRow } from '../../store/vms.ts';
import { LIVE_STATES } from '../../vm/states.ts';
import { BANGER_VERSION } from '../../version.ts';
import type { HelperLink } from '../helper-link.ts';
import type { OperationRegistry } from '../../ops/operations.ts';

export interface DaemonInfo {
  socket: string;
  stateDir: string;
  startedAt: Date;
  engine?: () => Promise<DaemonStatusResult['engine']>;
  /** vCPUs and guest memory of the VMs that hold memory now (for `host` in daemon.status). */
  commitment?: () => { vcpus: number; memoryMib: number };
}

type HostStatus = NonNullable<DaemonStatusResult['host']>;

/** MemAvailable of /proc/meminfo in MiB; the total when it cannot be read (not Linux). */
async function memAvailableMib(totalMib: number): Promise<number> {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'utf8'));
    return m ? Math.floor(Number(m[1]) / 1024) : totalMib;
  } catch {
    return totalMib;
  }
}

/** What VMs with a live VMM claim (one paused to disk holds no memory: it has no VMM). */
export function vmCommitment(rows: readonly Pick<VmRow, 'state' | 'vcpus' | 'memoryMib' | 'savedState'>[]): {
  vcpus: number;
  memoryMib: number;
} {
  let vcpus = 0;
  let memoryMib = 0;
  for (const r of rows) {
    if (!LIVE_STATES.includes(r.state) || r.savedState) continue;
    vcpus += r.vcpus;
    memoryMib += r.memoryMib;
  }
  return { vcpus, memoryMib };
}

/** The host's capacity and what this daemon's VMs have claimed of it. */
export async function hostStatus(commitment: DaemonInfo['commitment']): Promise<HostStatus> {
  const total = Math.floor(totalmem() / 1024 ** 2);
  const c = commitment?.() ?? { vcpus: 0, memoryMib: 0 };
  return {
    hostname: hostname(),
    cpus: availableParallelism(),
    memory_total_mib: total,
    memory_available_mib: await memAvailableMib(total),
    committed_vcpus: c.vcpus,
    committed_memory_mib: c.memoryMib,
  };
}

export class DaemonServiceImpl implements DaemonService {
  private readonly info: DaemonInfo;
  private readonly helper: HelperLink;
  private readonly ops: OperationRegistry;

  constructor(info: DaemonInfo, helper: HelperLink, ops: OperationRegistry) {
    this.info = info;
    this.helper = helper;
    this.ops = ops;
  }

  async status(_ctx: RpcContext): Promise<DaemonStatusResult> {
    const [helper, engine, host] = await Promise.all([
      this.helper.health(),
      this.info.engine?.(),
      hostStatus(this.info.commitment),
    ]);
    const r: DaemonStatusResult = {
      version: BANGER_VERSION,
      protocol_version: PROTOCOL_VERSION,
      pid: process.pid,
      uptime_ms: Date.now() - this.info.startedAt.getTime(),
      started_at: this.info.startedAt.toISOString(),
      socket: this.info.socket,
      state_dir: this.info.stateDir,
      helper,
      host,
    };
    if (engine) r.engine = engine;
    return r;
  }

  /** daemon.operations.*: the operations this daemon run knows. */
  readonly operations: DaemonOperationsService = {
    list: async (p) => ({ operations: this.ops.list(p) }),
  };
}
