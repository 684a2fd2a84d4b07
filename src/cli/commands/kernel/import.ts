import { Flags } from '@oclif/core';
import type { Kernel, KernelImportParams } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkResourceName, hostFile } from '../../vm-ref.ts';

export default class KernelImport extends BangerCommand {
  static override summary = 'Import a kernel (and initramfs) you bring.';
  static override description = `Copies a kernel image (bzImage/vmlinuz) and, if it needs one, an initramfs into banger's state and records them under a name. The originals are left as they are. Relative paths are taken from the current directory. --version records the kernel release (e.g. 6.1.0-28-cloud-amd64) when you know it.`;
  static override examples = [
    '<%= config.bin %> kernel import --name my-kernel --kernel ./vmlinuz',
    '<%= config.bin %> kernel import --name cloud --kernel /boot/vmlinuz-6.1.0-28-cloud-amd64 --initrd /boot/initrd.img-6.1.0-28-cloud-amd64 --version 6.1.0-28-cloud-amd64',
  ];
  static override flags = {
    name: Flags.string({ char: 'n', required: true, summary: 'Name of the kernel.' }),
    kernel: Flags.string({
      char: 'k',
      required: true,
      summary: 'Kernel image (bzImage/vmlinuz).',
      helpValue: '<file>',
    }),
    initrd: Flags.string({ summary: 'Initramfs, if the kernel needs one.', helpValue: '<file>' }),
    version: Flags.string({ summary: 'Kernel release, if known.' }),
  };

  async run(): Promise<Kernel> {
    const { flags } = await this.parseWith(KernelImport);
    checkResourceName(flags.name, 'kernel');
    const p: KernelImportParams = { name: flags.name, kernel: hostFile(flags.kernel, '--kernel') };
    if (flags.initrd !== undefined) p.initrd = hostFile(flags.initrd, '--initrd');
    if (flags.version !== undefined) p.version = flags.version;
    const { kernel } = await this.client.kernel.import(p);
    this.say(
      `imported kernel ${kernel.name} (${kernel.version})${kernel.initrd_path ? ' with its initramfs' : ''}`,
    );
    return kernel;
  }
}
