import { Args } from '@oclif/core';
import type { Vm } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkVmName } from '../../vm-ref.ts';

export default class VmTouch extends BangerCommand {
  static override summary = 'Mark a VM used now, restarting its idle pause timer.';
  static override description = `A VM with idle_pause_after (its own, from vm create --idle-pause-after, or the daemon's [vm_defaults] idle_pause_after) is paused to disk once nobody used it for that long; see docs/snapshots.md "Idle pause". This marks it used now, e.g. from a script that works with the VM in a way the daemon cannot see (a service in it reached through a port of its own). It only marks: a stopped or paused VM is not started or resumed. vm ssh and vm exec do this by themselves while their session is open.`;
  static override examples = [
    '<%= config.bin %> vm touch calm-otter',
    '<%= config.bin %> vm touch calm-otter --json',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };

  async run(): Promise<Vm> {
    const { args } = await this.parseWith(VmTouch);
    checkVmName(args.name);
    const { vm } = await this.client.vm.touch({ name: args.name });
    this.say(
      vm.idle_pause_after
        ? `${vm.name}: used now (${vm.state}; idle pause after ${vm.idle_pause_after})`
        : `${vm.name}: used now (${vm.state}; idle pause is off for it)`,
    );
    return vm;
  }
}
