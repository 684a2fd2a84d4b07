import { resolve } from 'node:path';
import { Args, Flags } from '@oclif/core';
import { DEFAULT_CONFIG } from '../../../daemon/config.ts';
import { mintOpId } from '../../../rpc/context.ts';
import {
  jobMemoryMib,
  jobName,
  NODE_SOCKET,
  srunArgv,
  VMM_OVERHEAD_MIB,
  type SlurmJobSpec,
} from '../../../slurm/job.ts';
import { SlurmSpawnError, submitJob } from '../../../slurm/submit.ts';
import { BangerCommand } from '../../base.ts';
import { shellQuote } from '../../../util/shell.ts';
import { checkResourceName, checkVmName, usageError } from '../../vm-ref.ts';
import { diskSizeFlag, memoryFlag } from '../vm/create.ts';

export interface SlurmRunDryRun {
  dry_run: true;
  op_id: string;
  job_name: string;
  cpus_per_task: number;
  mem_mib: number;
  argv: string[];
}

export default class SlurmRun extends BangerCommand {
  static override summary =
    'Run a sandbox as a Slurm job: banger vm run --rm on the node Slurm picks, output and exit code back here.';
  static override description = `Submits one Slurm job (srun, in the foreground) whose resources are the VM's: --cpus-per-task is its vCPUs, --mem its memory plus ${VMM_OVERHEAD_MIB} MiB for the VMM (measured, docs/bench.md). On the node Slurm picks, the job runs banger vm run --rm against that node's bangerd (--node-socket, default ${NODE_SOCKET}, where banger system install puts it). The command's output and exit code come back as from vm run.

The job is named banger-OP-ID and its comment is banger-op=OP-ID: the node's vm run makes every call with that op id, so banger op trace OP-ID on the node shows the sandbox's timeline. scancel (SIGTERM, then SIGKILL after KillWait) makes the node's vm run delete its VM; Ctrl-C, SIGTERM or SIGHUP to this command cancels the job the same way.

PATH is the workspace: it must be a git work tree at the same absolute path on the node (shared storage, e.g. NFS home directories); the node's bangerd copies it from there. Nothing is copied through Slurm.

Without a command, an interactive shell opens (srun --pty) when this terminal is one.`;
  static override examples = [
    {
      description: 'Run the tests of a repository on shared storage in a 1-vCPU sandbox',
      command:
        '<%= config.bin %> slurm run --partition sandboxes --vcpu 1 --memory 512 ~/src/app -- make test',
    },
    {
      description: 'The srun it would run, without submitting anything',
      command: "<%= config.bin %> slurm run --dry-run -- sh -c 'exit 3'",
    },
  ];
  static override strict = false;
  static override usage = 'slurm run [PATH] [FLAGS] [-- COMMAND [ARG...]]';
  static override args = {
    path: Args.string({
      required: false,
      description: 'A git work tree at the same path on the compute node (shared storage).',
    }),
  };
  static override flags = {
    partition: Flags.string({ char: 'p', summary: 'Slurm partition (default: the cluster’s default).' }),
    time: Flags.string({ char: 't', summary: 'Slurm time limit (srun --time), e.g. 30 or 1:00:00.' }),
    'node-socket': Flags.string({
      summary: `The bangerd socket on the compute node (default ${NODE_SOCKET}).`,
    }),
    'node-bin': Flags.string({
      summary: 'The banger the node runs (default: banger on the job’s PATH).',
      hidden: true,
    }),
    name: Flags.string({ char: 'n', summary: 'Name of the VM (default: a random friendly name).' }),
    image: Flags.string({
      char: 'i',
      summary: 'Image to create it from (default: the node’s default image).',
    }),
    vcpu: Flags.integer({
      min: 1,
      max: 64,
      summary: `Virtual CPUs, and the job's --cpus-per-task (default ${DEFAULT_CONFIG.vm_defaults.vcpus}).`,
    }),
    memory: memoryFlag({
      char: 'm',
      summary: `Guest memory (MiB or 2G); the job's --mem adds ${VMM_OVERHEAD_MIB} MiB (default ${DEFAULT_CONFIG.vm_defaults.memory_mib}).`,
    }),
    'disk-size': diskSizeFlag({ summary: 'Root disk size, e.g. 8G (default: the node’s config).' }),
    network: Flags.option({
      options: ['user', 'bridge'] as const,
      summary: 'user or bridge networking on the node (default: the node’s config).',
    })(),
    nat: Flags.boolean({ summary: 'Give the guest outbound internet through NAT (bridge mode).' }),
    cold: Flags.boolean({ summary: 'Boot cold even when a warm template of this spec exists.' }),
    'include-untracked': Flags.boolean({ summary: 'Also copy untracked files of PATH.' }),
    mode: Flags.option({
      options: ['tracked', 'full_copy'] as const,
      summary: 'How PATH is copied: tracked (default) or full_copy.',
    })(),
    'no-devcontainer': Flags.boolean({ summary: 'Ignore PATH’s devcontainer.json.' }),
    'dry-run': Flags.boolean({ summary: 'Print the srun command line; submit nothing.' }),
  };

  async run(): Promise<SlurmRunDryRun | undefined> {
    const dd = this.argv.indexOf('--');
    const command = dd === -1 ? [] : this.argv.slice(dd + 1);
    if (dd !== -1) this.argv = this.argv.slice(0, dd);
    const { args, argv, flags } = await this.parseWith(SlurmRun);
    const extra = argv.slice(1).map(String);
    if (extra.length > 0)
      throw usageError(
        `unexpected ${extra.map((a) => `"${a}"`).join(' ')}: slurm run takes one PATH; put the command after --`,
      );
    if (flags.name !== undefined) checkVmName(flags.name);
    if (flags.image !== undefined) checkResourceName(flags.image, 'image');
    if (args.path === undefined && (flags['include-untracked'] || flags.mode !== undefined))
      throw usageError('--include-untracked and --mode apply to a PATH to copy: give one');
    if (this.jsonEnabled() && !flags['dry-run'])
      throw usageError('--json needs --dry-run (otherwise stdout is the command’s own output)');

    // vm run's own flags, passed on unchanged.
    const vmRunFlags: string[] = [];
    if (flags.name !== undefined) vmRunFlags.push('--name', flags.name);
    if (flags.image !== undefined) vmRunFlags.push('--image', flags.image);
    if (flags['disk-size'] !== undefined) vmRunFlags.push('--disk-size', String(flags['disk-size']));
    if (flags.network !== undefined) vmRunFlags.push('--network', flags.network);
    if (flags.nat) vmRunFlags.push('--nat');
    if (flags.cold) vmRunFlags.push('--cold');
    if (flags['include-untracked']) vmRunFlags.push('--include-untracked');
    if (flags.mode !== undefined) vmRunFlags.push('--mode', flags.mode);
    if (flags['no-devcontainer']) vmRunFlags.push('--no-devcontainer');

    const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
    const spec: SlurmJobSpec = {
      opId: mintOpId(),
      // Always explicit: the job's reservation and the VM must agree, whatever the node's config says.
      vcpus: flags.vcpu ?? DEFAULT_CONFIG.vm_defaults.vcpus,
      memoryMib: flags.memory ?? DEFAULT_CONFIG.vm_defaults.memory_mib,
      vmRunFlags,
      command,
      nodeSocket: flags['node-socket'] ?? NODE_SOCKET,
      nodeBin: flags['node-bin'] ?? 'banger',
      pty: command.length === 0 && tty,
    };
    if (flags.partition !== undefined) spec.partition = flags.partition;
    if (flags.time !== undefined) spec.time = flags.time;
    // Absolute: the node reads the same path (shared storage), whatever srun's working directory.
    if (args.path !== undefined) spec.path = resolve(args.path);

    const mem = jobMemoryMib(spec.memoryMib);
    if (flags['dry-run']) {
      const argvOut = srunArgv(spec);
      this.say(shellQuote(argvOut));
      return {
        dry_run: true,
        op_id: spec.opId,
        job_name: jobName(spec.opId),
        cpus_per_task: spec.vcpus,
        mem_mib: mem,
        argv: argvOut,
      };
    }
    process.stderr.write(
      `slurm: submitting ${jobName(spec.opId)}: ${spec.vcpus} CPU, ${mem} MiB (${spec.memoryMib} MiB guest + ${VMM_OVERHEAD_MIB} MiB VMM)${spec.partition !== undefined ? ` in partition ${spec.partition}` : ''}; op ${spec.opId}\n`,
    );
    // The submit host's context says nothing about the node: the node's vm run gets --socket.
    const env = { ...process.env };
    delete env.BANGER_CONTEXT;
    try {
      const out = await submitJob(spec, {
        env,
        stdinIsTty: process.stdin.isTTY === true,
        onSignal: (sig, cancel) =>
          process.stderr.write(`slurm: ${sig}: canceling the job (${shellQuote(cancel)})\n`),
      });
      process.exitCode = out.code;
    } catch (e) {
      if (e instanceof SlurmSpawnError) throw usageError(e.message);
      throw e;
    }
    return undefined;
  }
}
