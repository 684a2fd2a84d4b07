import type { DaemonOperationsService, DaemonService } from '../../../generated/handlers.gen.ts';
import { PROTOCOL_VERSION } from '../../../generated/methods.gen.ts';
import type { DaemonStatusResult } from '../../../generated/types.gen.ts';
import type { RpcContext } from '../../rpc/context.ts';
import { BANGER_VERSION } from '../../version.ts';
import type { HelperLink } from '../helper-link.ts';
import type { OperationRegistry } from '../../ops/operations.ts';

export interface DaemonInfo {
  socket: string;
  stateDir: string;
  startedAt: Date;
  engine?: () => Promise<DaemonStatusResult['engine']>;
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
    const [helper, engine] = await Promise.all([this.helper.health(), this.info.engine?.()]);
    const r: DaemonStatusResult = {
      version: BANGER_VERSION,
      protocol_version: PROTOCOL_VERSION,
      pid: process.pid,
      uptime_ms: Date.now() - this.info.startedAt.getTime(),
      started_at: this.info.startedAt.toISOString(),
      socket: this.info.socket,
      state_dir: this.info.stateDir,
      helper,
    };
    if (engine) r.engine = engine;
    return r;
  }

  /** daemon.operations.*: the operations this daemon run knows. */
  readonly operations: DaemonOperationsService = {
    list: async (p) => ({ operations: this.ops.list(p) }),
  };
}
