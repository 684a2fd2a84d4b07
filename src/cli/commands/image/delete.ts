import { Args } from '@oclif/core';
import type { ImageDeleteResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';
import { checkResourceName, fanOutCommand, namesFrom, type FanOutResult } from '../../vm-ref.ts';

export default class ImageDelete extends BangerCommand {
  static override summary = 'Delete an image no VM uses.';
  static override description = `Removes the image's root filesystem and record. An image VMs were created from cannot be deleted (conflict): delete those VMs first (banger image show NAME lists them). Its kernel is kept; remove it with banger kernel delete. Several images are deleted at once; the exit code is non-zero if any failed.`;
  static override hiddenAliases = ['image:rm'];
  static override examples = ['<%= config.bin %> image delete my-image'];
  static override args = {
    name: Args.string({ required: true, multiple: true, description: 'Images to delete.' }),
  };

  async run(): Promise<FanOutResult<ImageDeleteResult>[]> {
    const { argv } = await this.parseWith(ImageDelete);
    return fanOutCommand(
      { say: (l) => this.say(l), json: this.jsonEnabled() },
      namesFrom(argv),
      (name) => {
        checkResourceName(name, 'image');
        return this.client.image.delete({ name });
      },
      (r) => `${r.name}: image deleted (its kernel was kept)`,
    );
  }
}
