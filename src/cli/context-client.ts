// The generated client for a remote context: its SSH master and forwarded socket
// (src/rpc/ssh-transport.ts), with the methods whose files must cross (src/cli/context-remote.ts).
import { BangerClient } from '../../generated/client.gen.ts';
import { SshTransport, SshTunnel } from '../rpc/ssh-transport.ts';
import { REMOTE_ADAPTERS } from './context-remote.ts';
import { sshDestination, type RemoteContext } from './contexts.ts';

export function contextTunnel(ctx: RemoteContext): SshTunnel {
  const { destination, port } = sshDestination(ctx.url);
  return new SshTunnel({
    name: ctx.name,
    destination,
    port,
    remoteSocket: ctx.socket,
    label: `context ${ctx.name} (${ctx.url})`,
  });
}

export function remoteClient(ctx: RemoteContext): BangerClient {
  return new BangerClient(new SshTransport(contextTunnel(ctx), {}, REMOTE_ADAPTERS));
}
