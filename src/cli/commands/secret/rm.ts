import { Args } from '@oclif/core';
import type { SecretRmResult } from '../../../../generated/types.gen.ts';
import { BangerCommand } from '../../base.ts';

export default class SecretRm extends BangerCommand {
  static override summary = 'Remove a secret.';
  static override description = `Deletes the stored value. VMs created with it keep their placeholder; the egress proxy refuses their requests carrying it until the secret is set again.`;
  static override hiddenAliases = ['secret:delete'];
  static override examples = ['<%= config.bin %> secret rm API_KEY'];
  static override args = {
    name: Args.string({ required: true, description: 'The secret to remove.' }),
  };

  async run(): Promise<SecretRmResult> {
    const { args } = await this.parseWith(SecretRm);
    const r = await this.client.secret.rm({ name: args.name });
    this.say(`${r.name}: secret removed`);
    return r;
  }
}
