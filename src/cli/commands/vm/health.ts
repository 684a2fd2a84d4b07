import { Args } from '@oclif/core';
import type { VmHealthResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatRelativeTime, paint, useColor } from '../../format.ts';
import { checkVmName } from '../../vm-ref.ts';

export default class VmHealth extends BangerCommand {
  static override summary = 'Check a VM boots: kernel up, userspace up, SSH answering.';
  static override description = `Three checks, in boot order: the kernel printed its banner on the serial console, the guest's init reached userspace, and SSH answers with the VM's pinned host key. Exits 0 when all three pass and 1 otherwise, so scripts can wait on it. When one fails, the console usually says why: banger vm logs NAME.`;
  static override examples = [
    '<%= config.bin %> vm health calm-otter',
    'until <%= config.bin %> vm health calm-otter >/dev/null; do sleep 1; done',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };

  async run(): Promise<VmHealthResult> {
    const { args } = await this.parseWith(VmHealth);
    checkVmName(args.name);
    const h = await this.client.vm.health({ name: args.name });
    const color = useColor(process.stdout);
    const mark = (ok: boolean): string => (ok ? paint(color, 'green', '✓') : paint(color, 'red', '✗'));
    this.say(`${h.name} (${h.state}, checked ${formatRelativeTime(h.checked_at)})`);
    this.say(`  ${mark(h.kernel_up)} kernel up`);
    this.say(`  ${mark(h.userspace_up)} userspace up`);
    this.say(`  ${mark(h.ssh_ready)} ssh ready`);
    if (h.boot_id) this.say(`  boot id ${h.boot_id}`);
    const healthy = h.kernel_up && h.userspace_up && h.ssh_ready;
    if (!healthy) {
      this.say(`  the console may say why: ${this.config.bin} vm logs ${h.name}`);
      process.exitCode = 1;
    }
    return h;
  }
}
