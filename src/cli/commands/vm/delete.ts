import { Args, Flags } from '@oclif/core';
import type { VmDeleteResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkVmName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class VmDelete extends BangerCommand {
  static override summary = 'Stop a VM and remove its disk (irreversible).';
  static override description = `Stops the VM if it runs (killing it after the stop timeout), then removes its directory — disk overlay, seed, console log, sockets — and its record, and releases its network. The image it was created from is untouched. It asks no question (it is meant for scripts too); -f/--force is accepted for compatibility and changes nothing. Several VMs are deleted at once; the exit code is non-zero if any failed.`;
  static override hiddenAliases = ['vm:rm'];
  static override examples = ['<%= config.bin %> vm delete calm-otter', '<%= config.bin %> vm delete a b c'];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'VMs to delete (names or ids).' }),
  };
  static override flags = {
    force: Flags.boolean({ char: 'f', summary: 'Accepted for compatibility; delete never asks.' }),
  };

  async run(): Promise<FanOutResult<VmDeleteResult>[]> {
    const { argv } = await this.parseWith(VmDelete);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkVmName(name);
        return this.client.vm.delete({ name });
      },
      (r) => `${r.name}: deleted (disk, console log and record removed; network released)`,
    );
  }
}
