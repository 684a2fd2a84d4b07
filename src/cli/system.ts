// Shared by the `banger system` commands: waiting for the installed daemon, reading unit state.
import { BangerClient } from '../../generated/client.gen.ts';
import { systemctl, systemdRunning } from '../install/install.ts';
import { SocketTransport } from '../rpc/transport.ts';

/** Poll the daemon's socket until `ping` answers; its version, or undefined after timeoutMs. */
export async function waitForDaemon(socket: string, timeoutMs: number): Promise<string | undefined> {
  const end = Date.now() + timeoutMs;
  const client = new BangerClient(new SocketTransport(socket, { timeoutMs: 2000 }));
  for (;;) {
    try {
      const r = await client.ping();
      return r.version;
    } catch {
      if (Date.now() > end) return undefined;
      await new Promise((res) => setTimeout(res, 300));
    }
  }
}

export interface UnitState {
  unit: string;
  active: string;
  sub: string;
  enabled: string;
  pid: number;
}

/** `systemctl show` of a unit; undefined when systemd is not running. */
export async function unitState(unit: string): Promise<UnitState | undefined> {
  if (!systemdRunning()) return undefined;
  const out = await systemctl(['show', unit, '-p', 'ActiveState,SubState,UnitFileState,MainPID']).catch(
    () => '',
  );
  const kv = new Map(
    out
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
  );
  return {
    unit,
    active: kv.get('ActiveState') ?? 'unknown',
    sub: kv.get('SubState') ?? 'unknown',
    enabled: kv.get('UnitFileState') ?? 'unknown',
    pid: Number(kv.get('MainPID') ?? 0),
  };
}
