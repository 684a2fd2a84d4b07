import { existsSync, readFileSync } from 'node:fs';
import { INSTALL_TOML } from '../../../paths.ts';
import { DAEMON_UNIT, HELPER_UNIT, SYSTEM_DAEMON_SOCKET } from '../../../install/units.ts';
import { systemdRunning } from '../../../install/install.ts';
import { BangerCommand } from '../../base.ts';
import { unitState, waitForDaemon, type UnitState } from '../../system.ts';

export interface SystemStatusResult {
  installed: boolean;
  owner?: string;
  systemd: boolean;
  units: UnitState[];
  daemon: { socket: string; reachable: boolean; version?: string };
  healthy: boolean;
}

export default class SystemStatus extends BangerCommand {
  static override summary = 'Show the system install: owner, both units, whether the daemon answers.';
  static override description = `Reads /etc/banger/install.toml, asks systemd about ${DAEMON_UNIT} and ${HELPER_UNIT}, and pings the daemon on ${SYSTEM_DAEMON_SOCKET}. Exits 0 when both units are active and the daemon answers, 1 otherwise. For a deeper check (KVM, qemu, bridge, DNS, disk) run banger doctor.`;
  static override examples = ['<%= config.bin %> system status', '<%= config.bin %> system status --json'];

  async run(): Promise<SystemStatusResult> {
    await this.parseWith(SystemStatus);
    const installed = existsSync(INSTALL_TOML);
    const owner = installed
      ? /^owner\s*=\s*"([^"]*)"/m.exec(readFileSync(INSTALL_TOML, 'utf8'))?.[1]
      : undefined;
    const units = (await Promise.all([unitState(HELPER_UNIT), unitState(DAEMON_UNIT)])).filter(
      (u): u is UnitState => u !== undefined,
    );
    const version = await waitForDaemon(SYSTEM_DAEMON_SOCKET, 0);
    const r: SystemStatusResult = {
      installed,
      systemd: systemdRunning(),
      units,
      daemon: {
        socket: SYSTEM_DAEMON_SOCKET,
        reachable: version !== undefined,
        ...(version ? { version } : {}),
      },
      healthy: false,
    };
    if (owner) r.owner = owner;
    r.healthy =
      installed && units.length === 2 && units.every((u) => u.active === 'active') && r.daemon.reachable;
    this.say(
      `install   ${installed ? `yes (owner ${owner ?? '?'}, ${INSTALL_TOML})` : 'no (banger system install --owner USER)'}`,
    );
    if (!r.systemd) this.say('systemd   not running here: unit states unknown');
    for (const u of units)
      this.say(`${u.unit.padEnd(21)} ${u.active} (${u.sub}), ${u.enabled}${u.pid ? `, pid ${u.pid}` : ''}`);
    this.say(
      `daemon    ${r.daemon.reachable ? `answers (bangerd ${version})` : 'does not answer'} on ${SYSTEM_DAEMON_SOCKET}`,
    );
    if (!r.healthy) process.exitCode = 1;
    return r;
  }
}
