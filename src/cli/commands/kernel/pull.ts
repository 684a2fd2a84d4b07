import { Args, Flags } from '@oclif/core';
import type { KernelPullFrame, KernelPullParams, KernelPullResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatDuration, paint, useColor } from '../../format.ts';
import { untilInterrupted } from '../../interruptible.ts';
import { checkResourceName } from '../../vm-ref.ts';

export default class KernelPull extends BangerCommand {
  static override summary = 'Fetch a kernel from the Debian archive, showing each step.';
  static override description = `Fetches one kernel of banger kernel catalog the way banger image build fetches its own: downloads the package into banger's cache, checks its SHA-256 against the archive's index, unpacks it (nothing is installed on the host), builds banger's small initramfs for it and records it as a kernel (kernel list, kernel show). KERNEL is a catalog name (the release, e.g. 6.1.0-28-cloud-amd64), the package name, or one of its aliases from the catalog (cloud-amd64 is the newest cloud kernel, 6.12-cloud-amd64 the newest of the 6.12 series). The kernel is named after its release (a + becomes -) unless --name. Progress goes to stderr; stdout gets only the result. Ctrl-C cancels the pull (its partial files are removed) and exits 130.`;
  static override examples = [
    { description: 'The newest cloud kernel', command: '<%= config.bin %> kernel pull cloud-amd64' },
    {
      description: 'One release, under a name of your own',
      command: '<%= config.bin %> kernel pull 6.1.0-28-amd64 --name full-6.1',
    },
    {
      description: 'Replace a kernel no image uses',
      command: '<%= config.bin %> kernel pull cloud-amd64 --force',
    },
  ];
  static override args = {
    kernel: Args.string({
      required: true,
      description: 'Catalog name (kernel release), package name, or alias such as cloud-amd64.',
    }),
  };
  static override flags = {
    name: Flags.string({ char: 'n', summary: 'Name of the kernel in banger (default: its release).' }),
    force: Flags.boolean({ summary: 'Replace a kernel of that name that no image uses.' }),
  };

  async run(): Promise<KernelPullResult | undefined> {
    const { args, flags } = await this.parseWith(KernelPull);
    const p: KernelPullParams = { name: args.kernel };
    if (flags.name !== undefined) {
      checkResourceName(flags.name, 'kernel');
      p.as = flags.name;
    }
    if (flags.force) p.force = true;
    const color = useColor(process.stderr);
    const quiet = this.jsonEnabled();
    return untilInterrupted(
      async (signal) => {
        const r = await this.client.kernel.pull(p, {
          signal,
          onFrame: (frame) => {
            if (!quiet) process.stderr.write(`${formatFrame(frame as KernelPullFrame, color)}\n`);
          },
        });
        const k = r.kernel;
        this.say(
          `${paint(useColor(process.stdout), 'green', '✓')} kernel ${k.name} (${k.version}) from ${r.package} ${r.version}${r.cached ? ', package from the cache' : ''}`,
        );
        this.say(`  files: ${k.kernel_path}${k.initrd_path ? `, ${k.initrd_path}` : ''}`);
        return r;
      },
      () => process.stderr.write('kernel pull canceled; its partial files were removed\n'),
    );
  }
}

/** One progress line: `→ step: detail` when a step starts, `✓ step (1.2s): detail` when it ends. */
export function formatFrame(f: KernelPullFrame, color: boolean): string {
  const detail = f.detail ? `: ${f.detail}` : '';
  if (f.phase === 'done') {
    const took = f.duration_ms !== undefined ? ` (${formatDuration(f.duration_ms)})` : '';
    return `${paint(color, 'green', '✓')} ${f.step}${took}${detail}`;
  }
  if (f.phase === 'start') return `${paint(color, 'dim', '→')} ${f.step}${detail}`;
  return `  ${f.step}${detail}`;
}
