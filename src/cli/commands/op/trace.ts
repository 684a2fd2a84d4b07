import { Args, Flags } from '@oclif/core';
import type { OpTraceResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { paint, useColor } from '../../format.ts';
import { formatTraceHeader, formatTraceLine, parseOpId } from '../../op-format.ts';

export default class OpTrace extends BangerCommand {
  static override summary = 'Everything that happened under one op id, on one timeline.';
  static override description = `Follows an op id (every error banger prints ends with one) across every process: the daemon's log lines, the root helper's lines (with their duration_ms), the operation's steps with their durations, and the serial console lines of the VM it booted, ordered by time. Times are relative to the operation's start.

Sources: daemon and helper are log lines carrying the id; step is the operation's recorded steps (and, last, how it ended); serial lines (marked │) are what the VM's console printed while the operation ran: the guest knows nothing of op ids, so they are attributed by time window, each at the moment the daemon first saw it (within 250 ms).

Notes at the end say what could not be read: logs rotated away, a helper log banger was not told about, a console that is gone. --json prints the raw merged records.`;
  static override examples = [
    '<%= config.bin %> op trace op-3f9a1c07b2d4',
    {
      description: 'Without the console lines',
      command: '<%= config.bin %> op trace op-3f9a1c07b2d4 --no-serial',
    },
    {
      description: 'Only the failed and warning lines',
      command: `<%= config.bin %> op trace op-3f9a1c07b2d4 --json | jq '.records[] | select(.level == "warn" or .level == "error")'`,
    },
  ];
  static override args = {
    op: Args.string({ required: true, description: 'The op id (op-… as errors print it).' }),
  };
  static override flags = {
    serial: Flags.boolean({
      allowNo: true,
      summary: "Include the VM's console lines of the operation's window (--no-serial leaves them out).",
    }),
  };

  async run(): Promise<OpTraceResult> {
    const { args, flags } = await this.parseWith(OpTrace);
    const opId = parseOpId(args.op);
    const r = await this.client.op.trace(
      flags.serial === false ? { op_id: opId, serial: false } : { op_id: opId },
    );
    const color = useColor(process.stdout);
    this.say(formatTraceHeader(r.summary, r.op_id, color));
    for (const rec of r.records) this.say(formatTraceLine(rec, color));
    if (r.records.length === 0) this.say('(no records)');
    if (!this.jsonEnabled()) {
      const warn = useColor(process.stderr);
      for (const n of r.notes) process.stderr.write(`${paint(warn, 'yellow', 'note:')} ${n}\n`);
    }
    return r;
  }
}
