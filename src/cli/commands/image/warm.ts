import { Args, Flags } from '@oclif/core';
import type {
  ImageWarmBeginParams,
  ImageWarmBeginResult,
  ImageWarmStatusResult,
} from '../../../../generated/types.gen.ts';
import { ErrorResponse, isErrorCode } from '../../../rpc/errors.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes, formatDuration, paint, useColor } from '../../format.ts';
import { failedStep, operationElapsed, watchOperation } from '../../progress.ts';
import { checkResourceName } from '../../vm-ref.ts';
import { diskSizeFlag, memoryFlag } from '../vm/create.ts';

export default class ImageWarm extends BangerCommand {
  static override summary =
    'Make a warm template of an image: later VMs of that spec start in about a second.';
  static override description = `Boots a VM of the spec from the image once, waits until it is ready and its boot has settled, pauses it and saves its memory and device state with its disk of that moment, beside the image. From then on, banger vm create and banger vm run with the same spec (image, vCPUs, memory, disk size, network mode) restore a clone of it instead of booting: each clone gets its own disk, machine-id, SSH host key, hostname, clock and entropy (and, bridged, address) before anything can reach it. --cold on those commands boots cold anyway.

A template is keyed by the image and kernel files, the spec, the QEMU version and the accelerator; when any of them changes it is stale, never used again, and removed once no VM's disk backs on it. Running this again for a current template returns at once; --force rebuilds it (refused while VMs back on it). banger image show NAME lists an image's templates.

Limits: clones share the template's boot id, and their memory is not shared between them (each restored VM holds its own copy). Ctrl-C stops watching; the template build goes on in the daemon.`;
  static override examples = [
    { description: 'Warm the default image for the default spec', command: '<%= config.bin %> image warm' },
    {
      description: 'Warm it for 4 vCPUs and 4 GiB, then start a VM from it',
      command:
        '<%= config.bin %> image warm --vcpu 4 --memory 4G && <%= config.bin %> vm create --vcpu 4 --memory 4G',
    },
  ];
  static override args = {
    name: Args.string({ required: false, description: 'Image (default: the default image).' }),
  };
  static override flags = {
    vcpu: Flags.integer({ min: 1, max: 64, summary: 'Virtual CPUs (default from config).' }),
    memory: memoryFlag({
      char: 'm',
      summary: 'Memory: MiB (2048) or a size with a unit (2G) (default from config).',
    }),
    'disk-size': diskSizeFlag({ summary: 'Root disk size, e.g. 4G (default from config).' }),
    network: Flags.option({
      options: ['user', 'bridge'] as const,
      summary: 'Network mode of the VMs it is for (default: as banger vm create would choose).',
    })(),
    force: Flags.boolean({ summary: 'Rebuild the template even if a current one exists.' }),
    detach: Flags.boolean({ char: 'd', summary: 'Return once the build has begun.' }),
  };

  async run(): Promise<ImageWarmStatusResult | ImageWarmBeginResult> {
    const { args, flags } = await this.parseWith(ImageWarm);
    const p: ImageWarmBeginParams = {};
    if (args.name !== undefined) {
      checkResourceName(args.name, 'image');
      p.name = args.name;
    }
    if (flags.vcpu !== undefined) p.vcpus = flags.vcpu;
    if (flags.memory !== undefined) p.memory_mib = flags.memory;
    if (flags['disk-size'] !== undefined) p.disk_size = flags['disk-size'];
    if (flags.network !== undefined) p.network = flags.network;
    if (flags.force) p.force = true;
    const begun = await this.client.image.warm.begin(p);
    const opId = begun.operation_id;
    if (flags.detach) {
      this.say(`warming image ${begun.name} in the background (${opId})`);
      this.say(`check on it: ${this.config.bin} image show ${begun.name}`);
      return begun;
    }
    const { last } = await watchOperation(() => this.client.image.warm.status({ operation_id: opId }), {
      title: `Warming image ${begun.name}`,
      color: useColor(process.stderr),
    });
    const op = last.operation;
    const took = formatDuration(operationElapsed(op, Date.now()));
    if (op.state === 'succeeded') {
      const color = useColor(process.stdout);
      const t = last.template;
      if (t) {
        this.say(
          `${paint(color, 'green', '✓')} warm template ${t.id} of ${t.image} ready in ${took}: ${t.vcpus} vCPU, ${t.memory_mib} MiB, ${formatBytes(t.disk_size_bytes)} disk, ${t.network} network; state ${formatBytes(t.state_bytes)} saved in ${formatDuration(t.save_ms)}`,
        );
        this.say(`  VMs of this spec now start from it: ${this.config.bin} vm create`);
      } else {
        this.say(`${paint(color, 'green', '✓')} image ${begun.name} warmed in ${took}`);
      }
      return last;
    }
    const step = failedStep(op);
    if (!this.jsonEnabled()) {
      const c = useColor(process.stderr);
      process.stderr.write(
        `${paint(c, 'red', '✗')} warming image ${begun.name} failed${step ? ` at step ${step.name}: ${step.detail ?? ''}` : ''}\n`,
      );
      process.stderr.write(`  the whole story: ${this.config.bin} op trace ${op.id}\n`);
    }
    const code = op.error && isErrorCode(op.error.code) ? op.error.code : 'operation_failed';
    throw new ErrorResponse(code, op.error?.message ?? step?.detail ?? 'warming failed', { opId: op.id });
  }
}
