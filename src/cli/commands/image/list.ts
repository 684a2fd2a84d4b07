import type { Image } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes, formatRelativeTime } from '../../format.ts';
import { renderRows } from '../../table.ts';

export default class ImageList extends BangerCommand {
  static override summary = 'List images.';
  static override description = `Shows every image: whether it is the default (used by banger vm create without --image), where it came from (built here, or imported), the kernel it boots, its size and the VMs created from it. --json prints the image records as an array.`;
  static override examples = ['<%= config.bin %> image list', '<%= config.bin %> image list --json'];

  async run(): Promise<Image[]> {
    await this.parseWith(ImageList);
    const { images } = await this.client.image.list();
    if (images.length === 0) {
      this.say(`no images yet; build one with: ${this.config.bin} image build`);
      return images;
    }
    const now = Date.now();
    const lines = renderRows<Image>(
      [
        { header: 'NAME', get: (i) => (i.default ? `${i.name} *` : i.name) },
        { header: 'SOURCE', get: (i) => i.source },
        { header: 'KERNEL', get: (i) => i.kernel_version },
        { header: 'SIZE', get: (i) => formatBytes(i.size_bytes), align: 'right' },
        { header: 'VMS', get: (i) => String(i.used_by.length), align: 'right' },
        { header: 'CREATED', get: (i) => formatRelativeTime(i.created_at, now) },
      ],
      images,
    );
    for (const l of lines) this.say(l);
    this.say('(* = default image)');
    return images;
  }
}
