import { Flags } from '@oclif/core';
import type { Image, ImageImportParams } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { formatBytes } from '../../format.ts';
import { checkResourceName, hostFile } from '../../vm-ref.ts';

export default class ImageImport extends BangerCommand {
  static override summary = 'Import an image you bring: a root filesystem and a kernel.';
  static override description = `Copies a raw ext4 root filesystem, a kernel (bzImage/vmlinuz) and, if the kernel needs one, an initramfs into banger's state, and records an image and a kernel of that name. The originals are left as they are. Relative paths are taken from the current directory.`;
  static override examples = [
    '<%= config.bin %> image import --name my-image --rootfs ./rootfs.ext4 --kernel ./vmlinuz',
    '<%= config.bin %> image import --name alpine --rootfs alpine.ext4 --kernel vmlinuz-virt --initrd initramfs-virt --default',
  ];
  static override flags = {
    name: Flags.string({ char: 'n', required: true, summary: 'Name of the new image (and its kernel).' }),
    rootfs: Flags.string({ required: true, summary: 'Raw ext4 root filesystem file.', helpValue: '<file>' }),
    kernel: Flags.string({
      char: 'k',
      required: true,
      summary: 'Kernel image (bzImage/vmlinuz).',
      helpValue: '<file>',
    }),
    initrd: Flags.string({ summary: 'Initramfs, if the kernel needs one.', helpValue: '<file>' }),
    default: Flags.boolean({ summary: 'Make it the default image for new VMs.' }),
  };

  async run(): Promise<Image> {
    const { flags } = await this.parseWith(ImageImport);
    checkResourceName(flags.name, 'image');
    const p: ImageImportParams = {
      name: flags.name,
      rootfs: hostFile(flags.rootfs, '--rootfs'),
      kernel: hostFile(flags.kernel, '--kernel'),
    };
    if (flags.initrd !== undefined) p.initrd = hostFile(flags.initrd, '--initrd');
    if (flags.default) p.make_default = true;
    const { image } = await this.client.image.import(p);
    this.say(
      `imported image ${image.name} (${formatBytes(image.size_bytes)}, kernel ${image.kernel_version})${image.default ? ', now the default' : ''}`,
    );
    return image;
  }
}
