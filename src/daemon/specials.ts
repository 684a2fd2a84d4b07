// Special methods: their own encoding or side effects, so they are named handlers rather than
// generic adapters.
import type { SpecialHandlers } from '../../generated/handlers.gen.ts';
import { PROTOCOL_VERSION } from '../../generated/methods.gen.ts';
import type { PingResult, ShutdownResult } from '../../generated/types.gen.ts';
import { BANGER_VERSION } from '../version.ts';

export function createSpecials(requestShutdown: () => void): SpecialHandlers {
  return {
    async ping(ctx) {
      const result: PingResult = { pong: true, version: BANGER_VERSION, protocol_version: PROTOCOL_VERSION };
      return { ok: true, result, op_id: ctx.opId };
    },
    async shutdown(ctx) {
      ctx.log.info('shutdown requested; running VMs keep running');
      // Answer first, then stop accepting connections.
      setImmediate(requestShutdown);
      const result: ShutdownResult = { stopping: true };
      return { ok: true, result, op_id: ctx.opId };
    },
  };
}
