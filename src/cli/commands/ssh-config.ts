import { Flags } from '@oclif/core';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { defaultStateDir } from '../../paths.ts';
import { BangerCommand } from '../base.ts';
import { BEGIN, installBlock, removeBlock, sshConfigBlock } from '../ssh-config.ts';

export interface SshConfigResult {
  block: string;
  file?: string;
  action?: 'installed' | 'updated' | 'unchanged' | 'removed' | 'absent';
}

export default class SshConfig extends BangerCommand {
  static override summary = 'Print (or install) an ssh_config block so plain `ssh <name>.vm` works.';
  static override description = `The block matches *.vm, logs in as root with banger's key, and checks host keys against the ones banger pinned for each VM (the same as banger vm ssh). Names resolve through banger's DNS: bridged VMs, with the host's resolver routing .vm to the daemon (banger doctor checks it).

Without flags the block is printed. --install puts it at the top of ~/.ssh/config (replacing an older copy); --uninstall takes it out again. The key paths come from the daemon's state directory (asked from the daemon, else the default).`;
  static override examples = [
    '<%= config.bin %> ssh-config',
    '<%= config.bin %> ssh-config --install && ssh calm-otter.vm uname -a',
    '<%= config.bin %> ssh-config --uninstall',
  ];
  static override flags = {
    install: Flags.boolean({ summary: 'Add the block to the ssh config file.', exclusive: ['uninstall'] }),
    uninstall: Flags.boolean({
      summary: 'Remove the block from the ssh config file.',
      exclusive: ['install'],
    }),
    file: Flags.string({ summary: 'The ssh config file (default ~/.ssh/config).', helpValue: '<path>' }),
  };

  async run(): Promise<SshConfigResult> {
    const { flags } = await this.parseWith(SshConfig);
    const stateDir = await this.client.daemon
      .status(undefined, { timeoutMs: 3000 })
      .then((s) => s.state_dir)
      .catch(() => defaultStateDir());
    const block = sshConfigBlock({
      identityFile: join(stateDir, 'ssh', 'id_ed25519'),
      knownHostsFile: join(stateDir, 'ssh', 'known_hosts'),
    });
    if (!flags.install && !flags.uninstall) {
      if (!this.jsonEnabled()) process.stdout.write(block);
      return { block };
    }
    const file = flags.file ?? join(homedir(), '.ssh', 'config');
    const before = existsSync(file) ? await readFile(file, 'utf8') : '';
    let action: SshConfigResult['action'];
    let after: string;
    if (flags.install) {
      after = installBlock(before, block);
      action = before === after ? 'unchanged' : before.includes(BEGIN) ? 'updated' : 'installed';
    } else {
      after = removeBlock(before);
      action = before.includes(BEGIN) ? 'removed' : 'absent';
    }
    if (after !== before) {
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, after, { mode: 0o600 });
      await chmod(file, 0o600);
    }
    this.say(`${action} banger's block ${flags.install ? 'in' : 'from'} ${file}`);
    if (flags.install) this.say('try: ssh <name>.vm (bridged VMs; banger doctor checks .vm resolution)');
    return { block, file, action };
  }
}
