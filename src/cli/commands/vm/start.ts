import { Args } from '@oclif/core';
import type { VmStartResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatDuration, formatVmNetwork } from '../../format.ts';
import { checkVmName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class VmStart extends BangerCommand {
  static override summary = 'Start a stopped VM.';
  static override description = `Boots the VM on its existing disk (what was written before it stopped is still there) and waits until SSH answers. Several VMs start at once; each gets a line as it is ready, a failure prints its error and op id, and the exit code is non-zero if any failed.`;
  static override examples = ['<%= config.bin %> vm start calm-otter', '<%= config.bin %> vm start a b c'];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'VMs to start (names or ids).' }),
  };

  async run(): Promise<FanOutResult<VmStartResult>[]> {
    const { argv } = await this.parseWith(VmStart);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkVmName(name);
        return this.client.vm.start({ name });
      },
      (r) =>
        `${r.name}: started in ${formatDuration(r.duration_ms)} (${formatVmNetwork(r.result.vm)}); connect: ${this.config.bin} vm ssh ${r.name}`,
    );
  }
}
