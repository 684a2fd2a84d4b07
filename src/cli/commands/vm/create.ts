import { Flags } from '@oclif/core';
import type {
  VmCreateBeginParams,
  VmCreatePlanParams,
  VmCreateBeginResult,
  VmCreateStatusResult,
} from '../../../../generated/types.gen.ts';
import { ErrorResponse, isErrorCode } from '../../../rpc/errors.ts';
import { BangerCommand } from '../../base.ts';
import { EGRESS_DESCRIPTION, EGRESS_SUMMARY, egressFlag, secretFlag } from '../../egress-flag.ts';
import { idlePauseAfterFlag } from '../../idle-flag.ts';
import {
  formatBoot,
  warmFallback,
  formatDuration,
  formatVmNetwork,
  formatVmSpec,
  normalizeSize,
  paint,
  parseMemoryMiB,
  useColor,
} from '../../format.ts';
import { failedCreateHint, failedStep, operationElapsed, watchOperation } from '../../progress.ts';
import { checkResourceName, checkVmName, flagError } from '../../vm-ref.ts';

/** The flags of the VM's spec that vm create and vm run share. */
export interface SpecFlags {
  name?: string | undefined;
  image?: string | undefined;
  vcpu?: number | undefined;
  memory?: number | undefined;
  'disk-size'?: string | undefined;
  network?: 'user' | 'bridge' | undefined;
  nat?: boolean | undefined;
  egress?: string | undefined;
  secret?: string[] | undefined;
  'idle-pause-after'?: string | undefined;
}

/** Those flags as vm.create's spec params (vm.create.begin and vm.create.plan take the same). */
export function specParams(flags: SpecFlags): VmCreatePlanParams {
  const params: VmCreatePlanParams = {};
  if (flags.name !== undefined) params.name = flags.name;
  if (flags.image !== undefined) params.image = flags.image;
  if (flags.vcpu !== undefined) params.vcpus = flags.vcpu;
  if (flags.memory !== undefined) params.memory_mib = flags.memory;
  if (flags['disk-size'] !== undefined) params.disk_size = flags['disk-size'];
  if (flags.network !== undefined) params.network = flags.network;
  if (flags.nat) params.nat = true;
  if (flags.egress !== undefined) params.egress = flags.egress;
  if (flags.secret !== undefined && flags.secret.length > 0) params.secrets = flags.secret;
  if (flags['idle-pause-after'] !== undefined) params.idle_pause_after = flags['idle-pause-after'];
  return params;
}

export const MEMORY_MIN_MIB = 128;
export const MEMORY_MAX_MIB = 262144;

/** --memory: MiB, or a size with a unit; range-checked like the daemon does. */
/** A size flag (4G, 512M), normalized; a bad value is a usage error naming the flag. */
export const diskSizeFlag = Flags.custom<string>({
  helpValue: '<size>',
  parse: async (input) => {
    const s = normalizeSize(input);
    if (s === undefined) throw flagError(`"${input}" is not a size: use a number with K, M, G or T, e.g. 4G`);
    return s;
  },
});

export const memoryFlag = Flags.custom<number>({
  helpValue: '<MiB|size>',
  parse: async (input) => {
    let mib: number;
    try {
      mib = parseMemoryMiB(input);
    } catch (err) {
      throw flagError((err as Error).message);
    }
    if (mib < MEMORY_MIN_MIB || mib > MEMORY_MAX_MIB) {
      throw flagError(`memory must be between ${MEMORY_MIN_MIB} MiB and ${MEMORY_MAX_MIB} MiB (256 GiB)`);
    }
    return mib;
  },
});

export type VmCreateOutput = VmCreateStatusResult | VmCreateBeginResult;

export default class VmCreate extends BangerCommand {
  static override summary = 'Create a VM and start it, showing each step as it runs.';
  static override description = `Creates a VM from an image (the default image unless --image) with its own copy-on-write disk, SSH key and network, boots it and waits until SSH answers. Progress is drawn on stderr step by step (prepare_disk, boot, wait_ssh, ...) with how long each took; stdout gets only the result.

Ctrl-C while it runs cancels the create: the daemon undoes every step it completed (VMM stopped, disk removed, network released, record deleted) and banger exits 130. With --detach the command returns at once and the create goes on in the daemon.

If a step fails, banger names it and prints its detail. The failed create is undone, VM included, so the console of that boot is read with banger op trace OP-ID (the op id at the end of the error, which is also on every daemon log line of the create).`;
  static override examples = [
    {
      description: 'Create a VM with a random name from the default image',
      command: '<%= config.bin %> vm create',
    },
    {
      description: 'A bigger VM with a chosen name',
      command: '<%= config.bin %> vm create --name dev --vcpu 4 --memory 4G --disk-size 20G',
    },
    {
      description: 'Record it without booting it',
      command: '<%= config.bin %> vm create --name later --no-start',
    },
    {
      description: 'Return at once; check on it later',
      command: '<%= config.bin %> vm create --name bg -d && <%= config.bin %> vm show bg',
    },
  ];

  static override allowAutoContext = true;
  static override flags = {
    name: Flags.string({
      char: 'n',
      summary: 'Name of the VM (default: a random friendly name).',
      description: 'Lower-case letters, digits and dashes, starting with a letter or digit, at most 64.',
    }),
    image: Flags.string({ char: 'i', summary: 'Image to create it from (default: the default image).' }),
    vcpu: Flags.integer({ min: 1, max: 64, summary: 'Virtual CPUs (default from config, 2).' }),
    memory: memoryFlag({
      char: 'm',
      summary: 'Memory: MiB (2048) or a size with a unit (2G) (default from config, 1024 MiB).',
    }),
    'disk-size': diskSizeFlag({
      summary: "Root disk size, e.g. 4G or 20G (default from config, 4G); at least the image's size.",
    }),
    network: Flags.option({
      options: ['user', 'bridge'] as const,
      summary:
        'user: rootless, SSH forwarded from 127.0.0.1; bridge: a tap on banger’s bridge (needs the root helper).',
      description: 'Default: bridge when the root helper is reachable, else user.',
    })(),
    nat: Flags.boolean({ summary: 'Give the guest outbound internet through NAT (bridge mode).' }),
    egress: egressFlag({ summary: EGRESS_SUMMARY, description: EGRESS_DESCRIPTION }),
    secret: secretFlag,
    'idle-pause-after': idlePauseAfterFlag,
    cold: Flags.boolean({
      summary: 'Boot cold even when a warm template of this spec exists.',
      description:
        'By default a VM whose spec matches a warm template (banger image warm) is restored from it.',
    }),
    start: Flags.boolean({
      allowNo: true,
      summary: 'Start the VM once created (--no-start records it stopped).',
    }),
    detach: Flags.boolean({
      char: 'd',
      summary: 'Return once the create has begun; do not wait or show progress.',
    }),
  };

  async run(): Promise<VmCreateOutput> {
    const { flags } = await this.parseWith(VmCreate);
    // --context auto: the context with the most free capacity, said on stderr.
    await this.resolveAutoContext();
    if (flags.name !== undefined) checkVmName(flags.name);
    if (flags.image !== undefined) checkResourceName(flags.image, 'image');
    const params: VmCreateBeginParams = specParams(flags);
    if (flags.start === false) params.start = false;
    if (flags.cold) params.cold = true;

    const begun = await this.client.vm.create.begin(params);
    const name = begun.name;
    const opId = begun.operation_id;
    if (flags.detach) {
      this.say(`creating ${name} in the background (${opId})`);
      this.say(`check on it: ${this.config.bin} vm show ${name}`);
      return begun;
    }

    const watched = await watchOperation(() => this.client.vm.create.status({ operation_id: opId }), {
      title: `Creating ${name}`,
      cancel: () => this.client.vm.create.cancel({ operation_id: opId }),
      color: useColor(process.stderr),
    });
    const { last } = watched;
    const op = last.operation;
    const color = useColor(process.stdout);
    const took = formatDuration(operationElapsed(op, Date.now()));

    if (op.state === 'succeeded') {
      const vm = last.vm;
      if (watched.interrupted)
        this.warnLine(`the create finished before the cancel took effect; ${name} exists`);
      if (!vm) {
        this.say(`${paint(color, 'green', '✓')} created ${name} in ${took}`);
      } else if (vm.state === 'running') {
        // Said even with --json (stderr is for people): the create took the slow path.
        const fallback = warmFallback(op);
        if (fallback) process.stderr.write(`${paint(useColor(process.stderr), 'yellow', '!')} ${fallback}\n`);
        this.say(
          `${paint(color, 'green', '✓')} ${vm.name} is running (${formatVmSpec(vm)}, ${formatVmNetwork(vm)}), created in ${took} (${formatBoot(vm)})`,
        );
        this.say(`  connect: ${this.config.bin} vm ssh ${vm.name}`);
      } else {
        this.say(
          `${paint(color, 'green', '✓')} created ${vm.name} (${vm.state}, ${formatVmSpec(vm)}) in ${took}`,
        );
        this.say(`  start it: ${this.config.bin} vm start ${vm.name}`);
      }
      return last;
    }

    if (op.state === 'canceled') {
      const why = watched.interrupted ? '' : ` (${op.error?.message ?? 'not by this command'})`;
      throw new ErrorResponse('canceled', `create of ${name} canceled${why}; what it had done was undone`, {
        opId: op.id,
      });
    }

    // failed
    const step = failedStep(op);
    const message = op.error?.message ?? step?.detail ?? 'the create failed';
    if (!this.jsonEnabled()) {
      const err = useColor(process.stderr);
      if (step) {
        const d = step.duration_ms !== undefined ? ` after ${formatDuration(step.duration_ms)}` : '';
        process.stderr.write(
          `${paint(err, 'red', '✗')} create of ${name} failed at step ${step.name}${d}${step.detail ? `: ${step.detail}` : ''}\n`,
        );
      } else {
        process.stderr.write(`${paint(err, 'red', '✗')} create of ${name} failed\n`);
      }
      process.stderr.write(`${failedCreateHint(this.config.bin, op.id, last.vm?.name)}\n`);
    }
    const code = op.error && isErrorCode(op.error.code) ? op.error.code : 'operation_failed';
    throw new ErrorResponse(code, message, { opId: op.id });
  }

  private warnLine(line: string): void {
    if (!this.jsonEnabled()) process.stderr.write(`${line}\n`);
  }
}
