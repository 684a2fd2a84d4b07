import { Args, Flags } from '@oclif/core';
import type { VmForkBeginParams, VmForkStatusResult } from '../../../../generated/types.gen.ts';
import { ErrorResponse, isErrorCode } from '../../../rpc/errors.ts';
import { BangerCommand } from '../../base.ts';
import { formatDuration, formatVmNetwork, paint, useColor } from '../../format.ts';
import { failedStep, operationElapsed, watchOperation } from '../../progress.ts';
import { checkVmName, flagError } from '../../vm-ref.ts';

export default class VmFork extends BangerCommand {
  static override summary = 'Copy a running VM, processes and memory included, into new VMs.';
  static override description = `Each fork starts where the source is now: the same processes (a job half-way through, a server with its caches warm), the same files in /tmp and on disk, the same workspace. It then gets an identity of its own before anything can reach it: hostname (its name), machine-id, SSH host key, clock, fresh randomness and, bridged, its own MAC and address. The source is paused only while its memory is saved and its disk frozen (the time is printed), then runs on.

Forks share what they have not changed: the disk as it was at the fork is a read-only base under each VM's own copy-on-write overlay, and the memory as it was is one read-only file that every fork maps copy-on-write. A workspace in the source (vm run PATH, vm workspace prepare) is in each fork on its own git branch, banger/fork/<name>, and \`banger vm workspace export\` gives each fork's own changes.

Names: --name once per fork, or -n N for N forks named <source>-fork-<n> (both: the rest get default names). The source must be running.`;
  static override examples = [
    { description: 'One fork, named calm-otter-fork-1', command: '<%= config.bin %> vm fork calm-otter' },
    {
      description: 'Two forks with names of your own',
      command: '<%= config.bin %> vm fork calm-otter --name try-a --name try-b',
    },
    {
      description: 'Four forks, default names; JSON result',
      command: '<%= config.bin %> vm fork calm-otter -n 4 --json',
    },
  ];
  static override args = {
    name: Args.string({ required: true, description: 'The running VM to fork (name or id).' }),
  };
  static override flags = {
    name: Flags.string({
      multiple: true,
      summary: 'Name of a fork (repeat for several).',
      helpValue: '<name>',
    }),
    count: Flags.integer({
      char: 'n',
      min: 1,
      max: 16,
      summary: 'How many forks (default: one per --name, else 1).',
      helpValue: '<n>',
    }),
  };

  async run(): Promise<VmForkStatusResult> {
    const { args, flags } = await this.parseWith(VmFork);
    checkVmName(args.name);
    const names = flags.name ?? [];
    for (const n of names) checkVmName(n);
    if (flags.count !== undefined && flags.count < names.length)
      throw flagError(`-n ${flags.count} is fewer than the ${names.length} names given with --name`);
    const params: VmForkBeginParams = { name: args.name };
    if (names.length > 0) params.names = names;
    if (flags.count !== undefined) params.count = flags.count;

    const begun = await this.client.vm.fork.begin(params);
    const opId = begun.operation_id;
    const watched = await watchOperation(() => this.client.vm.fork.status({ operation_id: opId }), {
      title: `Forking ${begun.source} into ${begun.names.join(', ')}`,
      cancel: () => this.client.vm.fork.cancel({ operation_id: opId }),
      color: useColor(process.stderr),
    });
    const { last } = watched;
    const op = last.operation;
    const color = useColor(process.stdout);
    if (op.state === 'succeeded') {
      const took = formatDuration(operationElapsed(op, Date.now()));
      const pause =
        last.source_pause_ms !== undefined ? `paused ${formatDuration(last.source_pause_ms)}` : 'paused';
      this.say(
        `${paint(color, 'green', '✓')} forked ${last.source} in ${took} (the source was ${pause} and runs on)`,
      );
      for (const vm of last.vms) {
        this.say(
          `  ${vm.name}: ${vm.state} (${formatVmNetwork(vm)}); connect: ${this.config.bin} vm ssh ${vm.name}`,
        );
      }
      return last;
    }
    if (op.state === 'canceled')
      throw new ErrorResponse(
        'canceled',
        `fork of ${begun.source} canceled; the forks were removed, the source runs on`,
        {
          opId: op.id,
        },
      );
    const step = failedStep(op);
    const message = op.error?.message ?? step?.detail ?? 'the fork failed';
    if (!this.jsonEnabled() && step)
      process.stderr.write(
        `${paint(useColor(process.stderr), 'red', '✗')} fork of ${begun.source} failed at step ${step.name}; the forks were removed\n`,
      );
    const code = op.error && isErrorCode(op.error.code) ? op.error.code : 'operation_failed';
    throw new ErrorResponse(code, message, { opId: op.id });
  }
}
