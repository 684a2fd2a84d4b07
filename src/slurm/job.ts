// `banger slurm run`: the Slurm job that holds one sandbox. Pure: the srun argv, the command the
// node runs and the resources asked for; src/slurm/submit.ts runs it.
import { shellQuote } from '../util/shell.ts';

/**
 * What a VMM costs beyond its guest's RAM, in MiB, added to `--mem`. Measured under TCG, one idle
 * VM (docs/bench.md, "Idle cost (issue 14, 2026-12-06)"): Rss ≈ guest RAM the boot touched
 * + 128 MiB of TCG translation cache + ≈75 MiB of QEMU itself; 203 MiB, rounded up. Under KVM there
 * is no translation cache, so it over-reserves by ≈128 MiB there. The guest's RAM is bounded by
 * its memory size (QEMU -m), so guest memory + this is what the node gives the sandbox.
 */
export const VMM_OVERHEAD_MIB = 204;

/** The bangerd socket of a compute node: where `banger system install` puts it. */
export const NODE_SOCKET = '/run/banger/bangerd.sock';

/** The env var the node's `banger vm run` takes its op id from (see src/slurm/op-env.ts). */
export const OP_ID_ENV = 'BANGER_OP_ID';

export interface SlurmJobSpec {
  /** The op id minted for this sandbox: job comment, job name, and the node's vm run calls. */
  opId: string;
  vcpus: number;
  memoryMib: number;
  partition?: string;
  /** srun --time (a partition may require one). */
  time?: string;
  /** vm run flags passed on as they are (--name, --image, --disk-size, --network, …). */
  vmRunFlags: readonly string[];
  /** An absolute path that exists on the node (shared storage): the workspace. */
  path?: string;
  command: readonly string[];
  /** The node's bangerd socket (default NODE_SOCKET). */
  nodeSocket: string;
  /** The banger the node runs (default `banger`, from the job's PATH). */
  nodeBin: string;
  /** An interactive shell on a terminal: srun --pty. */
  pty: boolean;
}

/** The job's name: unique per sandbox, so `scancel --name` reaches exactly this one. */
export function jobName(opId: string): string {
  return `banger-${opId}`;
}

/** `--mem` in MiB: the guest's memory plus the VMM's measured overhead. */
export function jobMemoryMib(guestMib: number): number {
  return guestMib + VMM_OVERHEAD_MIB;
}

/** The node's command: `banger vm run --rm …` against the node's own bangerd. */
export function nodeArgv(s: SlurmJobSpec): string[] {
  const argv = [
    s.nodeBin,
    'vm',
    'run',
    '--rm',
    '--socket',
    s.nodeSocket,
    '--vcpu',
    String(s.vcpus),
    '--memory',
    String(s.memoryMib),
    ...s.vmRunFlags,
  ];
  if (s.path !== undefined) argv.push(s.path);
  if (s.command.length > 0) argv.push('--', ...s.command);
  return argv;
}

/**
 * The task: one line on stderr naming the job and node (what scancel needs), then exec of the
 * node's vm run, so Slurm's SIGTERM reaches banger itself (which deletes the VM) and not a shell.
 */
export function taskArgv(s: SlurmJobSpec): string[] {
  const say = `echo "slurm: job $SLURM_JOB_ID on $(hostname) (${s.opId}); scancel $SLURM_JOB_ID deletes the VM" >&2`;
  return ['sh', '-c', `${say}; exec ${shellQuote(nodeArgv(s))}`];
}

/** srun's argv: the VM's resources, the op id in the comment and the task's environment. */
export function srunArgv(s: SlurmJobSpec): string[] {
  const argv = [
    'srun',
    `--job-name=${jobName(s.opId)}`,
    `--comment=banger-op=${s.opId}`,
    '--ntasks=1',
    '--nodes=1',
    `--cpus-per-task=${s.vcpus}`,
    `--mem=${jobMemoryMib(s.memoryMib)}M`,
    // The node's vm run mints no op id of its own: every call it makes carries this one.
    `--export=ALL,${OP_ID_ENV}=${s.opId}`,
  ];
  if (s.partition !== undefined) argv.push(`--partition=${s.partition}`);
  if (s.time !== undefined) argv.push(`--time=${s.time}`);
  if (s.pty) argv.push('--pty');
  argv.push(...taskArgv(s));
  return argv;
}
