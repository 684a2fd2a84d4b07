import { Flags } from '@oclif/core';
import type { Vm, VmState } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import {
  formatBytes,
  formatMiB,
  formatRelativeTime,
  formatVmNetwork,
  paint,
  useColor,
} from '../../format.ts';
import { renderRows, type Column } from '../../table.ts';

// Every VmState of the protocol (generated from the schema), checked both ways by the compiler: a
// state added to or removed from the schema fails here until --state offers exactly those. A type
// rather than the schema's enum at run time: the CLI does not load the 77 KB schema module.
const STATE_SET: Record<VmState, true> = {
  creating: true,
  stopped: true,
  starting: true,
  running: true,
  pausing: true,
  paused: true,
  resuming: true,
  stopping: true,
  error: true,
  deleting: true,
};
const STATES = Object.keys(STATE_SET) as VmState[];

export function vmColumns(color: boolean, now: number): Column<Vm>[] {
  const stateStyle = (s: VmState): 'green' | 'red' | 'yellow' | 'dim' =>
    s === 'running' ? 'green' : s === 'error' ? 'red' : s === 'stopped' ? 'dim' : 'yellow';
  return [
    { header: 'NAME', get: (v) => v.name },
    {
      header: 'STATE',
      // A VM paused to disk shows the space its saved state holds.
      get: (v) =>
        paint(
          color,
          stateStyle(v.state),
          v.saved_bytes !== undefined ? `${v.state} (${formatBytes(v.saved_bytes)} saved)` : v.state,
        ),
    },
    { header: 'IMAGE', get: (v) => v.image },
    { header: 'VCPU', get: (v) => String(v.vcpus), align: 'right' },
    { header: 'MEM', get: (v) => formatMiB(v.memory_mib), align: 'right' },
    { header: 'DISK', get: (v) => formatBytes(v.disk_size_bytes), align: 'right' },
    { header: 'NETWORK', get: (v) => formatVmNetwork(v) },
    { header: 'CREATED', get: (v) => formatRelativeTime(v.created_at, now) },
  ];
}

export default class VmList extends BangerCommand {
  static override summary = 'List VMs.';
  static override description = `Shows every VM the daemon owns, ordered by name: its state, image, size, how SSH reaches it (user networking: a forwarded 127.0.0.1 port; bridge: the guest's address) and when it was created. --json prints the VM records as an array.`;
  static override aliases = ['ps'];
  static override examples = [
    '<%= config.bin %> vm list',
    '<%= config.bin %> ps',
    '<%= config.bin %> vm list --state running',
    "<%= config.bin %> vm list --json | jq -r '.[].name'",
  ];
  static override flags = {
    state: Flags.option({ options: STATES, summary: 'Only VMs in this state.' })(),
  };

  async run(): Promise<Vm[]> {
    const { flags } = await this.parseWith(VmList);
    const { vms } = await this.client.vm.list(flags.state ? { state: flags.state } : {});
    if (vms.length === 0) {
      this.say(
        flags.state ? `no ${flags.state} VMs` : `no VMs yet; create one with: ${this.config.bin} vm create`,
      );
      return vms;
    }
    for (const line of renderRows(vmColumns(useColor(process.stdout), Date.now()), vms)) this.say(line);
    return vms;
  }
}
