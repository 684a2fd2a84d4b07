import { Args } from '@oclif/core';
import type { VmResumeResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkVmName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class VmResume extends BangerCommand {
  static override summary = 'Resume a paused VM (paused by QEMU, or paused to disk).';
  static override description = `A VM paused to disk by \`banger vm pause\` is restored: the same VMM configuration loads its saved state, the guest continues with its processes and tmpfs contents, its clock is corrected, and the command returns once it answers SSH (the saved state is then removed). A VM is also paused when QEMU stopped its guest, e.g. because the host disk filled up while the guest was writing (\`vm show\` says why): banger resumes such a VM by itself once there is room again; this resumes it now. QEMU retries the failed write first: a disk that is still full pauses the VM again.`;
  static override examples = ['<%= config.bin %> vm resume calm-otter'];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'VMs to resume (names or ids).' }),
  };

  async run(): Promise<FanOutResult<VmResumeResult>[]> {
    const { argv } = await this.parseWith(VmResume);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkVmName(name);
        return this.client.vm.resume({ name });
      },
      (r) => `${r.name}: ${r.result.vm.state}`,
    );
  }
}
