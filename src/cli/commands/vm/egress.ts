import { Args, Flags } from '@oclif/core';
import type { EgressEvent, VmEgressParams, VmEgressResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatVmEgress } from '../../format.ts';
import { untilInterrupted } from '../../interruptible.ts';
import { renderTable } from '../../table.ts';
import { checkVmName, usageError } from '../../vm-ref.ts';

/** One event as a line: time, verdict, protocol, destination, rule or reason, op id. */
export function egressRow(ev: EgressEvent): string[] {
  const dest =
    `${ev.host ?? ev.ip ?? '?'}${ev.port !== undefined ? `:${ev.port}` : ''}` +
    (ev.host !== undefined && ev.ip !== undefined && ev.ip !== ev.host ? ` (${ev.ip})` : '');
  return [
    ev.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    ev.verdict.toUpperCase(),
    ev.proto,
    dest,
    ev.verdict === 'allow' ? `rule ${ev.rule ?? '?'}` : ev.reason,
    ev.op_id ?? '',
  ];
}

const HEADERS = ['TIME', 'VERDICT', 'PROTO', 'DESTINATION', 'RULE / REASON', 'OP'];

export default class VmEgress extends BangerCommand {
  static override summary = "List a VM's recent allowed and denied connections; -f to follow them.";
  static override description = `Prints the VM's egress policy and its most recent connections as banger's enforcement saw them (the egress proxy, the bridged filter, banger's resolver): time, ALLOW or DENY, protocol, destination, the rule that allowed it or why it was denied, and the op id that set the policy (the VM's create or the last vm set --egress). The daemon keeps the last 1000 per VM since it started; its log has one line per event ("egress deny" / "egress allow") with the same op id, so banger op trace OP-ID shows them too. With -f it keeps printing new events until Ctrl-C. --json prints {name, egress, events}.`;
  static override examples = [
    '<%= config.bin %> vm egress calm-otter',
    '<%= config.bin %> vm egress calm-otter -f',
    '<%= config.bin %> vm egress calm-otter --json | jq \'.events[] | select(.verdict == "deny")\'',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };
  static override flags = {
    follow: Flags.boolean({ char: 'f', summary: 'Keep printing new events until Ctrl-C.' }),
    limit: Flags.integer({ min: 1, max: 1000, summary: 'At most this many recent events (default 100).' }),
  };

  async run(): Promise<VmEgressResult | undefined> {
    const { args, flags } = await this.parseWith(VmEgress);
    checkVmName(args.name);
    const json = this.jsonEnabled();
    if (json && flags.follow) throw usageError('--json and --follow do not mix: --json prints one snapshot');
    const p: VmEgressParams = { name: args.name };
    if (flags.limit !== undefined) p.limit = flags.limit;
    if (!flags.follow) {
      const r = await this.client.vm.egress(p);
      if (json) return r;
      this.say(`${r.name}: egress ${formatVmEgress({ egress: r.egress })}`);
      if (r.events.length === 0) this.say('no connections recorded (since the daemon started)');
      else for (const line of renderTable(HEADERS, r.events.map(egressRow))) this.say(line);
      return undefined;
    }
    p.follow = true;
    await untilInterrupted(async (signal) => {
      // A table needs every row to size its columns: a follow prints one line per event instead.
      await this.client.vm.egress(p, {
        signal,
        onFrame: (frame) => {
          const ev = (frame as { event?: EgressEvent }).event;
          if (ev) process.stdout.write(`${egressRow(ev).filter(Boolean).join('  ')}\n`);
        },
      });
      process.stderr.write(`(${args.name} is gone; end of its events)\n`);
    });
    return undefined;
  }
}
