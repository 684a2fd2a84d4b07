import { Args, Flags } from '@oclif/core';
import type { VmStopParams, VmStopResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatDuration } from '../../format.ts';
import { checkVmName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class VmStop extends BangerCommand {
  static override summary = 'Stop a running VM gracefully.';
  static override description = `Asks the guest to power off (ACPI power button; the guest syncs its disks) and waits up to --timeout seconds; if the guest is still up then, the VMM is killed and the line says "forced". The VM's disk is kept: start it again with banger vm start. Several VMs stop at once; the exit code is non-zero if any failed. Use banger vm kill when a stop hangs.`;
  static override examples = [
    '<%= config.bin %> vm stop calm-otter',
    '<%= config.bin %> vm stop a b c',
    '<%= config.bin %> vm stop calm-otter --timeout 5',
  ];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'VMs to stop (names or ids).' }),
  };
  static override flags = {
    timeout: Flags.integer({
      char: 't',
      min: 1,
      max: 600,
      summary: 'Seconds to wait for a clean power-off before killing the VMM (default 30).',
    }),
  };

  async run(): Promise<FanOutResult<VmStopResult>[]> {
    const { argv, flags } = await this.parseWith(VmStop);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkVmName(name);
        const p: VmStopParams = { name };
        if (flags.timeout !== undefined) p.timeout_ms = flags.timeout * 1000;
        return this.client.vm.stop(p);
      },
      (r) =>
        r.result.forced
          ? `${r.name}: stopped, forced: the guest did not power off within ${flags.timeout !== undefined ? `${flags.timeout} s` : 'the stop timeout'}, so the VMM was killed (${formatDuration(r.duration_ms)})`
          : `${r.name}: stopped cleanly (${formatDuration(r.duration_ms)})`,
    );
  }
}
