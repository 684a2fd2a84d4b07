import type { PrivService } from '../../../generated/handlers.gen.ts';
import type { PrivPingResult } from '../../../generated/types.gen.ts';
import type { RpcContext } from '../../rpc/context.ts';
import { BANGER_VERSION } from '../../version.ts';

export class PrivServiceImpl implements PrivService {
  async ping(ctx: RpcContext): Promise<PrivPingResult> {
    return {
      pong: true,
      version: BANGER_VERSION,
      uid: process.getuid?.() ?? -1,
      pid: process.pid,
      peer_uid: ctx.peer?.uid ?? -1,
    };
  }
}
