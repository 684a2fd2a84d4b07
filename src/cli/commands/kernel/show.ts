import { Args } from '@oclif/core';
import type { Kernel } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { kernelFields } from '../../format.ts';
import { renderFields } from '../../table.ts';
import { checkResourceName } from '../../vm-ref.ts';

export default class KernelShow extends BangerCommand {
  static override summary = 'Show one kernel: release, files, the images that boot it.';
  static override description =
    'Prints the kernel record: its release, where it came from, the kernel and initramfs files in banger’s state and the images that boot it.';
  static override examples = ['<%= config.bin %> kernel show debian-bookworm'];
  static override args = {
    name: Args.string({ required: true, description: 'The kernel.' }),
  };

  async run(): Promise<Kernel> {
    const { args } = await this.parseWith(KernelShow);
    checkResourceName(args.name, 'kernel');
    const { kernel } = await this.client.kernel.show({ name: args.name });
    for (const l of renderFields(kernelFields(kernel))) this.say(l);
    return kernel;
  }
}
