import { Flags } from '@oclif/core';
import { BangerClient } from '../../../../generated/client.gen.ts';
import { loadConfig } from '../../../daemon/config.ts';
import { IpLinks, NftNat } from '../../../hostnet/index.ts';
import { removeInstallFiles, systemctl, systemdRunning, type FileAction } from '../../../install/install.ts';
import { DAEMON_UNIT, HELPER_UNIT, SYSTEM_CONFIG, SYSTEM_DAEMON_SOCKET } from '../../../install/units.ts';
import { ErrorResponse } from '../../../rpc/errors.ts';
import { SocketTransport } from '../../../rpc/transport.ts';
import { BangerCommand } from '../../base.ts';
import { flagError } from '../../vm-ref.ts';

export interface SystemUninstallResult {
  root: string;
  files: FileAction[];
  host_network: string[];
}

export default class SystemUninstall extends BangerCommand {
  static override summary =
    'Stop and remove the systemd services; --purge also removes config, state, images and the bridge.';
  static override description = `Disables and stops ${DAEMON_UNIT} and ${HELPER_UNIT} and removes them and /etc/banger/install.toml. Running VMs keep running (KillMode=process) until you stop them.

--purge also deletes /etc/banger, /var/lib/banger (every VM's disk) and /var/cache/banger, and removes banger's bridge and nftables table. It refuses while VMs run unless --force.`;
  static override examples = [
    'sudo <%= config.bin %> system uninstall',
    'sudo <%= config.bin %> system uninstall --purge',
  ];
  static override flags = {
    purge: Flags.boolean({
      summary: 'Also delete config, state (all VMs), cache, the bridge and the NAT table.',
    }),
    force: Flags.boolean({ summary: 'With --purge: go ahead even while VMs are running.' }),
    root: Flags.string({
      summary: 'Remove from under this directory instead of / (no systemctl, no host network).',
      helpValue: '<dir>',
    }),
  };

  async run(): Promise<SystemUninstallResult> {
    const { flags } = await this.parseWith(SystemUninstall);
    const root = flags.root ?? '/';
    if (!root.startsWith('/')) throw flagError('--root must be an absolute path');
    const real = root === '/';
    if (real && process.getuid?.() !== 0)
      throw new ErrorResponse(
        'bad_request',
        `system uninstall needs root: sudo ${this.config.bin} system uninstall`,
      );
    if (real && flags.purge && !flags.force) {
      const running = await new BangerClient(
        new SocketTransport(SYSTEM_DAEMON_SOCKET, { timeoutMs: 5000 }),
      ).vm
        .list({ state: 'running' })
        .then((r) => r.vms.map((v) => v.name))
        .catch(() => [] as string[]);
      if (running.length > 0)
        throw new ErrorResponse(
          'conflict',
          `--purge would delete the disks of running VMs (${running.join(', ')}); stop them first or add --force`,
        );
    }
    if (real && systemdRunning()) {
      await systemctl(['disable', '--now', DAEMON_UNIT, HELPER_UNIT]).catch((err: unknown) =>
        this.warnLine(`systemctl: ${(err as Error).message}`),
      );
    }
    const hostNetwork: string[] = [];
    if (real && flags.purge) {
      const cfg = (() => {
        try {
          return loadConfig(SYSTEM_CONFIG);
        } catch {
          return loadConfig(undefined);
        }
      })();
      const b = await new IpLinks()
        .deleteBridge(cfg.bridge_name)
        .catch((e: unknown) => ({ error: (e as Error).message }));
      hostNetwork.push(
        'deleted' in b
          ? `bridge ${cfg.bridge_name}: ${b.deleted ? 'deleted' : 'absent'}`
          : `bridge: ${b.error}`,
      );
      const n = await new NftNat().purge().catch((e: unknown) => ({ error: (e as Error).message }));
      hostNetwork.push(
        'deleted' in n
          ? `nftables table ip banger: ${n.deleted ? 'deleted' : 'absent'}`
          : `nftables: ${n.error}`,
      );
    }
    const files = await removeInstallFiles(root, flags.purge);
    if (real && systemdRunning()) await systemctl(['daemon-reload']).catch(() => undefined);
    for (const f of files) this.say(`${f.action.padEnd(8)} ${f.path}`);
    for (const h of hostNetwork) this.say(h);
    return { root, files, host_network: hostNetwork };
  }

  private warnLine(line: string): void {
    if (!this.jsonEnabled()) process.stderr.write(`${line}\n`);
  }
}
