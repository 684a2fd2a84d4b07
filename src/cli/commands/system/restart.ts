import { systemctl, systemdRunning } from '../../../install/install.ts';
import { DAEMON_UNIT, HELPER_UNIT, SYSTEM_DAEMON_SOCKET } from '../../../install/units.ts';
import { ErrorResponse } from '../../../rpc/errors.ts';
import { BangerCommand } from '../../base.ts';
import { waitForDaemon } from '../../system.ts';

export default class SystemRestart extends BangerCommand {
  static override summary = 'Restart bangerd-root and bangerd; running VMs keep running.';
  static override description = `Restarts ${HELPER_UNIT}, then ${DAEMON_UNIT}, and waits until the daemon answers again. Both units use KillMode=process, so VMs are not touched: the new daemon reattaches to them and cleans host network leftovers no VM owns. Needs root and systemd.`;
  static override examples = ['sudo <%= config.bin %> system restart'];

  async run(): Promise<{ restarted: string[]; daemon_version: string }> {
    await this.parseWith(SystemRestart);
    if (process.getuid?.() !== 0)
      throw new ErrorResponse(
        'bad_request',
        `restarting system services needs root: sudo ${this.config.bin} system restart`,
      );
    if (!systemdRunning())
      throw new ErrorResponse('operation_failed', 'systemd is not running here (no /run/systemd/system)');
    await systemctl(['restart', HELPER_UNIT]);
    await systemctl(['restart', DAEMON_UNIT]);
    const version = await waitForDaemon(SYSTEM_DAEMON_SOCKET, 30_000);
    if (!version)
      throw new ErrorResponse(
        'operation_failed',
        `bangerd did not answer within 30 s; see journalctl -u ${DAEMON_UNIT}`,
      );
    this.say(`restarted ${HELPER_UNIT} and ${DAEMON_UNIT}; bangerd ${version} answers`);
    return { restarted: [HELPER_UNIT, DAEMON_UNIT], daemon_version: version };
  }
}
