import { Flags } from '@oclif/core';
import type { Vm, VmState } from '../../../../generated/types.gen.ts';
import { resolveDaemonSocket } from '../../../paths.ts';
import { BangerCommand } from '../../base.ts';
import { acrossContexts } from '../../context-fanout.ts';
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
          v.saved_bytes !== undefined
            ? `${v.state} (${v.idle_paused_at !== undefined ? 'idle, ' : ''}${formatBytes(v.saved_bytes)} saved)`
            : v.state,
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

export type ContextVm = Vm & { context: string };

export interface AllContextsList {
  vms: ContextVm[];
  errors: { context: string; error: string; op_id?: string }[];
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
    '<%= config.bin %> vm list --all-contexts',
  ];
  static override flags = {
    state: Flags.option({ options: STATES, summary: 'Only VMs in this state.' })(),
    'all-contexts': Flags.boolean({
      summary:
        'List the VMs of every context (default and each of banger context list), with a CONTEXT column.',
      description:
        'Contexts are asked in parallel; one that cannot be reached is a row saying why, not a failure. --json prints {vms: [{context, ...vm}], errors: [{context, error}]}.',
    }),
  };

  async run(): Promise<Vm[] | AllContextsList> {
    const { flags } = await this.parseWith(VmList);
    if (flags['all-contexts']) return this.allContexts(flags.state);
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

  private async allContexts(state: VmState | undefined): Promise<AllContextsList> {
    const local = this.target.kind === 'local' ? this.target.socket : resolveDaemonSocket(undefined);
    const results = await acrossContexts(local, async (c) => (await c.vm.list(state ? { state } : {})).vms);
    const out: AllContextsList = { vms: [], errors: [] };
    for (const r of results) {
      if ('error' in r)
        out.errors.push({ context: r.context, error: r.error, ...(r.op_id ? { op_id: r.op_id } : {}) });
      else out.vms.push(...r.value.map((v) => ({ context: r.context, ...v })));
    }
    const color = useColor(process.stdout);
    const cols: Column<ContextVm>[] = [
      { header: 'CONTEXT', get: (v) => v.context },
      ...vmColumns(color, Date.now()),
    ];
    const lines = renderRows(cols, out.vms);
    for (const line of out.vms.length > 0 ? lines : []) this.say(line);
    // Unreachable contexts: one line each, after the table (stdout, so the listing is whole).
    for (const e of out.errors)
      this.say(
        `${e.context}: ${paint(color, 'red', 'unreachable')}: ${e.error}${e.op_id ? ` (${e.op_id})` : ''}`,
      );
    if (out.vms.length === 0 && out.errors.length === 0) this.say('no VMs in any context');
    return out;
  }
}
