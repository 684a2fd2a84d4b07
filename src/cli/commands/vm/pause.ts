import { Args } from '@oclif/core';
import type { VmPauseResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes } from '../../format.ts';
import { checkVmName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class VmPause extends BangerCommand {
  static override summary = 'Pause a running VM to disk, freeing its memory.';
  static override description = `Saves the VM's whole state (device state and guest RAM) in its directory and ends its VMM: the VM is paused, uses no memory or CPU, and survives daemon restarts and host reboots. \`banger vm resume\` (or \`vm start\`) brings it back with its processes and tmpfs contents, its clock corrected; \`vm stop\` discards the saved state; \`vm delete\` removes it. A save that fails (e.g. a full host disk) leaves the VM running and says why.`;
  static override examples = [
    '<%= config.bin %> vm pause calm-otter',
    '<%= config.bin %> vm pause calm-otter --json',
  ];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'VMs to pause (names or ids).' }),
  };

  async run(): Promise<FanOutResult<VmPauseResult>[]> {
    const { argv } = await this.parseWith(VmPause);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkVmName(name);
        return this.client.vm.pause({ name });
      },
      (r) =>
        `${r.name}: ${r.result.vm.state}${r.result.vm.saved_bytes !== undefined ? ` (saved to disk, ${formatBytes(r.result.vm.saved_bytes)})` : ''}`,
    );
  }
}
