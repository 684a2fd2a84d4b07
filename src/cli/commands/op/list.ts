import { Flags } from '@oclif/core';
import type { OpListParams, OpSummary } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { useColor } from '../../format.ts';
import { opColumns, parseWhen } from '../../op-format.ts';
import { renderRows } from '../../table.ts';
import { checkVmName } from '../../vm-ref.ts';

export default class OpList extends BangerCommand {
  static override summary = 'List recent operations (the calls the daemon served), newest first.';
  static override description = `Every call to the daemon gets an op id; every error banger prints ends with it. This lists what the daemon recorded about each: the method, the VM it touched, when it started, how long it took and how it ended. A create (vm.create.begin) answers at once and runs on; its line carries the whole create's outcome and duration.

Successful status polls are not recorded; failures always are. Records are kept for the newest 1000 operations of the last 30 days (config [logs] max_operations, max_age_days).

Follow one with: banger op show OP-ID, or the whole timeline with: banger op trace OP-ID.`;
  static override examples = [
    '<%= config.bin %> op list',
    {
      description: 'What failed in the last hour',
      command: '<%= config.bin %> op list --failed --since 1h',
    },
    {
      description: 'Every create of one VM',
      command: '<%= config.bin %> op list --vm calm-otter --method vm.create',
    },
    "<%= config.bin %> op list --failed --json | jq -r '.[].op_id'",
  ];
  static override flags = {
    method: Flags.string({
      summary: 'Only this method, or operations of this kind (vm.create, image.build).',
      helpValue: '<method>',
    }),
    vm: Flags.string({ summary: 'Only operations that touched this VM.', helpValue: '<name>' }),
    failed: Flags.boolean({ summary: 'Only operations that failed.' }),
    since: Flags.string({
      summary: 'Only operations started since: a duration ago (30m, 2h, 7d) or a date.',
      helpValue: '<when>',
    }),
    until: Flags.string({
      summary: 'Only operations started before this (same forms).',
      helpValue: '<when>',
    }),
    limit: Flags.integer({ min: 1, max: 1000, summary: 'At most this many (default 50).' }),
  };

  async run(): Promise<OpSummary[]> {
    const { flags } = await this.parseWith(OpList);
    const now = Date.now();
    const p: OpListParams = {};
    if (flags.method !== undefined) p.method = flags.method;
    if (flags.vm !== undefined) {
      checkVmName(flags.vm);
      p.vm = flags.vm;
    }
    if (flags.failed) p.failed_only = true;
    if (flags.since !== undefined) p.since = parseWhen(flags.since, '--since', now);
    if (flags.until !== undefined) p.until = parseWhen(flags.until, '--until', now);
    if (flags.limit !== undefined) p.limit = flags.limit;
    const { operations } = await this.client.op.list(p);
    if (operations.length === 0) {
      const filtered = Object.keys(p).length > 0;
      this.say(filtered ? 'no operations match' : 'no operations recorded yet');
      return operations;
    }
    for (const line of renderRows(opColumns(useColor(process.stdout), now), operations)) this.say(line);
    return operations;
  }
}
