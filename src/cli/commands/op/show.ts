import { Args } from '@oclif/core';
import type { OpShowResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatDuration, paint, useColor } from '../../format.ts';
import { opFields, parseOpId } from '../../op-format.ts';
import { renderFields, renderTable } from '../../table.ts';

export default class OpShow extends BangerCommand {
  static override summary = 'Show one operation: its record and, for multi-step operations, its steps.';
  static override description = `Prints what the daemon recorded about an op id: the method, the VM it touched, when it started and ended, how it ended (the error code and message when it failed), and for multi-step operations (vm create, image build) each step with its state and duration. A step marked undone completed and was then undone after a later step failed.

For everything that happened under the id (the daemon's and the root helper's log lines, the steps, the VM's console) on one timeline: banger op trace OP-ID.`;
  static override examples = [
    '<%= config.bin %> op show op-3f9a1c07b2d4',
    '<%= config.bin %> op show 3f9a1c07b2d4 --json',
  ];
  static override args = {
    op: Args.string({ required: true, description: 'The op id (op-… as errors print it).' }),
  };

  async run(): Promise<OpShowResult> {
    const { args } = await this.parseWith(OpShow);
    const r = await this.client.op.show({ op_id: parseOpId(args.op) });
    const now = Date.now();
    for (const line of renderFields(opFields(r.summary, r.operation, now))) this.say(line);
    const steps = r.operation?.steps ?? [];
    if (steps.length > 0) {
      const color = useColor(process.stdout);
      this.say('');
      const rows = steps.map((s) => [
        s.name,
        paint(color, s.state === 'failed' ? 'red' : s.state === 'done' ? 'green' : 'dim', s.state),
        s.duration_ms !== undefined ? formatDuration(s.duration_ms) : '',
        s.detail ?? '',
      ]);
      for (const line of renderTable(['STEP', 'STATE', 'TOOK', 'DETAIL'], rows, ['left', 'left', 'right']))
        this.say(line);
    }
    this.say('');
    this.say(`timeline: ${this.config.bin} op trace ${r.summary.op_id}`);
    return r;
  }
}
