import { readFile } from 'node:fs/promises';
import { Args, Flags } from '@oclif/core';
import type {
  ImageBuildBeginParams,
  ImageBuildBeginResult,
  ImageBuildStatusResult,
} from '../../../../generated/types.gen.ts';
import { ErrorResponse, isErrorCode } from '../../../rpc/errors.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes, formatDuration, paint, useColor } from '../../format.ts';
import { failedStep, operationElapsed, watchOperation } from '../../progress.ts';
import { checkResourceName } from '../../vm-ref.ts';

export default class ImageBuild extends BangerCommand {
  static override summary = 'Build a Debian image on this machine, showing each step as it runs.';
  static override description = `Builds a bookworm root filesystem from Debian packages without root privileges, fetches the Debian cloud kernel (nothing is installed on the host), builds a small initramfs and records the image and its kernel. A build whose recipe did not change is reused unless --force. Progress is drawn on stderr step by step with how long each took; stdout gets only the result.

With --from IMAGE it derives an image from another one instead: its root filesystem is a qcow2 overlay on the base's (sharing its files, costing only what it adds), prepared in a short-lived VM that installs --packages with the base's own apt and runs the --run script as root. An identical derived build (same base, packages and script) is a cache hit.

The first image built becomes the default (the one banger vm create uses); --default makes this one the default anyway. Ctrl-C cancels the build (its child processes are stopped and its partial output removed) and exits 130.`;
  static override examples = [
    { description: 'Build the default image (debian-bookworm)', command: '<%= config.bin %> image build' },
    { description: 'Rebuild from scratch', command: '<%= config.bin %> image build --force' },
    {
      description: 'Build under another name and make it the default',
      command: '<%= config.bin %> image build my-bookworm --default',
    },
    {
      description: 'Derive an image from another one: packages plus a script, sharing its files',
      command:
        '<%= config.bin %> image build py --from minbase-bookworm --packages python3,make --run ./setup.sh',
    },
  ];
  static override args = {
    name: Args.string({ required: false, description: 'Image name (default debian-bookworm).' }),
  };
  static override flags = {
    force: Flags.boolean({ summary: 'Rebuild even if a build with the same recipe is cached.' }),
    default: Flags.boolean({ summary: 'Make it the default image for new VMs.' }),
    from: Flags.string({
      summary: 'Derive the image from this one (a qcow2 overlay on its root filesystem).',
      helpValue: 'IMAGE',
    }),
    packages: Flags.string({
      summary: 'With --from: packages to install with the base image’s package manager (comma-separated).',
      helpValue: 'a,b,c',
    }),
    run: Flags.string({
      summary: 'With --from: a script file run as root in the image after the packages.',
      helpValue: 'FILE',
    }),
    detach: Flags.boolean({
      char: 'd',
      summary: 'Return once the build has begun; do not wait or show progress.',
    }),
  };

  async run(): Promise<ImageBuildStatusResult | ImageBuildBeginResult> {
    const { args, flags } = await this.parseWith(ImageBuild);
    const p: ImageBuildBeginParams = {};
    if (args.name !== undefined) {
      checkResourceName(args.name, 'image');
      p.name = args.name;
    }
    if (flags.force) p.force = true;
    if (flags.default) p.make_default = true;
    if (flags.from !== undefined) {
      if (args.name === undefined) throw new ErrorResponse('bad_request', 'image build --from needs a NAME');
      checkResourceName(flags.from, 'image');
      p.from = flags.from;
      if (flags.packages !== undefined) {
        p.packages = flags.packages
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '');
      }
      if (flags.run !== undefined) {
        try {
          p.run_script = await readFile(flags.run, 'utf8');
        } catch (e) {
          throw new ErrorResponse('bad_request', `cannot read --run ${flags.run}: ${(e as Error).message}`);
        }
      }
    } else if (flags.packages !== undefined || flags.run !== undefined) {
      throw new ErrorResponse('bad_request', '--packages and --run need --from IMAGE');
    }
    const begun = await this.client.image.build.begin(p);
    const opId = begun.operation_id;
    if (flags.detach) {
      this.say(`building image ${begun.name} in the background (${opId})`);
      this.say(`check on it: ${this.config.bin} image show ${begun.name}`);
      return begun;
    }
    const watched = await watchOperation(() => this.client.image.build.status({ operation_id: opId }), {
      title: `Building image ${begun.name}`,
      cancel: () => this.client.image.build.cancel({ operation_id: opId }),
      color: useColor(process.stderr),
    });
    const { last } = watched;
    const op = last.operation;
    const took = formatDuration(operationElapsed(op, Date.now()));
    if (op.state === 'succeeded') {
      const img = last.image;
      const color = useColor(process.stdout);
      if (img) {
        this.say(
          `${paint(color, 'green', '✓')} image ${img.name} ready in ${took}: ${formatBytes(img.size_bytes)} root filesystem, kernel ${img.kernel_version}${img.default ? ', the default image' : ''}`,
        );
        this.say(
          `  create a VM from it: ${this.config.bin} vm create${img.default ? '' : ` --image ${img.name}`}`,
        );
      } else {
        this.say(`${paint(color, 'green', '✓')} image ${begun.name} built in ${took}`);
      }
      return last;
    }
    if (op.state === 'canceled') {
      throw new ErrorResponse(
        'canceled',
        `build of image ${begun.name} canceled; its partial output was removed`,
        {
          opId: op.id,
        },
      );
    }
    const step = failedStep(op);
    if (!this.jsonEnabled()) {
      const c = useColor(process.stderr);
      const d = step?.duration_ms !== undefined ? ` after ${formatDuration(step.duration_ms)}` : '';
      process.stderr.write(
        step
          ? `${paint(c, 'red', '✗')} build of image ${begun.name} failed at step ${step.name}${d}${step.detail ? `: ${step.detail}` : ''}\n`
          : `${paint(c, 'red', '✗')} build of image ${begun.name} failed\n`,
      );
      process.stderr.write(`  every daemon log line of this build carries ${op.id}\n`);
    }
    const code = op.error && isErrorCode(op.error.code) ? op.error.code : 'operation_failed';
    throw new ErrorResponse(code, op.error?.message ?? step?.detail ?? 'the build failed', { opId: op.id });
  }
}
