import { Args, Flags } from '@oclif/core';
import type { Vm, VmSetParams } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatMiB } from '../../format.ts';
import { checkVmName, usageError } from '../../vm-ref.ts';
import { memoryFlag } from './create.ts';

export default class VmSet extends BangerCommand {
  static override summary = "Change a stopped VM's vCPUs or memory.";
  static override description = `Changes the VM's vCPU count and/or memory; they take effect at its next start. The VM must be stopped (a running VM gives a conflict error: stop it first). Give at least one of --vcpu, --memory.`;
  static override examples = [
    '<%= config.bin %> vm set calm-otter --vcpu 4',
    '<%= config.bin %> vm set calm-otter --memory 4G',
    '<%= config.bin %> vm stop dev && <%= config.bin %> vm set dev --vcpu 8 --memory 16384 && <%= config.bin %> vm start dev',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };
  static override flags = {
    vcpu: Flags.integer({ min: 1, max: 64, summary: 'New vCPU count.' }),
    memory: memoryFlag({ char: 'm', summary: 'New memory: MiB (2048) or a size with a unit (2G).' }),
  };

  async run(): Promise<Vm> {
    const { args, flags } = await this.parseWith(VmSet);
    checkVmName(args.name);
    if (flags.vcpu === undefined && flags.memory === undefined) {
      throw usageError('nothing to change: give --vcpu and/or --memory');
    }
    const p: VmSetParams = { name: args.name };
    if (flags.vcpu !== undefined) p.vcpus = flags.vcpu;
    if (flags.memory !== undefined) p.memory_mib = flags.memory;
    const { vm } = await this.client.vm.set(p);
    this.say(
      `${vm.name}: ${vm.vcpus} vCPU, ${formatMiB(vm.memory_mib)} RAM (takes effect at the next start)`,
    );
    return vm;
  }
}
