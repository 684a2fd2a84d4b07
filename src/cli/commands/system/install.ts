import { Flags } from '@oclif/core';
import { join } from 'node:path';
import { DEFAULT_POOL, poolContext } from '../../../helper/validate.ts';
import {
  lookupOwner,
  systemctl,
  systemdRunning,
  verifyUnits,
  writeInstallFiles,
  type FileAction,
} from '../../../install/install.ts';
import { DAEMON_UNIT, HELPER_UNIT, SYSTEM_DAEMON_SOCKET, UNIT_DIR } from '../../../install/units.ts';
import { ErrorResponse } from '../../../rpc/errors.ts';
import { BANGER_VERSION } from '../../../version.ts';
import { BangerCommand } from '../../base.ts';
import { waitForDaemon } from '../../system.ts';
import { flagError } from '../../vm-ref.ts';

export interface SystemInstallResult {
  root: string;
  owner: string;
  owner_uid: number;
  files: FileAction[];
  verify: { ok: boolean; output: string } | { skipped: string };
  started: boolean;
  daemon_version?: string;
}

export default class SystemInstall extends BangerCommand {
  static override summary = 'Install banger as two systemd services: bangerd (as --owner) and bangerd-root.';
  static override description = `Writes ${UNIT_DIR}/${DAEMON_UNIT} (the daemon, running as the owner, never root) and ${UNIT_DIR}/${HELPER_UNIT} (the root helper: hardened, only CAP_NET_ADMIN and CAP_CHOWN, serving only the owner's uid), records the owner in /etc/banger/install.toml, writes /etc/banger/config.toml if there is none, then enables and starts both and waits until the daemon answers on ${SYSTEM_DAEMON_SOCKET}.

Both units use KillMode=process: restarting or stopping them never kills a running VM.

Needs root. With --root DIR everything is written under DIR instead of / and systemctl is not run (to inspect the files, or to build an image).`;
  static override examples = [
    'sudo <%= config.bin %> system install --owner alice',
    '<%= config.bin %> system install --owner alice --root /tmp/banger-root --json',
  ];
  static override flags = {
    owner: Flags.string({
      required: true,
      summary: 'The user bangerd runs as; only this uid (and root) may use the helper.',
    }),
    root: Flags.string({
      summary: 'Write under this directory instead of / and do not run systemctl.',
      helpValue: '<dir>',
    }),
    pool: Flags.string({
      summary: `Address block the helper accepts for bridges and guests (default ${DEFAULT_POOL}).`,
      helpValue: '<cidr>',
    }),
    'no-start': Flags.boolean({ summary: 'Write and enable the units, but do not start them.' }),
  };

  async run(): Promise<SystemInstallResult> {
    const { flags } = await this.parseWith(SystemInstall);
    const root = flags.root ?? '/';
    if (!root.startsWith('/')) throw flagError('--root must be an absolute path');
    const real = root === '/';
    if (real && process.getuid?.() !== 0)
      throw new ErrorResponse(
        'bad_request',
        `system install writes to /etc and runs systemctl: run it as root (sudo ${this.config.bin} system install --owner ${flags.owner})`,
      );
    const pool = flags.pool ?? DEFAULT_POOL;
    try {
      poolContext(pool);
    } catch (err) {
      throw flagError(`--pool: ${(err as Error).message}`);
    }
    let owner;
    try {
      owner = await lookupOwner(flags.owner);
    } catch (err) {
      throw new ErrorResponse('not_found', `--owner: ${(err as Error).message}`);
    }
    if (owner.uid === 0)
      throw new ErrorResponse(
        'bad_request',
        '--owner must not be root: bangerd never runs as root (root work is bangerd-root’s)',
      );

    const binDir = join(this.config.root, 'bin');
    const files = await writeInstallFiles({
      root,
      version: BANGER_VERSION,
      facts: { binDir, owner: owner.name, ownerGroup: owner.group, ownerUid: owner.uid, pool },
    });
    for (const f of files) this.say(`${f.action === 'kept' ? 'kept   ' : 'wrote  '} ${f.path}`);

    const unitPaths = files.filter((f) => f.path.endsWith('.service')).map((f) => f.path);
    const v = await verifyUnits(unitPaths);
    const verify: SystemInstallResult['verify'] = v ?? { skipped: 'systemd-analyze is not installed' };
    if (v && (!v.ok || v.output !== '')) this.warnLine(`systemd-analyze verify:\n${v.output}`);
    else if (v) this.say('checked  systemd-analyze verify: no findings');

    const result: SystemInstallResult = {
      root,
      owner: owner.name,
      owner_uid: owner.uid,
      files,
      verify,
      started: false,
    };
    if (!real) {
      this.say(`not running systemctl (--root ${root})`);
      return result;
    }
    if (!systemdRunning()) {
      throw new ErrorResponse(
        'operation_failed',
        `the units are written, but systemd is not running here (no /run/systemd/system), so nothing was started; run ${binDir}/bangerd-root and ${binDir}/bangerd by hand (see the ExecStart= lines)`,
      );
    }
    await systemctl(['daemon-reload']);
    await systemctl(['enable', ...(flags['no-start'] ? [] : ['--now']), HELPER_UNIT, DAEMON_UNIT]);
    this.say(`enabled  ${HELPER_UNIT} ${DAEMON_UNIT}`);
    if (flags['no-start']) return result;
    const version = await waitForDaemon(SYSTEM_DAEMON_SOCKET, 30_000);
    if (!version)
      throw new ErrorResponse(
        'operation_failed',
        `the units started but bangerd did not answer on ${SYSTEM_DAEMON_SOCKET} within 30 s; see journalctl -u ${DAEMON_UNIT}`,
      );
    result.started = true;
    result.daemon_version = version;
    this.say(
      `bangerd ${version} answers on ${SYSTEM_DAEMON_SOCKET}; check everything with: ${this.config.bin} doctor`,
    );
    return result;
  }

  private warnLine(line: string): void {
    if (!this.jsonEnabled()) process.stderr.write(`${line}\n`);
  }
}
