import { Args } from '@oclif/core';
import type { KernelDeleteResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkResourceName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class KernelDelete extends BangerCommand {
  static override summary = 'Delete a kernel no image uses.';
  static override description = `Removes the kernel's files and record. A kernel an image boots cannot be deleted (conflict): delete the image first (banger kernel show NAME lists them). Several kernels are deleted at once; the exit code is non-zero if any failed.`;
  static override hiddenAliases = ['kernel:rm'];
  static override examples = ['<%= config.bin %> kernel delete my-kernel'];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'Kernels to delete.' }),
  };

  async run(): Promise<FanOutResult<KernelDeleteResult>[]> {
    const { argv } = await this.parseWith(KernelDelete);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkResourceName(name, 'kernel');
        return this.client.kernel.delete({ name });
      },
      (r) => `${r.name}: kernel deleted`,
    );
  }
}
