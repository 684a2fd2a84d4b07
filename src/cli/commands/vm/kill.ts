import { Args, Flags } from '@oclif/core';
import type { VmKillResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkVmName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class VmKill extends BangerCommand {
  static override summary = "Force-kill a VM (use when 'vm stop' hangs).";
  static override description = `Sends a signal (KILL unless --signal) to the VM's VMM process. The guest gets no chance to flush its disks, so writes it had not synced may be lost; prefer banger vm stop. The disk is kept. Several VMs are killed at once; the exit code is non-zero if any failed.`;
  static override examples = [
    '<%= config.bin %> vm kill calm-otter',
    '<%= config.bin %> vm kill calm-otter --signal TERM',
  ];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'VMs to kill (names or ids).' }),
  };
  static override flags = {
    signal: Flags.option({
      char: 's',
      options: ['KILL', 'TERM', 'INT'] as const,
      default: 'KILL' as const,
      summary: 'Signal to send to the VMM.',
    })(),
  };

  async run(): Promise<FanOutResult<VmKillResult>[]> {
    const { argv, flags } = await this.parseWith(VmKill);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkVmName(name);
        return this.client.vm.kill({ name, signal: flags.signal });
      },
      (r) => `${r.name}: sent SIG${flags.signal} to the VMM; now ${r.result.vm.state}`,
    );
  }
}
