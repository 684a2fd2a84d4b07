import { Args, Flags } from '@oclif/core';
import type { VmLogsParams, VmLogsResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes, parseSizeBytes } from '../../format.ts';
import { untilInterrupted } from '../../interruptible.ts';
import { checkVmName, usageError } from '../../vm-ref.ts';

export default class VmLogs extends BangerCommand {
  static override summary = "Print a VM's serial console; -f to keep following it.";
  static override description = `Prints the end of the VM's serial console log (kernel messages, init, login prompt) exactly as the guest wrote it: the last 64 KiB unless --tail. With -f/--follow it keeps printing what the guest writes until you press Ctrl-C or the VM stops. This is the log to read when a create or a start fails. --json prints {name, data, truncated, path} (not with --follow).`;
  static override examples = [
    '<%= config.bin %> vm logs calm-otter',
    '<%= config.bin %> vm logs calm-otter -f',
    '<%= config.bin %> vm logs calm-otter --tail 1M | less',
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The VM (name or id).' }),
  };
  static override flags = {
    follow: Flags.boolean({
      char: 'f',
      summary: 'Keep printing new console output until Ctrl-C or the VM stops.',
    }),
    tail: Flags.string({
      summary: 'Print at most this much from the end: bytes, or a size like 256K or 1M (default 64K).',
      helpValue: '<bytes>',
    }),
  };

  async run(): Promise<VmLogsResult | undefined> {
    const { args, flags } = await this.parseWith(VmLogs);
    checkVmName(args.name);
    // `banger vm logs x | head`: a reader that stops early is not an error.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
    const json = this.jsonEnabled();
    if (json && flags.follow) throw usageError('--json and --follow do not mix: --json prints one snapshot');
    const p: VmLogsParams = { name: args.name };
    if (flags.tail !== undefined) {
      const n = parseSizeBytes(flags.tail);
      if (n === undefined || n > 64 * 1024 ** 2) {
        throw usageError(`--tail ${flags.tail}: give a byte count or a size up to 64M (e.g. 4096, 256K, 1M)`);
      }
      p.tail_bytes = n;
    }
    if (!flags.follow) {
      const r = await this.client.vm.logs(p);
      if (json) return r;
      if (r.truncated) {
        process.stderr.write(
          `(earlier output left out; showing the last ${formatBytes(p.tail_bytes ?? 65536)} of ${r.path})\n`,
        );
      }
      process.stdout.write(r.data);
      return undefined;
    }

    p.follow = true;
    await untilInterrupted(async (signal) => {
      const r = await this.client.vm.logs(p, {
        signal,
        onFrame: (frame) => {
          const data = (frame as { data?: unknown }).data;
          if (typeof data === 'string') process.stdout.write(data);
        },
      });
      process.stdout.write(r.data);
      process.stderr.write(`(${r.name} stopped; end of its console)\n`);
    });
    return undefined;
  }
}
