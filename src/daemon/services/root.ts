// The daemon's bare methods, `ping` and `shutdown`: they touch no state and wait on no lock, so
// they answer while the daemon is busy or stopping.
import type { Services } from '../../../generated/handlers.gen.ts';
import { PROTOCOL_VERSION } from '../../../generated/methods.gen.ts';
import { BANGER_VERSION } from '../../version.ts';

export type RootMethods = Pick<Services, 'ping' | 'shutdown'>;

export function rootMethods(requestShutdown: () => void): RootMethods {
  return {
    async ping() {
      return { pong: true, version: BANGER_VERSION, protocol_version: PROTOCOL_VERSION };
    },
    async shutdown(ctx) {
      ctx.log.info('shutdown requested; running VMs keep running');
      // Answer first, then stop accepting connections.
      setImmediate(requestShutdown);
      return { stopping: true };
    },
  };
}
