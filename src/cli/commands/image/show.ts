import { Args } from '@oclif/core';
import type { Image } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { imageFields } from '../../format.ts';
import { renderFields } from '../../table.ts';
import { checkResourceName } from '../../vm-ref.ts';

export default class ImageShow extends BangerCommand {
  static override summary = 'Show one image: kernel, size, files, the VMs that use it.';
  static override description =
    'Prints the image record: whether it is the default, where it came from, its kernel and version, its root filesystem file and size, the build recipe hash (built images), the reference, digest and run defaults (Env, WorkingDir, User, Entrypoint, Cmd) of OCI images, the base of derived images, the VMs created from it and its warm templates (banger image warm): spec, state size, the VMs whose disks back on it, and whether it is stale.';
  static override examples = ['<%= config.bin %> image show debian-bookworm'];
  static override args = {
    name: Args.string({ required: true, description: 'The image.' }),
  };

  async run(): Promise<Image> {
    const { args } = await this.parseWith(ImageShow);
    checkResourceName(args.name, 'image');
    const { image } = await this.client.image.show({ name: args.name });
    for (const l of renderFields(imageFields(image))) this.say(l);
    return image;
  }
}
