import { Args } from '@oclif/core';
import type { Vm } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { vmFields } from '../../format.ts';
import { renderFields } from '../../table.ts';
import { checkVmName } from '../../vm-ref.ts';

export default class VmShow extends BangerCommand {
  static override summary = 'Show one VM: state, size, network, times, directory.';
  static override description = `Prints the VM's record: its state (with the VMM's pid and accelerator while it runs), image, vCPUs, memory, disk, network (how SSH reaches it), boot count, times and its directory on the host (disk overlay, serial log, sockets). --json prints the record as the daemon returns it.`;
  static override examples = [
    '<%= config.bin %> vm show calm-otter',
    '<%= config.bin %> vm show calm-otter --json',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };

  async run(): Promise<Vm> {
    const { args } = await this.parseWith(VmShow);
    checkVmName(args.name);
    const { vm } = await this.client.vm.show({ name: args.name });
    for (const line of renderFields(vmFields(vm))) this.say(line);
    return vm;
  }
}
