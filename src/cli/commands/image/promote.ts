import { Args } from '@oclif/core';
import type { Image } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkResourceName } from '../../vm-ref.ts';

export default class ImagePromote extends BangerCommand {
  static override summary = 'Make an image the default for new VMs.';
  static override description =
    'banger vm create uses the default image when no --image is given. Existing VMs keep the image they were created from.';
  static override examples = ['<%= config.bin %> image promote my-image'];
  static override args = {
    name: Args.string({ required: true, description: 'The image.' }),
  };

  async run(): Promise<Image> {
    const { args } = await this.parseWith(ImagePromote);
    checkResourceName(args.name, 'image');
    const { image } = await this.client.image.promote({ name: args.name });
    this.say(`${image.name} is now the default image`);
    return image;
  }
}
