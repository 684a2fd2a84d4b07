import { Args } from '@oclif/core';
import type { VmStatsResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes, formatDuration } from '../../format.ts';
import { renderFields } from '../../table.ts';
import { checkVmName } from '../../vm-ref.ts';

export default class VmStats extends BangerCommand {
  static override summary = 'Resource use of a VM: CPU, memory, disk, uptime.';
  static override description = `While the VM runs: the CPU share of its VMM process over a short sample (100% = one core) and the CPU time it used, its resident memory on the host, and how long it has been up. Always: how much host disk the VM's copy-on-write overlay takes, next to the disk size the guest sees.`;
  static override examples = [
    '<%= config.bin %> vm stats calm-otter',
    '<%= config.bin %> vm stats calm-otter --json',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };

  async run(): Promise<VmStatsResult> {
    const { args } = await this.parseWith(VmStats);
    checkVmName(args.name);
    const s = await this.client.vm.stats({ name: args.name });
    const cpu =
      s.cpu_percent !== undefined
        ? `${s.cpu_percent.toFixed(1)}%${s.cpu_seconds !== undefined ? ` (${formatDuration(s.cpu_seconds * 1000)} CPU time)` : ''}`
        : undefined;
    const lines = renderFields([
      ['name', s.name],
      ['state', s.pid !== undefined ? `${s.state} (pid ${s.pid})` : s.state],
      ['cpu', cpu ?? (s.state === 'running' ? '?' : '-')],
      ['memory', s.rss_bytes !== undefined ? `${formatBytes(s.rss_bytes)} resident` : '-'],
      [
        'disk',
        `${formatBytes(s.disk_allocated_bytes)} used on the host, of ${formatBytes(s.disk_virtual_bytes)} (${pct(s.disk_allocated_bytes, s.disk_virtual_bytes)})`,
      ],
      ['uptime', s.uptime_ms !== undefined ? formatDuration(s.uptime_ms) : '-'],
    ]);
    for (const l of lines) this.say(l);
    return s;
  }
}

function pct(part: number, whole: number): string {
  return whole > 0 ? `${((part / whole) * 100).toFixed(1)}%` : '-';
}
