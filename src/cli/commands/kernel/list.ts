import type { Kernel } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatRelativeTime } from '../../format.ts';
import { renderRows } from '../../table.ts';

export default class KernelList extends BangerCommand {
  static override summary = 'List kernels.';
  static override description = `Shows every guest kernel banger has: its release, whether it was built here (with an image) or imported, whether it has an initramfs, and the images that boot it. --json prints the records as an array.`;
  static override examples = ['<%= config.bin %> kernel list', '<%= config.bin %> kernel list --json'];

  async run(): Promise<Kernel[]> {
    await this.parseWith(KernelList);
    const { kernels } = await this.client.kernel.list();
    if (kernels.length === 0) {
      this.say(
        `no kernels yet; banger image build fetches one, or import yours: ${this.config.bin} kernel import`,
      );
      return kernels;
    }
    const now = Date.now();
    const lines = renderRows<Kernel>(
      [
        { header: 'NAME', get: (k) => k.name },
        { header: 'VERSION', get: (k) => k.version },
        { header: 'SOURCE', get: (k) => k.source },
        { header: 'INITRD', get: (k) => (k.initrd_path ? 'yes' : 'no') },
        { header: 'IMAGES', get: (k) => (k.used_by.length > 0 ? k.used_by.join(',') : '-') },
        { header: 'CREATED', get: (k) => formatRelativeTime(k.created_at, now) },
      ],
      kernels,
    );
    for (const l of lines) this.say(l);
    return kernels;
  }
}
