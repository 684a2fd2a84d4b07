import { Args } from '@oclif/core';
import type { VmRestartResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatDuration } from '../../format.ts';
import { checkVmName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class VmRestart extends BangerCommand {
  static override summary = 'Stop then start a VM.';
  static override description = `A graceful stop (the VMM is killed if the guest does not power off in time) followed by a start that waits for SSH; the guest gets a new boot. Several VMs restart at once; the exit code is non-zero if any failed.`;
  static override examples = ['<%= config.bin %> vm restart calm-otter', '<%= config.bin %> vm restart a b'];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'VMs to restart (names or ids).' }),
  };

  async run(): Promise<FanOutResult<VmRestartResult>[]> {
    const { argv } = await this.parseWith(VmRestart);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkVmName(name);
        return this.client.vm.restart({ name });
      },
      (r) => `${r.name}: restarted in ${formatDuration(r.duration_ms)} (boot ${r.result.vm.boot_count})`,
    );
  }
}
