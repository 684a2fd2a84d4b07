import { Args, Flags } from '@oclif/core';
import type { Vm, VmSetParams } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { EGRESS_DESCRIPTION, egressFlag } from '../../egress-flag.ts';
import { idlePauseAfterFlag } from '../../idle-flag.ts';
import { formatMiB, formatVmEgress } from '../../format.ts';
import { checkVmName, usageError } from '../../vm-ref.ts';
import { memoryFlag } from './create.ts';

export default class VmSet extends BangerCommand {
  static override summary = "Change a stopped VM's vCPUs or memory, or any VM's egress policy.";
  static override description = `Changes the VM's vCPU count and/or memory; they take effect at its next start. The VM must be stopped for those (a running VM gives a conflict error: stop it first).

--egress changes where the VM may connect, also while it runs: at once for a bridged VM, and for a user-mode VM moving between two restricted policies (none, allow=…); a user-mode VM moving between all and a restricted policy gets the new policy at its next start (banger says so; restart it to apply), keeping the one it booted with until then. --idle-pause-after sets the VM's own idle pause (docs/snapshots.md "Idle pause"; 0 never pauses it), in any state. Give at least one of --vcpu, --memory, --egress, --idle-pause-after.

${EGRESS_DESCRIPTION}`;
  static override examples = [
    '<%= config.bin %> vm set calm-otter --vcpu 4',
    '<%= config.bin %> vm set calm-otter --memory 4G',
    '<%= config.bin %> vm stop dev && <%= config.bin %> vm set dev --vcpu 8 --memory 16384 && <%= config.bin %> vm start dev',
    "<%= config.bin %> vm set calm-otter --egress 'allow=registry.npmjs.org:443,*.githubusercontent.com:443'",
    '<%= config.bin %> vm set calm-otter --egress none',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };
  static override flags = {
    vcpu: Flags.integer({ min: 1, max: 64, summary: 'New vCPU count.' }),
    memory: memoryFlag({ char: 'm', summary: 'New memory: MiB (2048) or a size with a unit (2G).' }),
    egress: egressFlag({ summary: 'New egress policy: all, none, or allow=RULE[,RULE…].' }),
    'idle-pause-after': idlePauseAfterFlag,
  };

  async run(): Promise<Vm> {
    const { args, flags } = await this.parseWith(VmSet);
    checkVmName(args.name);
    if (
      flags.vcpu === undefined &&
      flags.memory === undefined &&
      flags.egress === undefined &&
      flags['idle-pause-after'] === undefined
    ) {
      throw usageError('nothing to change: give --vcpu and/or --memory, --egress or --idle-pause-after');
    }
    const p: VmSetParams = { name: args.name };
    if (flags.vcpu !== undefined) p.vcpus = flags.vcpu;
    if (flags.memory !== undefined) p.memory_mib = flags.memory;
    if (flags.egress !== undefined) p.egress = flags.egress;
    if (flags['idle-pause-after'] !== undefined) p.idle_pause_after = flags['idle-pause-after'];
    const r = await this.client.vm.set(p);
    const vm = r.vm;
    if (flags.vcpu !== undefined || flags.memory !== undefined)
      this.say(
        `${vm.name}: ${vm.vcpus} vCPU, ${formatMiB(vm.memory_mib)} RAM (takes effect at the next start)`,
      );
    if (flags.egress !== undefined) {
      const when = r.egress_applied === 'live' ? 'enforced now' : 'from the next start';
      this.say(`${vm.name}: egress ${formatVmEgress(vm)} (${when})`);
      if (r.egress_note) this.warn(r.egress_note);
    }
    if (flags['idle-pause-after'] !== undefined)
      this.say(
        `${vm.name}: ${vm.idle_pause_after !== undefined ? `idle pause after ${vm.idle_pause_after}` : 'idle pause off'}`,
      );
    return vm;
  }
}
